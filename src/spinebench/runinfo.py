"""What every run writes beside its numbers: the environment (packages, hardware, commit)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from spinebench import __version__
from spinebench.atomic import write_json  # noqa: F401 - the adapters write their files with it
from spinebench.data.source import DatasetSpec

PACKAGES = (
    "torch",
    "torchvision",
    "ultralytics-opencv-headless",
    "ultralytics",
    "segmentation-models-pytorch",
    "timm",
    "monai",
    "hydra-core",
    "faster-coco-eval",
    "pycocotools",
    "segment-anything",
    "numpy",
)


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """Commit of the checkout the code runs from, and whether its code had uncommitted changes. A copy of the tree
    without git (e.g. the lent GPU machine) names its commit in SPINEBENCH_GIT_COMMIT; its dirtiness is unknown."""
    cwd = cwd or Path(__file__).resolve().parent
    if os.environ.get("SPINEBENCH_GIT_COMMIT"):
        return {"commit": os.environ["SPINEBENCH_GIT_COMMIT"], "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        # results/ is written by the reports themselves: a report committed there is not a change to the code
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform knows): two machines with as many threads
    must not share a hardware label, since the report's FPS_best is taken per label."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"


def device_name(device: torch.device | str) -> str:
    """'NVIDIA H200' / 'cpu (AMD EPYC, x86_64, 2 threads)': the hardware label of a result."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {platform.machine()}, {torch.get_num_threads()} threads)"


def collect_env(spec: DatasetSpec | None, device: torch.device | str) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env = {
        "spinebench": __version__,
        "python": sys.version.split()[0],
        "packages": versions,
        "device": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "git": git_commit(),
        "command": sys.argv,
    }
    if spec is not None:
        env["data"] = spec.describe()
    return env


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
