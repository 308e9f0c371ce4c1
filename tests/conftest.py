"""Shared fixtures: everything runs on the CPU, offline, with caches inside pytest's tmp folders."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
# `auto` weights look in the torch hub cache, the Hugging Face cache and $SPINEBENCH_WEIGHTS: the tests must not
# find a file of the user's there (the smoke runs check `pretrained: false`), so they point nowhere in the session
for variable in ("TORCH_HOME", "HF_HUB_CACHE"):
    os.environ[variable] = tempfile.mkdtemp(prefix=f"spinebench-tests-{variable.lower()}-")
    atexit.register(shutil.rmtree, os.environ[variable], True)
os.environ.pop("SPINEBENCH_WEIGHTS", None)

# spinebench is imported after the variables above are set: the hubs read them when first imported
from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH  # noqa: E402
from spinebench.data.segmentation import encode_mask  # noqa: E402

from helpers.files import voc_xml, write_png  # noqa: E402

# Measured 2026-11-27: one full session leaves 4.5 GB of smoke-run checkpoints in its tmp folder.
SUITE_DISK_BYTES = 5 * 1024**3


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, in one line, when the tmp folder cannot hold the smoke runs (not 80% in with ENOSPC)."""
    where = session.config.option.basetemp or tempfile.gettempdir()
    while not os.path.exists(where):
        where = os.path.dirname(os.path.abspath(where))
    free = shutil.disk_usage(where).free
    if free < SUITE_DISK_BYTES:
        pytest.exit(
            f"the test suite needs {SUITE_DISK_BYTES / 1024**3:.0f} GiB free under {where} "
            f"for its smoke runs' checkpoints; {free / 1024**3:.1f} GiB is free",
            returncode=4,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need a CUDA device: skipped without one. scripts/gpu_check.sh selects them with -m gpu,
    so a lent GPU's few minutes go to them (the rest of the suite runs in CI on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """One cache for the whole session so each tiny phantom is generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def bf16_autocast_on_cpu(monkeypatch):
    """spinebench's autocast_for turned on for the CPU: bf16 autocast wherever a GPU run would have it (spinebench
    turns it on only on CUDA), so that the tests see which passes a GPU would run in bf16. Patched where the engine
    and the tasks look it up; precision_label reads it from the engine's loop, so the labels follow."""
    import contextlib

    import torch

    import spinebench.engine
    from spinebench.detection import torchvision_benchmark
    from spinebench.engine import loop

    def cpu_bf16(device, enabled=True):
        return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    for module in (loop, spinebench.engine, torchvision_benchmark):  # evaluate_split imports it when it runs
        monkeypatch.setattr(module, "autocast_for", cpu_bf16)


@pytest.fixture
def detection_release(tmp_path):
    """train/valid/test with 3 images each: one injured (one box), one negative without XML, one with an empty XML."""
    root = tmp_path / "det"
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for index, kind in enumerate(("post", "pre", "pre")):
            name = f"{split}_{kind}_{index}"
            write_png(root / split / f"{name}.png", rng.integers(0, 255, (IMAGE_HEIGHT, IMAGE_WIDTH)))
            if index == 0:
                (root / split / f"{name}.xml").write_text(voc_xml(f"{name}.png", [(100.5, 60.2, 220.7, 130.1)]))
            elif index == 2:
                (root / split / f"{name}.xml").write_text(voc_xml(f"{name}.png", []))
    return root


@pytest.fixture
def segmentation_release(tmp_path):
    """train/val/test with 2 image/mask pairs each; masks are horizontal bands of classes 0-9."""
    root = tmp_path / "seg"
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), -(-IMAGE_HEIGHT // 10))[:IMAGE_HEIGHT, None].repeat(
        IMAGE_WIDTH, 1
    )
    for split in ("train", "val", "test"):
        for index in range(2):
            name = f"{split}_{index}.png"
            write_png(root / f"{split}_images" / name, rng.integers(0, 255, (IMAGE_HEIGHT, IMAGE_WIDTH)))
            write_png(root / f"{split}_masks" / name, encode_mask(labels))
    return root
