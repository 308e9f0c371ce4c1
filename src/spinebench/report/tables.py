"""The report's tables: `results/detection.csv`, `results/segmentation.csv` (one row per run) and
`results/README.md` (per task, one row per manuscript model: paper, ours [95% CI], difference).

Conventions: difference = ours - paper; a manuscript row with no finished run stays in the table as "not run"
("unfinished" or "failed: <error>" when a run folder of it exists without metrics.json); runs on the phantom get
their own tables whose header says so, and are never shown as a reproduction; real data not verified against the
release manifest, and data of unknown source, are grouped and labelled apart from verified real data. When a
data source holds several finished runs of one manuscript row, the table shows the one `pick` chooses; the CSVs
list them all.
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
from spinebench.report.collect import Collection, Run, Unfinished, pick, same_commit, source_kind
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
            "test_split_images": run.test_split_size, "partial_test": run.partial_test,
            "domain": run.domain, "zero_shot": run.is_zero_shot,
            "checkpoint_run": run.metrics.get("checkpoint_run") or "",
            "data_source": run.data_group, "data_kind": run.data_kind, "data_label": run.data_label,
            "data_verified": run.data.get("verified") if run.data.get("kind") == "real" else None,
            "data_unverified_reason": run.unverified_reason,
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
                # the paper's score rests on porcine accuracy, and a zero-shot run is not scored: both empty there
                f"paper_implantability_{proc}": paper_speed.implantability if paper_speed and run.domain != "human"
                else None,
            })
        row.update({
            "epochs": run.metrics.get("epochs"), "paper_epochs": (mrow.training.get("epochs") if mrow else None),
            "input_size": json.dumps(run.metrics.get("input_size")), "paper_input_size": mrow.input_size if mrow else None,
            "pretrained": run.metrics.get("pretrained"), "pretrained_source": run.metrics.get("pretrained_source") or "",
            "train_images_per_s": run.metrics.get("train_images_per_s"), "wall_time_s": run.metrics.get("wall_time_s"),
            "hardware": run.hardware, "test_precision": run.metrics.get("test_precision") or "",  # "": not recorded
            "commit": run.commit, "config": run.config,
            # relative to the working directory when below it: a committed CSV names no machine's folders
            "config_file": display_path(run.path / "config.yaml") if (run.path / "config.yaml").is_file() else "",
            "run_dir": display_path(run.path),
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
    """Runs by data source: verified real data first, then unverified, then of unknown source, then phantoms."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.data_group, []).append(run)
    return sorted(groups.items(), key=lambda kv: (kv[1][0].is_phantom, kv[1][0].unknown_source, kv[1][0].unverified,
                                                  kv[0]))


def _group_kind(runs: Sequence[Run], human: bool = False) -> str:
    """A table heading's data kind, from every run of the group (not the first): any phantom, unknown or
    unverified run names the group so."""
    if not runs:
        return "no finished runs yet"
    kind = source_kind(runs)
    if kind == "phantom":
        return "PHANTOM (synthetic human-like) - not a reproduction" if human else "PHANTOM (synthetic) - not a reproduction"
    if kind == "unknown":
        return "unknown data source"
    return ("human data" if human else "real data") + (", UNVERIFIED" if kind == "unverified" else "")


def _banner(runs: Sequence[Run]) -> list[str]:
    """One line per distinct data label of the group's runs, with why it is unverified where it is."""
    if any(r.is_phantom for r in runs):
        labels = dict.fromkeys(r.data_label for r in runs if r.is_phantom)
        return [f"> **PHANTOM DATA** - {'; '.join(labels)}.",
                "> These rows exercise the pipeline on synthetic images; they are **not a reproduction of the paper's "
                "figures**, and the differences are shown only to orient the reader.", ""]
    lines = []
    for (label, reason), run in {(r.data_label, r.unverified_reason): r for r in runs}.items():
        if run.unknown_source:
            lines.append(f"> Data: {label}: **not known to be the Kumar et al. release**.")
        elif run.unverified:
            lines.append(f"> Data: {label} (real data, **UNVERIFIED**: not verified against the release manifest: "
                         f"{reason}).")
        else:
            lines.append(f"> Data: {label}.")
    return [*lines, ""]


def _row_name(mrow: Any, run: Run | None, others: int) -> str:
    name = mrow.name
    if run is not None and run.model_name and run.model_name != run.model:
        name += f" (ours: `{run.model_name}`)"
    if others:  # the hidden one may be newer (pick prefers the row's own model config): not "older"
        name += f" (+{others} other run{'s' if others > 1 else ''} in the CSV)"
    return name


def _absent(unfinished: Sequence[Unfinished], key: str) -> str:
    """What a row with no finished run reads: "not run", or what became of the latest run folder of it."""
    tried = [u for u in unfinished if u.model == key]
    if not tried:
        return NOT_RUN
    latest = max(tried, key=lambda u: _mtime(u.path))
    status = latest.status
    # an error's reason is at its end and a file's path at its start: the middle goes (the notes hold it whole)
    status = status if len(status) <= 120 else status[:50] + " ... " + status[-65:]
    return status.replace("|", "\\|")  # after the cut, which could keep a | of its own


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _metric_table(table: TaskTable, runs: Sequence[Run], metrics: Sequence[str], human: bool,
                  label_ours: str, unfinished: Sequence[Unfinished] = ()) -> list[str]:
    header = ["model"]
    for m in metrics:
        header += [f"{table.label(m)} paper", f"{table.label(m)} {label_ours} [95% CI]", "diff"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, mrow in table.rows.items():
        run, others = pick(runs, key)
        paper = mrow.human if human else mrow.metrics
        cells = [_row_name(mrow, run, others) + (f" **({run.partial_test})**" if run and run.partial_test else "")]
        for m in metrics:
            if run is None:
                cells += [fmt(paper.get(m)), _absent(unfinished, key), ""]
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


def _speed_table(table: TaskTable, runs: Sequence[Run], unfinished: Sequence[Unfinished] = ()) -> list[str]:
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
                cells.append(_absent(unfinished, key))
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


def _per_class_table(table: TaskTable, runs: Sequence[Run], names: Sequence[str],
                     unfinished: Sequence[Unfinished] = ()) -> list[str]:
    lines = ["| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for key, mrow in table.rows.items():
        run, _ = pick(runs, key)
        if run is None:
            lines.append("| " + " | ".join([mrow.name, _absent(unfinished, key)] + [""] * (len(names) - 1)) + " |")
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


def _with_unfinished(groups: list[tuple[str, list[Run]]],
                     pending: Sequence[Unfinished]) -> list[tuple[str, list[Run], list[Unfinished]]]:
    """Each group with the unfinished runs of its dataset; a dataset with unfinished runs only gets a group of its
    own, and with nothing at all one empty group stands for the task."""
    out, claimed = [], set()
    for group, runs in groups:
        names = {r.data.get("name") for r in runs}
        mine = [u for u in pending if u.data_name in names and id(u) not in claimed]  # one table each
        claimed |= {id(u) for u in mine}
        out.append((group, runs, mine))
    rest = [u for u in pending if id(u) not in claimed]
    for name in dict.fromkeys(u.data_name for u in rest):
        out.append((name or "data not recorded", [], [u for u in rest if u.data_name == name]))
    return out or [("", [], [])]


def commit_line(runs: Sequence[Run], checkout: str | None = None) -> str:
    """A warning when the runs come from several commits, or from another one than this checkout's ('' if not)."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.commit] = counts.get(run.commit, 0) + 1
    for short in sorted(counts, key=len):  # a hash given in short and in full: one commit, not two
        longer = [c for c in counts if c != short and len(c) > len(short) and same_commit(c, short)
                  and c.endswith("-dirty") == short.endswith("-dirty")]
        if longer:
            counts[longer[0]] += counts.pop(short)
    if not counts:
        return ""
    listed = ", ".join(f"`{c}` ({n} run{'s' if n > 1 else ''})" for c, n in sorted(counts.items()))
    dirty = " (-dirty: made with uncommitted changes)" if any(c.endswith("-dirty") for c in counts) else ""
    # the checkout's own uncommitted changes do not count (writing this report into a tracked results/ folder
    # makes it dirty): only another commit does
    other = checkout is not None and any(not same_commit(c, checkout) for c in counts)
    if len(counts) == 1 and not other and not dirty:
        return ""
    line = f"runs from {len(counts)} commit{'s' if len(counts) > 1 else ''}: {listed}{dirty}"
    return line + (f"; this checkout is `{checkout}`" if other else "")


def render_markdown(collection: Collection, manuscript: Manuscript, plots: Sequence[Path] = (),
                    out: Path | None = None, n_resamples: int = 1000, seed: int = 0,
                    ci_notes: Sequence[str] = (), checkout: str | None = None) -> str:
    lines = ["# Results: spinebench vs the manuscript", "",
             f"Generated by `spinebench report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from "
             f"{len(collection.runs)} finished run(s); never edited by hand. Manuscript numbers: "
             f"`benchmarks/manuscript.yaml` ({manuscript.short_citation}).", "",
             f"*ours [95% CI]*: bootstrap over the test images ({n_resamples} resamples, seed {seed}); "
             "*diff* = ours - paper. A row without a finished run (no `metrics.json`) reads **not run**, or "
             "**unfinished** / **failed: <error>** when a run folder of it exists (see the notes). "
             "Implantability = A/2 + (FPS/FPS_best)/4 + (1 - load)/4 with FPS_best taken among the runs of the same "
             "table on the same hardware (see `spinebench.report.implantability`)." + _discrepancy_note(manuscript), ""]
    commits = commit_line(collection.runs, checkout)
    if commits:
        lines += [f"> **Code versions differ**: {commits}.", ""]
    for task, table in manuscript.tasks.items():
        runs = collection.by_task(task)
        porcine = [r for r in runs if r.domain != "human"]
        human = [r for r in runs if r.domain == "human"]
        title = task.capitalize()
        lines += [f"## {title}", "", f"Paper: {table.source}.", ""]
        groups = _with_unfinished(_groups(porcine), collection.unfinished_of(task, human=False))
        for group, group_runs, pending in groups:
            lines += [f"### {title} - {group or 'no runs'} - {_group_kind(group_runs)}", ""]
            if group_runs:
                lines += _banner(group_runs)
            label_ours = "ours (PHANTOM)" if any(r.is_phantom for r in group_runs) else "ours"
            lines += _metric_table(table, group_runs, table.reported, False, label_ours, pending) + [""]
            if task == "segmentation":
                names = class_names_of(group_runs)
                lines += [f"Per-class Dice, {label_ours} [95% CI] (the paper reports the spinal cord only, "
                          "as cord Dice above):", ""]
                lines += _per_class_table(table, group_runs, names, pending) + [""]
            lines += ["Speed and implantability:", ""] + _speed_table(table, group_runs, pending) + [""]
            if group_runs:
                lines += ["Traceability (the run behind each row):", ""]
                lines += _trace_table(table, group_runs) + [""]
            lines += _other_runs(table, group_runs, table.reported)
        if table.reported_human:
            for group, group_runs, pending in _with_unfinished(_groups(human), collection.unfinished_of(task, human=True)):
                kind = _group_kind(group_runs, human=True) if group_runs else "no zero-shot run yet"
                lines += [f"### {title} - zero-shot on human - {group or 'no runs'} - {kind}", ""]
                if group_runs:
                    lines += _banner(group_runs)
                label_ours = "ours (PHANTOM)" if any(r.is_phantom for r in group_runs) else "ours"
                lines += _metric_table(table, group_runs, table.reported_human, True, label_ours, pending) + [""]
                if group_runs:
                    lines += ["Traceability (the run behind each row):", ""]
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
                 n_resamples: int = 1000, seed: int = 0, ci_notes: Sequence[str] = (),
                 checkout: str | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in ("detection", "segmentation"):
        written.append(write_csv(csv_rows(collection.by_task(task), task, manuscript), out / f"{task}.csv"))
    readme = out / "README.md"
    readme.write_text(render_markdown(collection, manuscript, plots, readme, n_resamples, seed, ci_notes, checkout))
    written.append(readme)
    return written


def status_markdown(collection: Collection, manuscript: Manuscript) -> str:
    """A short table for the top-level README: every manuscript row and which data sources have a finished run."""
    lines = ["| task | model | paper key | status |", "|---|---|---|---|"]
    for task, table in manuscript.tasks.items():
        runs = collection.by_task(task)
        for key, mrow in table.rows.items():
            sources = sorted({(r.data_group + (" zero-shot" if r.domain == "human" else "")) for r in runs if r.model == key})
            tried = [u for u in collection.unfinished if u.task == task]
            lines.append(f"| {task} | {mrow.name} | `{key}` | "
                         f"{'finished: ' + ', '.join(sources) if sources else _absent(tried, key)} |")
    return "\n".join(lines) + "\n"
