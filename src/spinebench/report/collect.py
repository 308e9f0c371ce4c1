"""Find finished runs: a run counts only when its `metrics.json` exists (mmdetection's gather_models rule).

A folder that looks like a run (it has `config.yaml`, `env.json`, `checkpoints/`, or Hydra's `.hydra/` beside a
`*.log`) but no `metrics.json` is half-finished (still training, killed, crashed): it is never reported as a
result, but it is kept as `Unfinished` (with the row and data its config names, and the error its log ends
with) so a table row can say "unfinished" or "failed" rather than "not run".
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from spinebench.runinfo import METRICS_FILE

log = logging.getLogger(__name__)

RUN_MARKERS = ("config.yaml", "env.json", "checkpoints")  # or ".hydra" beside a *.log (`_looks_like_a_run`)
LOG_TAIL_BYTES = 64_000  # how much of a run's log is read for its last error
RUN_START = "][spinebench][INFO] - run "  # the line each start of a run logs (pipeline._start_run)
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
    def unknown_source(self) -> bool:
        """No data block says what the data was (neither metrics.json nor env.json): never presented as real."""
        return not self.is_phantom and self.data.get("kind") not in ("real", "phantom")

    @property
    def unverified(self) -> bool:
        """Real data whose provenance (env.json's data block) does not say it matched the release manifest."""
        return not self.is_phantom and self.data.get("kind") == "real" and self.data.get("verified") is not True

    @property
    def unverified_reason(self) -> str:
        if not self.unverified:
            return ""
        if "verified" not in self.data:
            return "no verification recorded (env.json has no data block saying so)"
        return str(self.data.get("note") or "its data block gives no reason")

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
        """The data source a table row belongs to: the dataset's name, kind and, for real data, whether verified
        (e.g. 'seg_phantom (phantom)', 'det_real (real, UNVERIFIED)'): a verified and an unverified run never share
        a table or FPS_best."""
        if self.unknown_source:
            return f"{self.data.get('name', '?')} (unknown data source)"
        return f"{self.data.get('name', '?')} ({self.data_kind}{', UNVERIFIED' if self.unverified else ''})"

    @property
    def data_label(self) -> str:
        if self.data.get("label"):
            label = str(self.data["label"])
        else:
            label = ("PHANTOM - synthetic, not the Kumar et al. release" if self.is_phantom else
                     "unknown data source (no data block in metrics.json or env.json)" if self.unknown_source else
                     f"{self.data_kind} data")
        if self.trained_on_phantom and self.data.get("kind") != "phantom":
            label += "; the model was trained on a PHANTOM"
        return label

    @property
    def is_zero_shot(self) -> bool:
        """An evaluation of another run's checkpoint (`checkpoint_run` set) or a human-domain evaluation."""
        return bool(self.metrics.get("checkpoint_run")) or self.domain == "human"

    @property
    def speeds(self) -> dict[str, dict[str, Any]]:
        """Batch-1 speed per processor measured: {"cpu"|"gpu": {"fps", "load" (0-1), "hardware"}}; an FPS of 0
        (a timing that measured nothing) reads None, not measured, so it neither scores nor sets FPS_best."""
        return {p: {**s, "fps": None} if _zero(s.get("fps")) else s for p, s in self.speeds_as_written.items()}

    @property
    def speeds_as_written(self) -> dict[str, dict[str, Any]]:
        """The speeds as metrics.json gives them (what `_malformed` checks).

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
        return commit_label(self.env.get("git") or {}) or "unknown"

    @property
    def config(self) -> str:
        return str(self.metrics.get("config") or "")

    @cached_property
    def saved_config(self) -> dict[str, Any]:
        """The run's resolved config.yaml ({} when absent or unreadable)."""
        return _read_yaml(self.path / "config.yaml")

    @property
    def test_images(self) -> int | None:
        """Test images scored: metrics.json's `test_images` (segmentation: the metrics' n_images otherwise)."""
        n = self.metrics.get("test_images", self.values.get("n_images"))
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    @cached_property
    def test_split_size(self) -> int | None:
        """Images in the whole test split: the phantom stamp's count, else those in the dataset folder now."""
        counts = (self.data.get("stamp") or {}).get("counts") or {}
        if isinstance(counts.get("test"), int):
            return counts["test"]
        root = self.data_root
        if root is None or self.task not in ("detection", "segmentation"):
            return None
        from spinebench.data.errors import DatasetError
        from spinebench.data.images import list_images
        from spinebench.data.layout import split_folder

        try:
            folder = split_folder(root, self.task, "test")
            if self.task == "detection":
                from spinebench.data.detection import image_folder

                folder = image_folder(folder)
            return len(list_images(folder)) or None
        except (DatasetError, OSError):
            return None

    @property
    def partial_test(self) -> str:
        """'scored on 2 of 4 test images' when the run scored part of the test split (a smoke run's
        trainer.limit_test_images), else ''."""
        limit = (self.saved_config.get("trainer") or {}).get("limit_test_images")
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
        total = self.test_split_size
        scored = self.test_images
        if scored is None and limit is not None and total is not None:
            scored = min(limit, total)
        if scored is not None and total is not None:
            return f"scored on {scored} of {total} test images" if scored < total else ""
        if limit is not None:
            return (f"scored on {scored if scored is not None else f'at most {limit}'} test images "
                    f"(trainer.limit_test_images={limit}; the split's size is unknown)")
        return ""

    @property
    def finished_at(self) -> float:
        return (self.path / METRICS_FILE).stat().st_mtime

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass
class Unfinished:
    """A run folder without metrics.json (still running, killed, crashed): never a result, but a row with no
    finished run says it was tried. task/model/data_name come from its config ("" when it does not say)."""

    path: Path
    task: str = ""
    model: str = ""  # manuscript row key (model.row, else model.name)
    data_name: str = ""
    domain: str = "porcine"
    error: str = ""  # the last error its log recorded ("" when none: killed, or still running)
    last_line: str = ""  # the last line of its log

    @property
    def status(self) -> str:
        return f"failed: {self.error}" if self.error else "unfinished (see skipped)"

    @property
    def note(self) -> str:
        tail = (f"; its log ends with an error: {self.error}" if self.error else
                f"; last log line: {self.last_line}" if self.last_line else "")
        return f"{self.path}: skipped, unfinished run (no {METRICS_FILE}){tail}"


def commit_label(git: dict[str, Any]) -> str | None:
    """A `runinfo.git_commit` record as the report writes it: 12 digits, '-dirty' for uncommitted code changes."""
    commit = git.get("commit")
    return commit[:12] + ("-dirty" if git.get("dirty") else "") if commit else None


def same_commit(a: str, b: str) -> bool:
    """Two commit labels of one commit, whether dirty or not: SPINEBENCH_GIT_COMMIT may give a hash in short."""
    a, b = a.removesuffix("-dirty"), b.removesuffix("-dirty")
    return a.startswith(b) or b.startswith(a)


def source_kind(runs: Sequence[Run]) -> str:
    """What a group of runs' data is, from every run (not the first): 'phantom', 'unknown', 'unverified' or
    'real'; any run of a weaker kind names the group so."""
    for kind, test in (("phantom", "is_phantom"), ("unknown", "unknown_source"), ("unverified", "unverified")):
        if any(getattr(r, test) for r in runs):
            return kind
    return "real"


def pick(runs: Sequence[Run], model: str) -> tuple[Run | None, int]:
    """The run a manuscript row shows, and how many others it has: one made with the row's own model config
    before a variant filed under the row (unet_light, deeplabv3_light), then a training run before a later
    `spinebench-eval` of a checkpoint on the same data, then the most recently finished."""
    matching = [r for r in runs if r.model == model]
    if not matching:
        return None, 0
    return (max(matching, key=lambda r: (r.model_name == model, not r.metrics.get("checkpoint_run"), r.finished_at)),
            len(matching) - 1)


@dataclass
class Collection:
    runs: list[Run]
    notes: list[str]  # one line per skipped folder, with the reason
    unfinished: list[Unfinished] = field(default_factory=list)

    def unfinished_of(self, task: str, human: bool) -> list[Unfinished]:
        return [u for u in self.unfinished if u.task == task and (u.domain == "human") == human]

    def by_task(self, task: str) -> list[Run]:
        return [r for r in self.runs if r.task == task]


def _read_json(path: Path) -> dict[str, Any]:
    with path.open() as f:
        payload = json.load(f)
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    return payload


def _zero(fps: Any) -> bool:
    return type(fps) in (int, float) and fps == 0


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, {} when the file is absent, unreadable or not a mapping (a report never stops on it)."""
    import yaml

    try:
        payload = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _looks_like_a_run(folder: Path, entries: set[str]) -> bool:
    """A run's files without metrics.json: config.yaml, env.json, checkpoints/, or Hydra's .hydra/ beside a log."""
    if any(m in entries for m in RUN_MARKERS):
        return True
    return ".hydra" in entries and any(e.endswith(".log") and (folder / e).is_file() for e in entries)


def _log_tail(folder: Path) -> tuple[str, str]:
    """(last error, last line) of the run's newest *.log: the error logged last (the exception line when that
    is a traceback), else ''."""
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "", ""
    try:
        with logs[-1].open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "", ""
    last = lines[-1] if lines else ""
    starts = [i for i, line in enumerate(lines) if RUN_START in line]
    for line in reversed(lines[starts[-1]:] if starts else lines):  # the log gathers every attempt: the last one's
        if "[ERROR]" in line:
            message = re.sub(r"^job failed \([^)]*\), the sweep continues: ", "", line.split("] - ", 1)[-1].strip())
            return (last if message.startswith("traceback:") else message), last
    return "", last


def _unfinished(folder: Path) -> Unfinished:
    """What an unfinished folder's config (config.yaml, else Hydra's unresolved .hydra/config.yaml) and log say."""
    config = _read_yaml(folder / "config.yaml") or _read_yaml(folder / ".hydra" / "config.yaml")
    model = config.get("model") or (config.get("checkpoint_config") or {}).get("model") or {}
    data = config.get("data") or {}
    model = model if isinstance(model, dict) else {}
    data = data if isinstance(data, dict) else {}
    name = str(data.get("name") or "")
    phantom = data.get("phantom") if isinstance(data.get("phantom"), dict) else {}
    domain = phantom.get("domain") or data.get("domain")  # as the pipeline decides it: the phantom's, else config
    error, last = _log_tail(folder)
    return Unfinished(path=folder.resolve(), task=str(data.get("task") or ""),
                      model=str(model.get("row") or model.get("name") or ""), data_name=name,
                      domain=str(domain or ("human" if "human" in name.lower() else "porcine")),
                      error=error, last_line=last)


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
    run = Run(path=folder.resolve(), metrics=metrics, env=env)
    for processor, speed in run.speeds_as_written.items():
        if _zero(speed.get("fps")):
            notes.append(f"{folder}: its {processor} FPS is 0 in {METRICS_FILE}: that speed is shown as not measured "
                         "and has no implantability")
    return run


def _malformed(metrics: dict[str, Any]) -> str | None:
    """What makes a metrics.json unusable for the report (None: usable), checked the way the report reads it."""
    for key in ("task", "model", "metrics"):
        if key not in metrics:
            return f"has no '{key}'"
    if not isinstance(metrics["metrics"], dict):
        return "has a 'metrics' that is not an object"
    for processor, speed in Run(path=Path(), metrics=metrics).speeds_as_written.items():
        fps, load = speed.get("fps"), speed.get("load")
        if fps is not None and (not isinstance(fps, (int, float)) or fps < 0):
            return f"has a {processor} FPS that is not a non-negative number ({fps!r})"
        if load is not None and (not isinstance(load, (int, float)) or not 0 <= load <= 1):
            return f"has a {processor} load that is not a fraction in [0, 1] ({load!r}; a percentage?)"
    return None


def collect_runs(paths: list[str | Path]) -> Collection:
    """Walk `paths` (run folders or folders of runs) and return the finished runs, sorted by task, model, path,
    and the unfinished ones."""
    runs: dict[Path, Run] = {}
    unfinished: dict[Path, Unfinished] = {}
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
            elif _looks_like_a_run(folder, entries) and folder.name not in SKIP_DIRS:
                pending = _unfinished(folder)
                if pending.path not in unfinished:
                    unfinished[pending.path] = pending
                    notes.append(pending.note)
    for note in notes:
        log.info(note)
    ordered = sorted(runs.values(), key=lambda r: (r.task, r.model, str(r.path)))
    return Collection(runs=ordered, notes=notes, unfinished=sorted(unfinished.values(), key=lambda u: str(u.path)))
