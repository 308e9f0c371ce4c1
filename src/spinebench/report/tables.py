"""The report's tables: `results/detection.csv`, `results/segmentation.csv` (one row per run) and
`results/README.md` (per task, one row per manuscript model: paper, ours [95% CI], difference).

Conventions: difference = ours - paper; a manuscript row with no finished run stays in the table as "not run";
runs on the phantom get their own tables whose header says so, and are never shown as a reproduction. When a
data source holds several finished runs of one manuscript row, the table shows the most recently finished one;
the CSVs list them all.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spinebench.report.bootstrap import DETECTION_METRICS, flat_segmentation_metrics
from spinebench.report.collect import Collection, Run, pick
from spinebench.report.manuscript import Manuscript, TaskTable

SEGMENTATION_EXTRA = ("foreground_mIoU", "foreground_mean_dice")
NOT_RUN = "not run"


# ---------------------------------------------------------------- helpers
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def fmt(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_diff(ours: Any, paper: Any, digits: int = 3) -> str:
    o, p = _num(ours), _num(paper)
    return "" if o is None or p is None else f"{o - p:+.{digits}f}"


def fmt_ci(value: Any, interval: Any, digits: int = 3) -> str:
    if _num(value) is None:
        return "-"
    if interval is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _slug(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_")


def run_metric_values(run: Run) -> dict[str, Any]:
    """Flat metric dict of a run: detection keys as is, segmentation per-class as 'dice/<class>'."""
    return flat_segmentation_metrics(run.values) if run.task == "segmentation" else dict(run.values)


def metric_keys(task: str, runs: Sequence[Run], class_names: Sequence[str]) -> list[str]:
    if task == "detection":
        keys = list(DETECTION_METRICS)
    else:
        keys = ["mIoU", "mean_dice", "cord_iou", "cord_dice", *SEGMENTATION_EXTRA]
        keys += [f"dice/{c}" for c in class_names] + [f"iou/{c}" for c in class_names]
    for run in runs:  # anything else a run reported numerically, after the known ones
        for k, v in run_metric_values(run).items():
            if k not in keys and _num(v) is not None and k != "n_images":
                keys.append(k)
    return keys


def class_names_of(runs: Sequence[Run]) -> list[str]:
    for run in runs:
        names = list((run.values.get("dice_per_class") or {}).keys())
        if names:
            return names
    from spinebench.classes import SEGMENTATION_CLASSES

    return list(SEGMENTATION_CLASSES)


def paper_values(manuscript: Manuscript | None, run: Run) -> dict[str, float]:
    """The manuscript numbers this run is compared with (the human side for a human-domain run)."""
    if manuscript is None or run.task not in manuscript.tasks:
        return {}
    row = manuscript.row(run.task, run.model)
    if row is None:
        return {}
    return dict(row.human if run.domain == "human" else row.metrics)


# ---------------------------------------------------------------- CSV
def csv_rows(runs: Sequence[Run], task: str, manuscript: Manuscript | None) -> list[dict[str, Any]]:
    names = class_names_of(runs)
    keys = metric_keys(task, runs, names)
    table = manuscript.tasks.get(task) if manuscript else None
    rows = []
    for run in runs:
        values = run_metric_values(run)
        paper = paper_values(manuscript, run)
        mrow = manuscript.row(task, run.model) if manuscript and table else None
        row: dict[str, Any] = {
            "model": run.model, "model_name": run.model_name, "paper_name": mrow.name if mrow else "",
            "split": run.metrics.get("split", ""), "test_images": run.metrics.get("test_images"),
            "domain": run.domain, "zero_shot": run.is_zero_shot,
            "checkpoint_run": run.metrics.get("checkpoint_run") or "",
            "data_source": run.data_group, "data_kind": run.data_kind, "data_label": run.data_label,
            "data_stamp": json.dumps(run.data.get("stamp") or {k: v for k, v in run.data.items() if k != "label"},
                                     sort_keys=True),
        }
        for key in keys:
            col = _slug(key)
            row[col] = values.get(key)
            interval = run.intervals.get(key)
            row[f"{col}_ci_low"] = interval.low if interval else None
            row[f"{col}_ci_high"] = interval.high if interval else None
            if key in paper:  # timm-style: the baseline and the difference beside our number
                row[f"paper_{col}"] = paper[key]
                ours = _num(values.get(key))
                row[f"{col}_diff"] = None if ours is None else ours - paper[key]
        raw_load = run.metrics.get("load") if isinstance(run.metrics.get("load"), dict) else {}
        row.update({
            "params": run.metrics.get("params"), "paper_params": mrow.params if mrow else None,
            "fps_batch1": run.metrics.get("fps_batch1"), "processor": run.processor,
            "load_cpu": raw_load.get("cpu"), "load_gpu": raw_load.get("gpu"),
        })
        for proc in ("cpu", "gpu"):  # implantability where measured, beside the paper's
            measured = run.speeds.get(proc) or {}
            paper_speed = mrow.speed.get(proc) if mrow else None
            row.update({
                f"fps_{proc}": measured.get("fps"), f"load_{proc}_measured": measured.get("load"),
                f"implantability_{proc}": run.implantability.get(proc),
                f"paper_fps_{proc}": paper_speed.fps if paper_speed else None,
                f"paper_load_{proc}": paper_speed.load if paper_speed else None,
                f"paper_implantability_{proc}": paper_speed.implantability if paper_speed else None,
            })
        row.update({
            "epochs": run.metrics.get("epochs"), "paper_epochs": (mrow.training.get("epochs") if mrow else None),
            "input_size": json.dumps(run.metrics.get("input_size")), "paper_input_size": mrow.input_size if mrow else None,
            "pretrained": run.metrics.get("pretrained"), "pretrained_source": run.metrics.get("pretrained_source") or "",
            "train_images_per_s": run.metrics.get("train_images_per_s"), "wall_time_s": run.metrics.get("wall_time_s"),
            "hardware": run.hardware, "test_precision": run.metrics.get("test_precision") or "",  # "": not recorded
            "commit": run.commit, "config": run.config,
            "config_file": str(run.path / "config.yaml") if (run.path / "config.yaml").is_file() else "",
            "run_dir": str(run.path),
        })
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    if not columns:
        columns = ["model", "data_source", "run_dir"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


# ---------------------------------------------------------------- Markdown
def _groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Runs by data source, real data first."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.data_group, []).append(run)
    return sorted(groups.items(), key=lambda kv: (kv[1][0].is_phantom, kv[0]))


def _banner(runs: Sequence[Run]) -> list[str]:
    first = runs[0]
    if first.is_phantom:
        return [f"> **PHANTOM DATA** - {first.data_label}.",
                "> These rows exercise the pipeline on synthetic images; they are **not a reproduction of the paper's "
                "figures**, and the differences are shown only to orient the reader.", ""]
    if first.data.get("verified") is False:
        why = first.data.get("note")
        return [f"> Data: {first.data_label} (not verified against the release manifest{f': {why}' if why else ''}).", ""]
    return [f"> Data: {first.data_label}.", ""]


def _row_name(mrow: Any, run: Run | None, others: int) -> str:
    name = mrow.name
    if run is not None and run.model_name and run.model_name != run.model:
        name += f" (ours: `{run.model_name}`)"
    if others:
        name += f" (+{others} older run{'s' if others > 1 else ''} in the CSV)"
    return name


def _metric_table(table: TaskTable, runs: Sequence[Run], metrics: Sequence[str], human: bool,
                  label_ours: str) -> list[str]:
    header = ["model"]
    for m in metrics:
        header += [f"{table.label(m)} paper", f"{table.label(m)} {label_ours} [95% CI]", "diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, mrow in table.rows.items():
        run, others = pick(runs, key)
        paper = mrow.human if human else mrow.metrics
        cells = [_row_name(mrow, run, others)]
        for m in metrics:
            if run is None:
                cells += [fmt(paper.get(m)), NOT_RUN, ""]
            else:
                ours = run.values.get(m)
                cells += [fmt(paper.get(m)), fmt_ci(ours, run.intervals.get(m)), fmt_diff(ours, paper.get(m))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _other_runs(table: TaskTable, runs: Sequence[Run], metrics: Sequence[str]) -> list[str]:
    """Finished runs of a model that has no manuscript row (e.g. yolov8n): listed, never dropped."""
    others = [r for r in runs if r.model not in table.rows]
    if not others:
        return []
    header = ["model (no manuscript row)", *[f"{table.label(m)} [95% CI]" for m in metrics], "run folder"]
    lines = ["Runs of models without a manuscript row:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in sorted(others, key=lambda r: r.model_name or r.model):
        cells = [f"`{run.model_name or run.model}`", *[fmt_ci(run.values.get(m), run.intervals.get(m)) for m in metrics],
                 f"`{display_path(run.path)}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _speed_table(table: TaskTable, runs: Sequence[Run]) -> list[str]:
    lines = ["| model | params paper | params ours | CPU paper: FPS / load / impl. | CPU ours | GPU paper: FPS / load / impl. "
             "| GPU ours | our hardware |", "|" + "---|" * 8]
    for key, mrow in table.rows.items():
        run, _ = pick(runs, key)
        cells = [_row_name(mrow, run, 0), f"{mrow.params:,}",
                 "-" if run is None or run.metrics.get("params") is None else f"{int(run.metrics['params']):,}"]
        hardware = []
        for proc in ("cpu", "gpu"):
            s = mrow.speed.get(proc)
            cells.append("-" if s is None else f"{s.fps:.2f} / {s.load * 100:.0f}% / {s.implantability:.3f}")
            measured = run.speeds.get(proc) if run is not None else None
            if run is None:
                cells.append(NOT_RUN)
            elif measured is None or _num(measured.get("fps")) is None:
                cells.append("not measured")
            else:
                load = _num(measured.get("load"))
                cells.append(f"{fmt(measured['fps'], 2)} / {'-' if load is None else f'{load * 100:.0f}%'} / "
                             f"{fmt(run.implantability.get(proc))}")
                hardware.append(str(measured.get("hardware")))
        cells.append(", ".join(dict.fromkeys(hardware)) or ("" if run is None else run.hardware))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def display_path(path: Path) -> str:
    """A run folder relative to the working directory when it lies below it (how a reader finds it), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _trace_table(table: TaskTable, runs: Sequence[Run]) -> list[str]:
    lines = ["| model | run folder | config | hardware | commit | epochs (paper) | input size (paper) | pretrained |",
             "|" + "---|" * 8]
    for key, mrow in table.rows.items():
        run, _ = pick(runs, key)
        if run is None:
            continue
        folder = display_path(run.path)
        pretrained = "no" if not run.metrics.get("pretrained") else f"yes ({run.metrics.get('pretrained_source') or '?'})"
        lines.append("| " + " | ".join([
            _row_name(mrow, run, 0), f"`{folder}`", f"`{run.config or '-'}`", run.hardware, f"`{run.commit}`",
            f"{run.metrics.get('epochs', '-')} ({mrow.training.get('epochs', '-')})",
            f"{json.dumps(run.metrics.get('input_size'))} ({mrow.input_size})", pretrained]) + " |")
    return lines


def _per_class_table(table: TaskTable, runs: Sequence[Run], names: Sequence[str]) -> list[str]:
    lines = ["| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for key, mrow in table.rows.items():
        run, _ = pick(runs, key)
        if run is None:
            lines.append("| " + " | ".join([mrow.name, NOT_RUN] + [""] * (len(names) - 1)) + " |")
            continue
        dice = run.values.get("dice_per_class") or {}
        lines.append("| " + " | ".join([_row_name(mrow, run, 0)] + [fmt_ci(dice.get(n), run.intervals.get(f"dice/{n}"))
                                                      for n in names]) + " |")
    return lines


def _discrepancy_note(manuscript: Manuscript) -> str:
    known = manuscript.implantability.get("known_discrepancies") or []
    if not known:
        return ""
    items = ", ".join(f"{d['row']} {d['processor'].upper()} (printed {d['printed']}, formula {d['recomputed']})" for d in known)
    return (f" The formula re-derives the paper's printed scores within {manuscript.implantability.get('tolerance')} "
            f"except {items}.")


def render_markdown(collection: Collection, manuscript: Manuscript, plots: Sequence[Path] = (),
                    out: Path | None = None, n_resamples: int = 1000, seed: int = 0,
                    ci_notes: Sequence[str] = ()) -> str:
    lines = ["# Results: spinebench vs the manuscript", "",
             f"Generated by `spinebench report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from "
             f"{len(collection.runs)} finished run(s); never edited by hand. Manuscript numbers: "
             f"`benchmarks/manuscript.yaml` ({manuscript.short_citation}).", "",
             f"*ours [95% CI]*: bootstrap over the test images ({n_resamples} resamples, seed {seed}); "
             "*diff* = ours - paper. A row without a finished run (no `metrics.json`) reads **not run**. "
             "Implantability = A/2 + (FPS/FPS_best)/4 + (1 - load)/4 with FPS_best taken among the runs of the same "
             "table on the same hardware (see `spinebench.report.implantability`)." + _discrepancy_note(manuscript), ""]
    for task, table in manuscript.tasks.items():
        runs = collection.by_task(task)
        porcine = [r for r in runs if r.domain != "human"]
        human = [r for r in runs if r.domain == "human"]
        title = task.capitalize()
        lines += [f"## {title}", "", f"Paper: {table.source}.", ""]
        groups = _groups(porcine) or [("", [])]
        for group, group_runs in groups:
            kind = "PHANTOM (synthetic) - not a reproduction" if group_runs and group_runs[0].is_phantom else (
                "real data" if group_runs else "no finished runs yet")
            lines += [f"### {title} - {group or 'no runs'} - {kind}", ""]
            if group_runs:
                lines += _banner(group_runs)
            label_ours = "ours (PHANTOM)" if group_runs and group_runs[0].is_phantom else "ours"
            lines += _metric_table(table, group_runs, table.reported, False, label_ours) + [""]
            if task == "segmentation":
                names = class_names_of(group_runs)
                lines += [f"Per-class Dice, {label_ours} [95% CI] (the paper reports the spinal cord only, "
                          "as cord Dice above):", ""]
                lines += _per_class_table(table, group_runs, names) + [""]
            lines += ["Speed and implantability:", ""] + _speed_table(table, group_runs) + [""]
            if group_runs:
                lines += ["Traceability (the run behind each row):", ""]
                lines += _trace_table(table, group_runs) + [""]
            lines += _other_runs(table, group_runs, table.reported)
        if table.reported_human:
            for group, group_runs in (_groups(human) or [("", [])]):
                kind = ("PHANTOM (synthetic human-like) - not a reproduction" if group_runs and group_runs[0].is_phantom
                        else "human data" if group_runs else "no zero-shot run yet")
                lines += [f"### {title} - zero-shot on human - {group or 'no runs'} - {kind}", ""]
                if group_runs:
                    lines += _banner(group_runs)
                label_ours = "ours (PHANTOM)" if group_runs and group_runs[0].is_phantom else "ours"
                lines += _metric_table(table, group_runs, table.reported_human, True, label_ours) + [""]
                if group_runs:
                    lines += _trace_table(table, group_runs) + [""]
                lines += _other_runs(table, group_runs, table.reported_human)
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            rel = plot.name if out is None else str(plot.resolve().relative_to(out.parent.resolve()))
            lines += [f"![{plot.stem}]({rel})", ""]
    skipped = list(collection.notes) + list(ci_notes)
    if skipped:
        lines += ["## Skipped and notes", ""] + [f"- {note}" for note in skipped] + [""]
    c = manuscript.citation
    if c.get("bibtex"):
        lines += ["## Citation", "", "```bibtex", c["bibtex"].rstrip(), "```", ""]
    return "\n".join(lines)


def write_tables(collection: Collection, manuscript: Manuscript, out: Path, plots: Sequence[Path] = (),
                 n_resamples: int = 1000, seed: int = 0, ci_notes: Sequence[str] = ()) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in ("detection", "segmentation"):
        written.append(write_csv(csv_rows(collection.by_task(task), task, manuscript), out / f"{task}.csv"))
    readme = out / "README.md"
    readme.write_text(render_markdown(collection, manuscript, plots, readme, n_resamples, seed, ci_notes))
    written.append(readme)
    return written


def status_markdown(collection: Collection, manuscript: Manuscript) -> str:
    """A short table for the top-level README: every manuscript row and which data sources have a finished run."""
    lines = ["| task | model | paper key | status |", "|---|---|---|---|"]
    for task, table in manuscript.tasks.items():
        runs = collection.by_task(task)
        for key, mrow in table.rows.items():
            sources = sorted({(r.data_group + (" zero-shot" if r.domain == "human" else "")) for r in runs if r.model == key})
            lines.append(f"| {task} | {mrow.name} | `{key}` | {'finished: ' + ', '.join(sources) if sources else NOT_RUN} |")
    return "\n".join(lines) + "\n"
