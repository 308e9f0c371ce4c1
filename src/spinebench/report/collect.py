"""Find the runs under the given folders and read what they recorded.

A run is finished exactly when its metrics.json exists (the pipeline writes it last: mmdetection's gather_models
rule); it is read through `RunFolder.record()`, so a record of any schema reads as the current one. A folder
that looks like a run without it (killed, failed, still running) is never a result, but is kept as `Unfinished`,
from its status.json, so that its manuscript row says "unfinished" or "failed: <error>" rather than "not run".
One bad folder is a note naming it, never a stopped report.

A run's own export/speed.json (`spinebench export`) adds its onnxruntime CPU speed, only when export/parity.json
says the exported model passed its parity check: a graph that scores otherwise than the run is not the run.

Seeds and splits: a manuscript row shows the run `pick` chooses on one split (the release's own, or each split file
a run was trained on, `data.splits`), together with the other seeds of that run's recipe (`pick_seeds`): runs that
differ only in the seed (same model, data, config label apart from `seed=N`, split file). Runs on different splits
are never one row, nor averaged together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from spinebench.contract import CHECKPOINT_DIR, RunRecord
from spinebench.report.datasource import DataSource
from spinebench.run_folder import (
    CONFIG_FILE,
    ENV_FILE,
    FAILED,
    METRICS_FILE,
    STATUS_FILE,
    RunFolder,
)

log = logging.getLogger(__name__)

RUN_MARKERS = (STATUS_FILE, CONFIG_FILE, ENV_FILE, CHECKPOINT_DIR)  # or ".hydra" beside a *.log (`_looks_like_a_run`)
SKIP_DIRS = {CHECKPOINT_DIR, "predictions", "overlays", ".hydra", "__pycache__", ".git", ".venv", "plots"}
PROCESSORS = ("cpu", "gpu")
# spinebench.export's files, named here so that a report never imports torch (tests check they agree)
EXPORT_DIR, EXPORT_SPEED_FILE, EXPORT_PARITY_FILE = "export", "speed.json", "parity.json"
EXPORTED = "cpu_exported"  # the key of the exported CPU speed and score, beside "cpu" and "gpu"
LOAD_FROM_EXPORT, LOAD_FROM_EAGER = "speed.json", "metrics.json (eager PyTorch on the same CPU and threads)"
SEED_OVERRIDE = re.compile(r"^[+~]*seed=")  # the seed in a config label (`make reproduce` passes seed=N)
RELEASE_SPLIT = ""  # the split id of a run on the release's own train/val/test folders


def display_path(path: Path | str) -> str:
    """A folder relative to the working directory when it lies below it (a committed table names no machine's
    folders), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class Run:
    """One finished run: its folder, its record, and what the report computes for it."""

    path: Path
    record: RunRecord
    test_limit: int | None = None  # trainer.limit_test_images, read only when the record lacks a test count
    intervals: dict[str, Any] = field(default_factory=dict)  # bootstrap interval per metric key
    implantability: dict[str, float | None] = field(default_factory=dict)  # our score per processor
    notes: list[str] = field(default_factory=list)  # what the report says about this run
    # batch-1 CPU speed through onnxruntime from export/speed.json, when the export passed its parity check:
    # {"fps", "load", "load_from", "hardware", "threads", "eager_fps"}; None without one
    exported: dict[str, Any] | None = None
    # an evaluation: the record of the run whose checkpoint it scored (None when unreadable): its seed and recipe
    training: RunRecord | None = None

    @cached_property
    def source(self) -> DataSource:
        return DataSource.of(self.record.source, self.record.data, self.record.trained_on)

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def model(self) -> str:
        """The manuscript row it fills (e.g. yolov8m)."""
        return self.record.model

    @property
    def model_name(self) -> str:
        return self.record.model_name or self.model

    @property
    def values(self) -> dict[str, Any]:
        return self.record.metrics

    @property
    def data(self) -> dict[str, Any]:
        return self.record.data

    @property
    def data_root(self) -> Path | None:
        root = self.data.get("root")
        return Path(root) if root else None

    @property
    def domain(self) -> str:
        """'human' for the zero-shot side of a table, else 'porcine'."""
        return self.source.domain

    @property
    def is_zero_shot(self) -> bool:
        """An evaluation of another run's checkpoint, or a human-domain score."""
        return bool(self.record.checkpoint_run) or self.domain == "human"

    @property
    def speeds_as_written(self) -> dict[str, dict[str, Any]]:
        """Batch-1 speed per processor as recorded: the `speed` block when the run timed both processors, else
        `fps_batch1` + `load[<processor of device>]`."""
        block = self.record.speed
        if isinstance(block, dict) and any(isinstance(block.get(p), dict) for p in PROCESSORS):
            return {
                p: {
                    "fps": block[p].get("fps"),
                    "load": block[p].get("load"),
                    "hardware": block[p].get("device") or block[p].get("hardware") or self.hardware,
                }
                for p in PROCESSORS
                if isinstance(block.get(p), dict)
            }
        if self.record.fps_batch1 is None:
            return {}
        load = self.record.load
        value = load.get(self.processor) if isinstance(load, dict) else load
        return {self.processor: {"fps": self.record.fps_batch1, "load": value, "hardware": self.hardware}}

    @property
    def speeds(self) -> dict[str, dict[str, Any]]:
        """{"cpu"|"gpu": {"fps", "load" (0-1), "hardware"}}; an FPS of 0 (a timing that measured nothing) reads
        None, not measured, so it neither scores nor sets FPS_best."""
        return {p: {**s, "fps": None} if _zero(s.get("fps")) else s for p, s in self.speeds_as_written.items()}

    @property
    def hardware(self) -> str:
        return str(self.record.device or "unknown")

    @property
    def processor(self) -> str:
        """'gpu' or 'cpu': which implantability column the run's own speed belongs to."""
        hw = self.hardware.lower()
        return "cpu" if hw.startswith("cpu") or hw == "unknown" else "gpu"

    @property
    def commit(self) -> str:
        return commit_label(self.record.git or {}) or "unknown"

    @property
    def test_images(self) -> int | None:
        return _count(self.record.test_images)

    @property
    def test_split_images(self) -> int | None:
        return _count(self.record.test_split_images)

    @property
    def partial_test(self) -> str:
        """'scored on 2 of 4 test images' when the run scored part of its test split (a smoke run's
        trainer.limit_test_images), else ''."""
        total, scored, limit = self.test_split_images, self.test_images, self.test_limit
        if scored is None and limit is not None and total is not None:
            scored = min(limit, total)
        if scored is not None and total is not None:
            return f"scored on {scored} of {total} test images" if scored < total else ""
        if limit is not None:
            return (
                f"scored on {scored if scored is not None else f'at most {limit}'} test images "
                f"(trainer.limit_test_images={limit}; the split's size is unknown)"
            )
        return ""

    @property
    def finished_at(self) -> float:
        return (self.path / METRICS_FILE).stat().st_mtime

    @property
    def seed(self) -> int | None:
        """The seed that made the model: the record's, or for an evaluation its training run's (None: unknown,
        and the run is averaged with no other)."""
        if self.record.checkpoint_run:
            return record_seed(self.training) if self.training is not None else None
        return record_seed(self.record)

    @property
    def splits(self) -> dict[str, Any]:
        """The split file the run was trained and scored on (`data.splits`: file, sha256, sizes); {} on the
        release's own split."""
        return _mapping(self.data.get("splits"))

    @property
    def split_id(self) -> str:
        """What tells two splits apart: the split file's sha256 (its path when none is recorded), RELEASE_SPLIT
        ("") for the release's own split."""
        splits = self.splits
        return str(splits.get("sha256") or splits.get("file") or "re-split") if splits else RELEASE_SPLIT

    @property
    def split_name(self) -> str:
        """The split file's name ('splits.json'), '' on the release's split."""
        splits = self.splits
        return Path(str(splits.get("file") or "unnamed split file")).name if splits else ""

    @property
    def split_label(self) -> str:
        """The split file's name and the first 8 hex digits of its sha256 ('splits.json (1a2b3c4d)'), ''."""
        sha = str(self.splits.get("sha256") or "")
        return f"{self.split_name} ({sha[:8]})" if sha else self.split_name

    @property
    def recipe(self) -> tuple:
        """What the seeds of one row share: task, manuscript row, model config, data block, split file and config
        label without its `seed=N`; for an evaluation also its training run's model, data and label."""
        own = (self.task, self.model, self.model_name, data_key(self.data), self.split_id)
        own += (recipe_label(self.record.config),)
        if not self.record.checkpoint_run:
            return own
        trained = self.training
        return (
            *own,
            "evaluation",
            None if trained is None else (trained.model_name, data_key(trained.data), recipe_label(trained.config)),
        )


@dataclass
class Unfinished:
    """A run folder without metrics.json: never a result, but a row with no finished run says it was tried.
    task/model/data come from its status.json (from its config.yaml for a folder older than status files)."""

    path: Path
    task: str = ""
    model: str = ""  # manuscript row
    data_name: str = ""
    domain: str = "porcine"
    state: str = ""  # status.json's state ("" when the folder has none)
    error: str = ""  # a failed run's error, one line
    updated: str = ""  # when status.json last changed

    @property
    def status(self) -> str:
        """The row's cell: 'failed: <error>' or 'unfinished (see skipped)'."""
        if self.state == FAILED:
            return f"failed: {self.error}" if self.error else "failed"
        return "unfinished (see skipped)"

    @property
    def note(self) -> str:
        head = f"{display_path(self.path)}: skipped, unfinished run (no {METRICS_FILE})"
        if self.state == FAILED:
            return f"{head}; {self.status}"
        if self.state:
            return (
                f"{head}; {STATUS_FILE} says {self.state}"
                + (f" at {self.updated}" if self.updated else "")
                + ": killed, or still running"
            )
        return f"{head}; it has no {STATUS_FILE}: a run from before runs recorded their state"

    @property
    def changed_at(self) -> float:
        for path in (self.path / STATUS_FILE, self.path):
            try:
                return path.stat().st_mtime
            except OSError:
                continue
        return 0.0


def commit_label(git: dict[str, Any]) -> str | None:
    """A record's git block as the report writes it: 12 digits, '-dirty' for uncommitted code changes."""
    commit = git.get("commit")
    return commit[:12] + ("-dirty" if git.get("dirty") else "") if commit else None


def same_commit(a: str, b: str) -> bool:
    """Two commit labels of one commit, whether dirty or not: SPINEBENCH_GIT_COMMIT may give a hash in short."""
    a, b = a.removesuffix("-dirty"), b.removesuffix("-dirty")
    return a.startswith(b) or b.startswith(a)


def recipe_label(config: str | None) -> str:
    """A config label without its `seed=N`: what the seeds of one recipe share."""
    return " ".join(token for token in str(config or "").split() if not SEED_OVERRIDE.match(token))


def record_seed(record: RunRecord) -> int | None:
    """A record's seed: its `seed` key, else the `seed=N` of its config label (a record from before the key);
    None when neither says."""
    value = getattr(record, "seed", None)
    if value is None:
        value = record.extra.get("seed")
    if value is None:
        given = [t.split("=", 1)[1] for t in str(record.config or "").split() if SEED_OVERRIDE.match(t)]
        value = given[-1] if given else None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_key(data: dict[str, Any]) -> str:
    """A data block as one comparable value, without its split file (the recipe names that apart)."""
    return json.dumps({k: v for k, v in data.items() if k != "splits"}, sort_keys=True, default=str)


def _rank(model: str):
    """The order of today's rule: the row's own model config before a variant filed under it, a training run
    before an evaluation, then the most recently finished."""
    return lambda r: (r.model_name == model, not r.record.checkpoint_run, r.finished_at)


def pick(runs: Sequence[Run], model: str, split: str = RELEASE_SPLIT) -> tuple[Run | None, int]:
    """The run a manuscript row shows on one split (the release's own by default), and how many others of the row
    it has there: one made with the row's own model config before a variant filed under the row (unet_light,
    deeplabv3_light), then a training run before a later `spinebench-eval` of a checkpoint on the same data, then
    the most recently finished."""
    matching = [r for r in runs if r.model == model and r.split_id == split]
    if not matching:
        return None, 0
    return max(matching, key=_rank(model)), len(matching) - 1


def pick_seeds(runs: Sequence[Run], model: str, split: str = RELEASE_SPLIT) -> tuple[list[Run], int]:
    """The runs a manuscript row shows on one split, by seed, and how many others of the row it hides there:
    the run `pick` chooses and every other seed of its recipe (`Run.recipe`; a seed run twice counts its top run
    by `pick`'s order). A run of unknown seed stands alone."""
    chosen, _ = pick(runs, model, split)
    if chosen is None:
        return [], 0
    matching = [r for r in runs if r.model == model and r.split_id == split]
    if chosen.seed is None:
        return [chosen], len(matching) - 1
    per_seed: dict[int, Run] = {}
    for run in sorted((r for r in matching if r.seed is not None and r.recipe == chosen.recipe), key=_rank(model)):
        per_seed[run.seed] = run  # ascending: the top run of a seed is written last
    per_seed[chosen.seed] = chosen
    return [per_seed[s] for s in sorted(per_seed)], len(matching) - len(per_seed)


def splits_of(runs: Sequence[Run]) -> list[str]:
    """The split ids of `runs`, the release's own first, then the split files by name."""
    ids = {r.split_id: r.split_name for r in runs}
    return sorted(ids, key=lambda s: (s != RELEASE_SPLIT, ids[s], s))


@dataclass
class Collection:
    runs: list[Run]
    notes: list[str]  # one line per skipped folder or run worth a word, with the reason
    unfinished: list[Unfinished] = field(default_factory=list)

    def by_task(self, task: str) -> list[Run]:
        return [r for r in self.runs if r.task == task]

    def unfinished_of(self, task: str, human: bool) -> list[Unfinished]:
        return [u for u in self.unfinished if u.task == task and (u.domain == "human") == human]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _looks_like_a_run(folder: Path, entries: set[str]) -> bool:
    """A run's files without metrics.json: status.json, config.yaml, env.json, checkpoints/, or Hydra's .hydra/
    beside a log (a job stopped before the run wrote anything of its own)."""
    if any(m in entries for m in RUN_MARKERS):
        return True
    return ".hydra" in entries and any(e.endswith(".log") and (folder / e).is_file() for e in entries)


def _unfinished(folder: Path) -> Unfinished:
    """What an unfinished folder's status.json says; a folder older than status files is named by its config
    (config.yaml, else Hydra's unresolved .hydra/config.yaml)."""
    status = RunFolder(folder).status
    data = _mapping(status.get("data"))
    task, model, name, domain = status.get("task"), status.get("model"), data.get("name"), data.get("domain")
    if not (task and model and name):
        config = _read_yaml(folder / CONFIG_FILE) or _read_yaml(folder / ".hydra" / "config.yaml")
        model_cfg = _mapping(config.get("model")) or _mapping(_mapping(config.get("checkpoint_config")).get("model"))
        data_cfg = _mapping(config.get("data"))
        phantom = _mapping(data_cfg.get("phantom"))
        task = task or data_cfg.get("task")
        model = model or model_cfg.get("row") or model_cfg.get("name")
        name = name or data_cfg.get("name")
        domain = domain or phantom.get("domain") or data_cfg.get("domain")  # as the data layer decides it
    name = str(name or "")
    return Unfinished(
        path=folder.resolve(),
        task=str(task or ""),
        model=str(model or ""),
        data_name=name,
        domain=str(domain or ("human" if "human" in name.lower() else "porcine")),
        state=str(status.get("state") or ""),
        error=str(status.get("error") or ""),
        updated=str(status.get("updated") or ""),
    )


def _test_limit(folder: Path) -> int | None:
    """trainer.limit_test_images of the run's config.yaml: for a record that does not say how many test images it
    scored of how many (one written before schema 2), whether the score may be partial."""
    limit = _mapping(_read_yaml(folder / CONFIG_FILE).get("trainer")).get("limit_test_images")
    return limit if _count(limit) and limit > 0 else None


SCORES = (
    "mAP50",
    "mAP50_95",
    "AR100",
    "precision",
    "recall",
    "f1",
    "mean_dice",
    "mIoU",
    "cord_dice",
    "cord_iou",
    "foreground_mean_dice",
    "foreground_mIoU",
)
PER_CLASS = ("dice_per_class", "iou_per_class")
COUNTS = ("params", "trainable_params", "test_images", "test_split_images", "epochs")
TEXTS = ("task", "model", "model_name")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _score_problem(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):  # not measured: shown as such
        return None
    if not _is_number(value):
        return f"has a metric {name} that is not a number ({value!r})"
    if not 0 <= value <= 1:
        return f"has a metric {name} outside [0, 1] ({value!r})"
    return None


def invalid_record(record: Any) -> str | None:
    """What makes a record unfit for a table, checked against the RunRecord schema's types and ranges (None: fit):
    a score outside [0, 1], a count that is not a non-negative integer, a data block that is not an object."""
    for name in TEXTS:
        if not isinstance(getattr(record, name), str):
            return f"has a {name} that is not a string ({getattr(record, name)!r})"
    if record.task not in ("detection", "segmentation"):
        return f"has a task that is neither detection nor segmentation ({record.task!r})"
    for name in ("data", "trained_on", "git"):
        value = getattr(record, name)
        if value is not None and not isinstance(value, dict):
            return f"has a '{name}' that is not an object ({value!r})"
    for name in COUNTS:
        value = getattr(record, name, None) if name != "trainable_params" else record.extra.get(name)
        if value is not None and not (_is_number(value) and value >= 0 and float(value).is_integer()):
            return f"has a {name} that is not a non-negative integer ({value!r})"
    for name, value in record.metrics.items():
        if name in PER_CLASS:
            if not isinstance(value, dict):
                return f"has a metric {name} that is not an object ({value!r})"
            problem = next(filter(None, (_score_problem(f"{name}.{k}", v) for k, v in value.items())), None)
        elif name in SCORES:
            problem = _score_problem(name, value)
        elif isinstance(value, (dict, list, str)) or value is None:  # a note such as segmentation's `averaging`
            problem = None
        else:
            problem = None if _is_number(value) else f"has a metric {name} that is not a number ({value!r})"
        if problem:
            return problem
    return None


def _malformed(run: Run) -> str | None:
    """What makes a record unusable (None: usable): its schema's types and ranges, then its speeds, checked the
    way the report reads them."""
    problem = invalid_record(run.record)
    if problem:
        return problem
    for processor, speed in run.speeds_as_written.items():
        fps, load = speed.get("fps"), speed.get("load")
        if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps < 0):
            return f"has a {processor} FPS that is not a non-negative number ({fps!r})"
        if load is not None and (not isinstance(load, (int, float)) or not 0 <= load <= 1):
            return f"has a {processor} load that is not a fraction in [0, 1] ({load!r}; a percentage?)"
    return None


def _exported_load(run: Run, speed: dict[str, Any], cpu: str, threads: Any) -> tuple[float | None, str]:
    """The CPU load of the exported timing: speed.json's own when it records one, else the run's eager CPU load
    when that was timed on the same CPU model with the same threads (the closest measure there is); else none,
    and the exported speed has no score."""
    for block in (_mapping(speed.get("onnxruntime")), speed):
        load = block.get("load")
        if _is_number(load) and 0 <= load <= 1:
            return float(load), LOAD_FROM_EXPORT
    eager = run.speeds.get("cpu") or {}
    hardware, load = str(eager.get("hardware") or ""), eager.get("load")
    same = hardware.startswith(f"cpu ({cpu}, ") and hardware.endswith(f", {threads} threads)")
    return (float(load), LOAD_FROM_EAGER) if same and _is_number(load) and 0 <= load <= 1 else (None, "")


def _read_export(run: Run, where: str) -> tuple[dict[str, Any] | None, str | None]:
    """The run's exported CPU speed (see `Run.exported`) and a note when its export/ holds one the report does not
    use (parity failed or missing, a file that is not the exporter's)."""
    folder = run.path / EXPORT_DIR
    if not (folder / EXPORT_SPEED_FILE).is_file():
        return None, None
    unused = f"{where}: its {EXPORT_DIR}/{EXPORT_SPEED_FILE} is not shown or scored"
    try:
        speed = json.loads((folder / EXPORT_SPEED_FILE).read_text())
        parity = json.loads((folder / EXPORT_PARITY_FILE).read_text())
    except FileNotFoundError:
        return None, f"{unused}: no {EXPORT_DIR}/{EXPORT_PARITY_FILE} says the exported model matches the run"
    except (OSError, ValueError) as exc:
        return None, f"{unused}: unreadable ({exc})"
    if not isinstance(parity, dict) or parity.get("passed") is not True:
        return None, f"{unused}: the exported model failed its parity check ({EXPORT_DIR}/{EXPORT_PARITY_FILE})"
    ort = _mapping(speed.get("onnxruntime")) if isinstance(speed, dict) else {}
    fps = ort.get("fps")
    if not (_is_number(fps) and fps > 0):
        return None, f"{unused}: its onnxruntime FPS is not a positive number ({fps!r})"
    cpu, threads = str(speed.get("cpu") or "unknown model"), speed.get("threads")
    load, load_from = _exported_load(run, speed, cpu, threads)
    eager = _mapping(speed.get("pytorch_eager")).get("fps")
    return {
        "fps": float(fps),
        "load": load,
        "load_from": load_from,
        "hardware": f"cpu ({cpu}, {threads if threads is not None else '?'} threads, onnxruntime)",
        "threads": threads,
        "eager_fps": float(eager) if _is_number(eager) else None,
    }, None


def _load_run(folder: Path, notes: list[str]) -> Run | None:
    where = display_path(folder)
    try:
        record = RunFolder(folder).record()
    except (OSError, ValueError, TypeError) as exc:
        # the schema's own complaints read "has no 'task'"; anything else is a file that is not a record
        problem = str(exc)
        notes.append(
            f"{where}: skipped, "
            + (f"{METRICS_FILE} {problem}" if problem.startswith("has ") else f"unreadable {METRICS_FILE} ({problem})")
        )
        return None
    run = Run(path=folder.resolve(), record=record)
    problem = _malformed(run)
    if problem:
        notes.append(f"{where}: skipped, {METRICS_FILE} {problem}")
        return None
    if run.test_images is None or run.test_split_images is None:
        run.test_limit = _test_limit(folder)
    for processor, speed in run.speeds_as_written.items():
        if _zero(speed.get("fps")):
            run.notes.append(
                f"{where}: its {processor} FPS is 0 in {METRICS_FILE}: that speed is shown as not "
                "measured and has no implantability"
            )
    run.exported, unused = _read_export(run, where)
    if unused:
        run.notes.append(unused)
    notes.extend(run.notes)
    return run


def _training_record(path: str, runs: dict[Path, Run]) -> RunRecord | None:
    """The record of the training run an evaluation scored: a collected run's, else its folder's metrics.json
    (None when it cannot be read: the evaluation's seed is then unknown)."""
    folder = Path(path).resolve()
    if folder in runs:
        return runs[folder].record
    try:
        return RunFolder(folder).record() if (folder / METRICS_FILE).is_file() else None
    except (OSError, ValueError, TypeError):
        return None


def collect_runs(paths: Iterable[str | Path]) -> Collection:
    """Walk `paths` (run folders or folders of runs): the finished runs sorted by task, model and folder, and the
    unfinished ones."""
    runs: dict[Path, Run] = {}
    unfinished: dict[Path, Unfinished] = {}
    notes: list[str] = []
    for given in map(Path, paths):
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
    for run in runs.values():
        if run.record.checkpoint_run:
            run.training = _training_record(str(run.record.checkpoint_run), runs)
    for note in notes:
        log.info(note)
    ordered = sorted(runs.values(), key=lambda r: (r.task, r.model, str(r.path)))
    return Collection(runs=ordered, notes=notes, unfinished=sorted(unfinished.values(), key=lambda u: str(u.path)))
