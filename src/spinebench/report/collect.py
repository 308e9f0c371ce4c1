"""Find finished runs: a run counts only when its `metrics.json` exists (mmdetection's gather_models rule).

A folder that looks like a run (it has `config.yaml`, `env.json` or `checkpoints/`) but no `metrics.json` is
half-finished (still training, killed, crashed): it is skipped with a note, never reported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinebench.runinfo import METRICS_FILE

log = logging.getLogger(__name__)

RUN_MARKERS = ("config.yaml", "env.json", "checkpoints")
SKIP_DIRS = {"checkpoints", "predictions", "overlays", ".hydra", "__pycache__", ".git", ".venv", "plots"}


@dataclass
class Run:
    """One finished run: its folder and what it wrote."""

    path: Path
    metrics: dict[str, Any]  # the whole metrics.json
    env: dict[str, Any] = field(default_factory=dict)
    # filled by the report: bootstrap intervals per metric key, our implantability score per processor
    intervals: dict[str, Any] = field(default_factory=dict)
    implantability: dict[str, float | None] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.metrics.get("task", "")

    @property
    def model(self) -> str:
        """Manuscript row key (e.g. yolov8m)."""
        return self.metrics.get("model", "")

    @property
    def model_name(self) -> str:
        return self.metrics.get("model_name") or self.model

    @property
    def values(self) -> dict[str, Any]:
        return self.metrics.get("metrics") or {}

    @property
    def data(self) -> dict[str, Any]:
        """metrics.json's data block over env.json's, which adds the provenance (root, verified and why not)."""
        return {**(self.env.get("data") or {}), **(self.metrics.get("data") or {})}

    @property
    def data_root(self) -> Path | None:
        """The dataset folder (env.json's data block carries it)."""
        root = self.data.get("root")
        return Path(root) if root else None

    @property
    def trained_on_phantom(self) -> bool:
        """An evaluation (spinebench-eval) of a checkpoint trained on a phantom: its scores are the phantom's too,
        whatever data it was scored on."""
        return (self.metrics.get("trained_on") or {}).get("kind") == "phantom"

    @property
    def data_kind(self) -> str:
        kind = self.data.get("kind") or "unknown"
        return f"{kind}, model trained on a phantom" if self.trained_on_phantom and kind != "phantom" else kind

    @property
    def is_phantom(self) -> bool:
        return self.data.get("kind") == "phantom" or self.trained_on_phantom

    @property
    def domain(self) -> str:
        """'human' for a human-domain set (the zero-shot side of the segmentation table), else 'porcine'."""
        data = self.data
        stamp = data.get("stamp") or {}
        domain = stamp.get("domain") or data.get("domain")
        if domain:
            return str(domain)
        return "human" if "human" in str(data.get("name", "")).lower() else "porcine"

    @property
    def data_group(self) -> str:
        """The data source a table row belongs to: the dataset's name and kind (e.g. 'seg_phantom (phantom)')."""
        return f"{self.data.get('name', '?')} ({self.data_kind})"

    @property
    def data_label(self) -> str:
        if self.data.get("label"):
            label = str(self.data["label"])
        else:
            label = "PHANTOM - synthetic, not the Kumar et al. release" if self.is_phantom else f"{self.data_kind} data"
        if self.trained_on_phantom and self.data.get("kind") != "phantom":
            label += "; the model was trained on a PHANTOM"
        return label

    @property
    def is_zero_shot(self) -> bool:
        """An evaluation of another run's checkpoint (`checkpoint_run` set) or a human-domain evaluation."""
        return bool(self.metrics.get("checkpoint_run")) or self.domain == "human"

    @property
    def speeds(self) -> dict[str, dict[str, Any]]:
        """Batch-1 speed per processor measured: {"cpu"|"gpu": {"fps", "load" (0-1), "hardware"}}.

        From metrics.json's optional `speed` block ({"cpu": {"fps", "load", "device"}, "gpu": {...}}) when a run
        measured both, else from `fps_batch1` + `load[<processor of device>]` (the documented fields).
        """
        block = self.metrics.get("speed")
        if isinstance(block, dict) and any(isinstance(block.get(p), dict) for p in ("cpu", "gpu")):
            return {p: {"fps": block[p].get("fps"), "load": block[p].get("load"),
                        "hardware": block[p].get("device") or block[p].get("hardware") or self.hardware}
                    for p in ("cpu", "gpu") if isinstance(block.get(p), dict)}
        load = self.metrics.get("load")
        value = load.get(self.processor) if isinstance(load, dict) else load
        if self.metrics.get("fps_batch1") is None:
            return {}
        return {self.processor: {"fps": self.metrics.get("fps_batch1"), "load": value, "hardware": self.hardware}}

    @property
    def speed(self) -> dict[str, Any]:
        """{"fps", "load"} on the processor the run ran on (None when not measured)."""
        return self.speeds.get(self.processor) or {"fps": None, "load": None, "hardware": self.hardware}

    @property
    def hardware(self) -> str:
        return str(self.metrics.get("device") or self.env.get("device") or "unknown")

    @property
    def processor(self) -> str:
        """'gpu' or 'cpu': which implantability column the run's speed belongs to."""
        hw = self.hardware.lower()
        return "cpu" if hw.startswith("cpu") or hw == "unknown" else "gpu"

    @property
    def commit(self) -> str:
        git = self.env.get("git") or {}
        commit = git.get("commit")
        if not commit:
            return "unknown"
        return commit[:12] + ("-dirty" if git.get("dirty") else "")

    @property
    def config(self) -> str:
        return str(self.metrics.get("config") or "")

    @property
    def finished_at(self) -> float:
        return (self.path / METRICS_FILE).stat().st_mtime

    def file(self, name: str) -> Path:
        return self.path / name


def pick(runs: Sequence[Run], model: str) -> tuple[Run | None, int]:
    """The run a manuscript row shows, and how many others it has: one made with the row's own model config
    before a variant filed under the row (unet_light, deeplabv3_light), then the most recently finished."""
    matching = [r for r in runs if r.model == model]
    if not matching:
        return None, 0
    return max(matching, key=lambda r: (r.model_name == model, r.finished_at)), len(matching) - 1


@dataclass
class Collection:
    runs: list[Run]
    notes: list[str]  # one line per skipped folder, with the reason

    def by_task(self, task: str) -> list[Run]:
        return [r for r in self.runs if r.task == task]


def _read_json(path: Path) -> dict[str, Any]:
    with path.open() as f:
        payload = json.load(f)
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload


def _load_run(folder: Path, notes: list[str]) -> Run | None:
    try:
        metrics = _read_json(folder / METRICS_FILE)
    except (OSError, ValueError) as exc:
        notes.append(f"{folder}: skipped, unreadable {METRICS_FILE} ({exc})")
        return None
    problem = _malformed(metrics)
    if problem:  # one bad file is a note naming its run, not a report that stops
        notes.append(f"{folder}: skipped, {METRICS_FILE} {problem}")
        return None
    env: dict[str, Any] = {}
    if (folder / "env.json").is_file():
        try:
            env = _read_json(folder / "env.json")
        except (OSError, ValueError) as exc:
            notes.append(f"{folder}: env.json unreadable ({exc}); hardware/commit taken from metrics.json only")
    return Run(path=folder.resolve(), metrics=metrics, env=env)


def _malformed(metrics: dict[str, Any]) -> str | None:
    """What makes a metrics.json unusable for the report (None: usable), checked the way the report reads it."""
    for key in ("task", "model", "metrics"):
        if key not in metrics:
            return f"has no '{key}'"
    if not isinstance(metrics["metrics"], dict):
        return "has a 'metrics' that is not an object"
    for processor, speed in Run(path=Path(), metrics=metrics).speeds.items():
        fps, load = speed.get("fps"), speed.get("load")
        if fps is not None and (not isinstance(fps, (int, float)) or fps < 0):
            return f"has a {processor} FPS that is not a non-negative number ({fps!r})"
        if load is not None and (not isinstance(load, (int, float)) or not 0 <= load <= 1):
            return f"has a {processor} load that is not a fraction in [0, 1] ({load!r}; a percentage?)"
    return None


def collect_runs(paths: list[str | Path]) -> Collection:
    """Walk `paths` (run folders or folders of runs) and return the finished runs, sorted by task, model, path."""
    runs: dict[Path, Run] = {}
    notes: list[str] = []
    for given in paths:
        given = Path(given)
        if given.is_file() and given.name == METRICS_FILE:
            given = given.parent
        if not given.is_dir():
            notes.append(f"{given}: skipped, no such folder")
            continue
        for dirpath, dirnames, filenames in os.walk(given):
            folder = Path(dirpath)
            entries = set(filenames) | set(dirnames)
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            if METRICS_FILE in filenames:
                run = _load_run(folder, notes)
                if run is not None:
                    runs.setdefault(run.path, run)
            elif any(m in entries for m in RUN_MARKERS) and folder.name not in SKIP_DIRS:
                notes.append(f"{folder}: skipped, unfinished run (no {METRICS_FILE})")
    for note in notes:
        log.info(note)
    ordered = sorted(runs.values(), key=lambda r: (r.task, r.model, str(r.path)))
    return Collection(runs=ordered, notes=notes)
