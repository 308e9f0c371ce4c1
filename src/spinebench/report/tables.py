"""The comparison table: every number the report shows, as one pandas DataFrame, and its CSV files.

One row per manuscript row x task side (porcine, or zero-shot on human) x data-source group x split (the
release's own, then each split file a run of the row was trained on: `splits`): the run `pick` shows there
(`shown`, with how many `others` it hides), or, with no finished run on the release's split, the row's `status`
("not run", "unfinished (see skipped)", "failed: <error>"); each hidden run and each run of a model without a
manuscript row has a row of its own too, so every finished run is in the table once. Beside our metrics sit their
bootstrap intervals (`<metric>_ci_low/_high`), the paper's value (`paper_<metric>`, the human side's for a
zero-shot row) and the difference (`<metric>_diff` = ours - paper), then speed, implantability (eager PyTorch per
processor, and the run's exported model on the CPU through onnxruntime, `*_cpu_exported`) and what traces the run.

Seeds: when the row's run has other seeds of its recipe (`pick_seeds`), the shown row is an aggregate (`seed` =
"mean", `n_seeds`): each metric the mean over the seeds, `<metric>_sd` their sample standard deviation (ddof=1),
the difference from the mean, no interval; speed and implantability the mean over seeds timed on one hardware.
Each seed's run follows it as a row of its own (`shown` false, its `seed`, its interval).

The Markdown (`spinebench.report.markdown`) and the plots render this table; `<task>.csv` is its finished runs.
Groups come in the order a reader trusts them (verified real data, unverified, unknown source, phantom); rows in
benchmarks/manuscript.yaml's order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinebench.report.bootstrap import DETECTION_METRICS, flat_segmentation_metrics
from spinebench.report.collect import (
    EXPORTED,
    RELEASE_SPLIT,
    Collection,
    Run,
    Unfinished,
    display_path,
    pick_seeds,
    recipe_label,
    splits_of,
)
from spinebench.report.manuscript import Manuscript, Row, TaskTable

SEGMENTATION_METRICS = ("mIoU", "mean_dice", "cord_iou", "cord_dice", "foreground_mIoU", "foreground_mean_dice")
NOT_RUN = "not run"
FINISHED = "finished"
AGGREGATE = "mean"  # the `seed` of a row that averages the seeds of one recipe
PORCINE, HUMAN = "porcine", "human"

HEAD = [
    "task",
    "domain",
    "data_source",
    "model",
    "model_name",
    "paper_name",
    "status",
    "shown",
    "others",
    "seed",
    "n_seeds",
    "split",
    "splits",
    "test_images",
    "test_split_images",
    "partial_test",
    "smoke_steps",
    "zero_shot",
    "checkpoint_run",
    "data_kind",
    "data_label",
    "data_verified",
    "data_unverified_reason",
    "data_stamp",
]
# per processor timed: FPS, load and hardware as measured (None: not measured), our score, the paper's
SPEED = [
    f"{prefix}_{proc}{suffix}"
    for proc in ("cpu", "gpu")
    for prefix, suffix in (
        ("fps", ""),
        ("load", "_measured"),
        ("hardware", ""),
        ("implantability", ""),
        ("paper_fps", ""),
        ("paper_load", ""),
        ("paper_implantability", ""),
    )
]
# the run's export/speed.json, when its export passed the parity check: onnxruntime's batch-1 CPU FPS, the load
# the score used and where it comes from, the CPU and threads, eager PyTorch's FPS timed beside it, the score
EXPORTED_SPEED = [
    "fps_cpu_exported",
    "load_cpu_exported",
    "load_cpu_exported_from",
    "hardware_cpu_exported",
    "fps_cpu_eager_beside_export",
    "implantability_cpu_exported",
]
TAIL = [
    "params",
    "paper_params",
    "fps_batch1",
    "processor",
    "load_cpu",
    "load_gpu",
    *SPEED,
    *EXPORTED_SPEED,
    "epochs",
    "paper_epochs",
    "input_size",
    "paper_input_size",
    "pretrained",
    "pretrained_source",
    "train_images_per_s",
    "wall_time_s",
    "hardware",
    "test_precision",
    "commit",
    "config",
    "config_file",
    "run_dir",
    "notes",
]
NOT_IN_CSV = {"task", "status", "source"}  # a CSV is one task's finished runs; `source` is the DataSource itself
# beside `source`, not in the CSV: the split file's name (the model cell's "re-split: <name>") and, on an aggregate
# row, how many seeds gave each metric
INTERNAL = ["source", "splits_name", "seed_counts"]
# averaged over seeds where every seed has a value; per processor only when every seed was timed on one hardware
MEAN_OVER_SEEDS = ("fps_batch1", "load_cpu", "load_gpu", "train_images_per_s", "wall_time_s")
TIMED = {
    "cpu": ("hardware_cpu", ("fps_cpu", "load_cpu_measured", "implantability_cpu")),
    "gpu": ("hardware_gpu", ("fps_gpu", "load_gpu_measured", "implantability_gpu")),
    "cpu exported": (
        "hardware_cpu_exported",
        ("fps_cpu_exported", "load_cpu_exported", "fps_cpu_eager_beside_export", "implantability_cpu_exported"),
    ),
}


def column(metric: str) -> str:
    """A metric key as a column name ('dice/spinal cord' -> 'dice_spinal_cord')."""
    return metric.replace("/", "_").replace(" ", "_")


def number(value: Any) -> float | None:
    """A cell as a float, None when it holds no number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def flat_metrics(run: Run) -> dict[str, Any]:
    """A run's metrics, per-class values of a segmentation run as 'dice/<class>' and 'iou/<class>'."""
    return flat_segmentation_metrics(run.values) if run.task == "segmentation" else dict(run.values)


def class_names(runs: Sequence[Run]) -> list[str]:
    for run in runs:
        names = list((run.values.get("dice_per_class") or {}).keys())
        if names:
            return names
    from spinebench.classes import SEGMENTATION_CLASSES

    return list(SEGMENTATION_CLASSES)


def metric_keys(task: str, runs: Sequence[Run]) -> list[str]:
    """The task's metrics, then anything else a run reported as a number."""
    if task == "detection":
        keys = list(DETECTION_METRICS)
    else:
        names = class_names(runs)
        keys = [*SEGMENTATION_METRICS, *[f"dice/{c}" for c in names], *[f"iou/{c}" for c in names]]
    for run in runs:
        keys += [k for k, v in flat_metrics(run).items() if k not in keys and number(v) is not None and k != "n_images"]
    return keys


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _paper_keys(table: TaskTable) -> set[str]:
    return {k for row in table.rows.values() for k in (*row.metrics, *row.human)}


def _metric_cells(
    keys: Sequence[str],
    paper_keys: set[str],
    values: dict[str, Any],
    intervals: dict[str, Any],
    paper: dict[str, float],
) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for key in keys:
        col, interval = column(key), intervals.get(key)
        cells[col] = values.get(key)
        cells[f"{col}_ci_low"] = interval.low if interval else None
        cells[f"{col}_ci_high"] = interval.high if interval else None
        cells[f"{col}_sd"] = None  # an aggregate row's, over its seeds
        if key in paper_keys:
            ours = number(values.get(key))
            cells[f"paper_{col}"] = paper.get(key)
            cells[f"{col}_diff"] = None if ours is None or key not in paper else ours - paper[key]
    return cells


def _paper_cells(mrow: Row | None, human: bool) -> dict[str, Any]:
    cells: dict[str, Any] = {
        "paper_name": mrow.name if mrow else "",
        "paper_params": mrow.params if mrow else None,
        "paper_epochs": mrow.training.get("epochs") if mrow else None,
        "paper_input_size": mrow.input_size if mrow else None,
    }
    for proc in ("cpu", "gpu"):
        speed = mrow.speed.get(proc) if mrow else None
        cells.update(
            {
                f"paper_fps_{proc}": speed.fps if speed else None,
                f"paper_load_{proc}": speed.load if speed else None,
                # the paper's score rests on porcine accuracy, and a zero-shot run is not scored
                f"paper_implantability_{proc}": speed.implantability if speed and not human else None,
            }
        )
    return cells


def _run_row(
    run: Run, mrow: Row | None, human: bool, keys: Sequence[str], paper_keys: set[str], shown: bool, others: int = 0
) -> dict[str, Any]:
    source, record = run.source, run.record
    paper = (mrow.human if human else mrow.metrics) if mrow else {}
    row: dict[str, Any] = {
        "task": run.task,
        "domain": HUMAN if human else PORCINE,
        "data_source": source.group,
        "model": run.model,
        "model_name": run.model_name,
        "status": FINISHED,
        "shown": shown,
        "others": others,
        "seed": run.seed,
        "split": record.split,
        "splits": run.split_label,
        "test_images": run.test_images,
        "test_split_images": run.test_split_images,
        "partial_test": run.partial_test,
        "smoke_steps": record.smoke_steps,
        "zero_shot": run.is_zero_shot,
        "checkpoint_run": record.checkpoint_run or "",
        "data_kind": source.described,
        "data_label": source.label,
        "data_verified": run.data.get("verified") if source.recorded == "real" else None,
        "data_unverified_reason": source.unverified_reason,
        "data_stamp": json.dumps(
            run.data.get("stamp") or {k: v for k, v in run.data.items() if k != "label"}, sort_keys=True, default=str
        ),
        **_metric_cells(keys, paper_keys, flat_metrics(run), run.intervals, paper),
        **_paper_cells(mrow, human),
        "params": record.params,
        "fps_batch1": record.fps_batch1,
        "processor": run.processor,
        # the record's load block as written: the other processor's load while this one was timed
        "load_cpu": _mapping(record.load).get("cpu"),
        "load_gpu": _mapping(record.load).get("gpu"),
    }
    for proc in ("cpu", "gpu"):
        measured = run.speeds.get(proc) or {}
        row.update(
            {
                f"fps_{proc}": measured.get("fps"),
                f"load_{proc}_measured": measured.get("load"),
                f"hardware_{proc}": measured.get("hardware") if measured.get("fps") is not None else None,
                f"implantability_{proc}": run.implantability.get(proc),
            }
        )
    exported = run.exported or {}
    row.update(
        {
            "fps_cpu_exported": exported.get("fps"),
            "load_cpu_exported": exported.get("load"),
            "load_cpu_exported_from": exported.get("load_from"),
            "hardware_cpu_exported": exported.get("hardware"),
            "fps_cpu_eager_beside_export": exported.get("eager_fps"),
            "implantability_cpu_exported": run.implantability.get(EXPORTED),
            "epochs": record.epochs,
            "input_size": json.dumps(record.input_size),
            "pretrained": record.pretrained,
            "pretrained_source": record.pretrained_source or "",
            "train_images_per_s": record.train_images_per_s,
            "wall_time_s": record.wall_time_s,
            "hardware": run.hardware,
            "test_precision": record.test_precision or "",  # "": a record from before the field
            "commit": run.commit,
            "config": record.config or "",
            "config_file": display_path(run.path / "config.yaml") if (run.path / "config.yaml").is_file() else "",
            "run_dir": display_path(run.path),
            "notes": "; ".join(run.notes),
            "source": source,
            "splits_name": run.split_name,
        }
    )
    return row


def _common(values: Sequence[Any]) -> Any:
    """One cell for several seeds' values: the value when they agree, else the distinct ones joined."""
    if all(v == values[0] for v in values):
        return values[0]
    return ", ".join(dict.fromkeys(str(v) for v in values if v is not None and v != ""))


def _mean(values: Sequence[Any]) -> float | None:
    """The mean when every seed has a number (a speed or score some seeds lack is not averaged), else None."""
    numbers = [number(v) for v in values]
    return None if not numbers or any(v is None for v in numbers) else float(np.mean(numbers))


def _aggregate_row(seeds: Sequence[dict[str, Any]], keys: Sequence[str], others: int) -> dict[str, Any]:
    """The shown row of a manuscript row with several seeds of one recipe, from the seeds' own rows: per metric
    the mean, the sample standard deviation (ddof=1) and the difference of the mean from the paper; speed and
    implantability the mean over seeds timed on one hardware; every other cell the seeds' common value (or
    their distinct values joined)."""
    row = {name: _common([s.get(name) for s in seeds]) for name in seeds[0]}
    n, notes, counts = len(seeds), [], {}
    for key in keys:
        col = column(key)
        present = [v for v in (number(s.get(col)) for s in seeds) if v is not None]
        counts[col] = len(present)
        mean = float(np.mean(present)) if present else None
        row[col] = mean
        row[f"{col}_sd"] = float(np.std(present, ddof=1)) if len(present) > 1 else None
        row[f"{col}_ci_low"] = row[f"{col}_ci_high"] = None  # each seed's interval is on its own row
        if f"{col}_diff" in row:
            paper = number(row.get(f"paper_{col}"))
            row[f"{col}_diff"] = None if mean is None or paper is None else mean - paper
    for name in MEAN_OVER_SEEDS:
        row[name] = _mean([s.get(name) for s in seeds])
    for what, (hardware, columns) in TIMED.items():
        timed_on = [s.get(hardware) for s in seeds]
        if any(timed_on) and (not all(timed_on) or len(set(timed_on)) > 1):
            notes.append(f"{what} speed not averaged: the seeds were not all timed on one hardware (see the CSV)")
            timed_on = [None]
        row[hardware] = timed_on[0]
        for name in columns:
            row[name] = _mean([s.get(name) for s in seeds]) if timed_on[0] else None
    seed_list = ",".join(str(s["seed"]) for s in seeds)
    row.update(
        {
            "shown": True,
            "others": others,
            "seed": AGGREGATE,
            "n_seeds": n,
            "config": " ".join(filter(None, (recipe_label(seeds[0].get("config")), f"seed={seed_list}"))),
            "notes": "; ".join(dict.fromkeys([*notes, *(s["notes"] for s in seeds if s.get("notes"))])),
            "source": seeds[0]["source"],
            "seed_counts": counts,
        }
    )
    return row


def _shown_rows(
    runs: Sequence[Run], others: int, mrow: Row, human: bool, keys: Sequence[str], paper_keys: set[str]
) -> list[dict[str, Any]]:
    """The rows of the runs a manuscript row shows on one split: the run, or with several seeds an aggregate row
    followed by each seed's."""
    if len(runs) == 1:
        return [_run_row(runs[0], mrow, human, keys, paper_keys, shown=True, others=others)]
    seeds = [_run_row(r, mrow, human, keys, paper_keys, shown=False) for r in runs]
    for seed in seeds:
        seed["n_seeds"] = len(seeds)
    return [_aggregate_row(seeds, keys, others), *seeds]


def _status_row(
    task: str,
    human: bool,
    group: str,
    key: str,
    mrow: Row,
    unfinished: Sequence[Unfinished],
    keys: Sequence[str],
    paper_keys: set[str],
) -> dict[str, Any]:
    """A manuscript row without a finished run in its group: what became of the latest folder of it, if any."""
    tried = [u for u in unfinished if u.model == key]
    latest = max(tried, key=lambda u: u.changed_at) if tried else None
    return {
        "task": task,
        "domain": HUMAN if human else PORCINE,
        "data_source": group,
        "model": key,
        "status": latest.status if latest else NOT_RUN,
        "shown": True,
        "others": 0,
        **_metric_cells(keys, paper_keys, {}, {}, mrow.human if human else mrow.metrics),
        **_paper_cells(mrow, human),
        "run_dir": display_path(latest.path) if latest else "",
        "notes": latest.note if latest else "",
    }


def _groups(runs: Sequence[Run], pending: Sequence[Unfinished]) -> list[tuple[str, list[Run], list[Unfinished]]]:
    """Runs by data source in the order of `DataSource.order`, each with the unfinished runs of its dataset (named
    in the first such group only); a dataset with unfinished runs only gets a group of its own, and with nothing
    at all one empty group stands for the side."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.source.order):
        groups.setdefault(run.source.group, []).append(run)
    out, claimed = [], set()
    for group, members in groups.items():
        names = {r.source.name for r in members}
        mine = [u for u in pending if u.data_name in names and id(u) not in claimed]
        claimed |= {id(u) for u in mine}
        out.append((group, members, mine))
    rest = [u for u in pending if id(u) not in claimed]
    for name in dict.fromkeys(u.data_name for u in rest):
        out.append((name or "data not recorded", [], [u for u in rest if u.data_name == name]))
    return out or [("", [], [])]


def comparison_table(collection: Collection, manuscript: Manuscript) -> pd.DataFrame:
    """The table (see the module's docstring). `attrs` holds, per task, the metric keys of its columns in order
    (`metrics`) and the segmentation class names (`classes`)."""
    rows: list[dict[str, Any]] = []
    attrs: dict[str, dict[str, list[str]]] = {"metrics": {}, "classes": {}}
    for task, table in manuscript.tasks.items():
        runs = collection.by_task(task)
        keys = attrs["metrics"][task] = metric_keys(task, runs)
        attrs["classes"][task] = class_names(runs)
        paper_keys = _paper_keys(table)
        for human in (False, True):
            side = [r for r in runs if (r.domain == HUMAN) == human]
            if human and not table.reported_human:  # no paper column to compare with: listed, not shown
                rows += [_run_row(r, table.rows.get(r.model), human, keys, paper_keys, shown=False) for r in side]
                continue
            for group, members, pending in _groups(side, collection.unfinished_of(task, human)):
                for key, mrow in table.rows.items():
                    mine = [r for r in members if r.model == key]
                    for split in dict.fromkeys([RELEASE_SPLIT, *splits_of(mine)]):
                        chosen, others = pick_seeds(mine, key, split)
                        if not chosen:  # only the release's split reads "not run": a split file is a row once run
                            rows.append(_status_row(task, human, group, key, mrow, pending, keys, paper_keys))
                            continue
                        rows += _shown_rows(chosen, others, mrow, human, keys, paper_keys)
                        rows += [
                            _run_row(r, mrow, human, keys, paper_keys, shown=False)
                            for r in mine
                            if r.split_id == split and all(r is not c for c in chosen)
                        ]
                rows += [
                    _run_row(r, None, human, keys, paper_keys, shown=True)
                    for r in sorted(members, key=lambda r: r.model_name)
                    if r.model not in table.rows
                ]
    metric_columns = [c for task, keys in attrs["metrics"].items() for c in _metric_columns(keys, manuscript, task)]
    columns = [*HEAD, *dict.fromkeys(metric_columns), *TAIL, *INTERNAL]
    frame = pd.DataFrame(rows, columns=columns, dtype=object)  # object: an int stays an int
    frame = frame.where(frame.notna(), None)  # and a missing cell is None, not NaN
    frame.attrs = attrs
    return frame


def _metric_columns(keys: Sequence[str], manuscript: Manuscript, task: str) -> list[str]:
    paper_keys = _paper_keys(manuscript.tasks[task]) if task in manuscript.tasks else set()
    out = []
    for key in keys:
        col = column(key)
        out += [col, f"{col}_ci_low", f"{col}_ci_high", f"{col}_sd"]
        out += [f"paper_{col}", f"{col}_diff"] if key in paper_keys else []
    return out


def csv_columns(table: pd.DataFrame, task: str, manuscript: Manuscript) -> list[str]:
    """A task's CSV columns: the table's, with only that task's metrics."""
    metric_columns = _metric_columns(table.attrs["metrics"].get(task, []), manuscript, task)
    return [c for c in [*HEAD, *metric_columns, *TAIL] if c not in NOT_IN_CSV]


def runs_only(table: pd.DataFrame) -> pd.DataFrame:
    """The table's rows of finished runs: neither a manuscript row without one nor an aggregate over seeds."""
    return table[(table["status"] == FINISHED) & (table["seed"] != AGGREGATE)]


def write_csv(table: pd.DataFrame, task: str, manuscript: Manuscript, path: Path) -> Path:
    """`<task>.csv`: one row per finished run of the task, in the table's order (a hidden run after the one its
    manuscript row shows), and before a row's seeds the aggregate line over them (`seed` = mean)."""
    runs = table[(table["task"] == task) & (table["status"] == FINISHED)]
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.reindex(columns=csv_columns(table, task, manuscript)).to_csv(path, index=False, na_rep="")
    return path
