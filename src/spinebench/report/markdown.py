"""The comparison table rendered as results/README.md: per task and data source, the metrics (paper, ours [95%
CI], difference), per-class Dice, speed and implantability (eager, and the exported model's on the CPU), the run
behind each row, and the runs of models without a manuscript row; then plots, notes and the citation.

Each Markdown table is a view of the comparison table: a list of (header, cell) pairs, rendered by one function.
A phantom's tables say PHANTOM in their heading, banner and column headers, so no reader takes them for a
reproduction; a cell is escaped for the table it sits in. A row that averages seeds reads `mean ± sd (n seeds)`
where a run reads `value [95% CI]`; a row trained on a split file says "re-split: <file>" in its model cell, and
the traceability table then names the file. A report without either reads as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from spinebench.report.collect import same_commit
from spinebench.report.datasource import DataSource
from spinebench.report.manuscript import Manuscript, TaskTable
from spinebench.report.tables import AGGREGATE, FINISHED, HUMAN, column, number, runs_only

Row = dict[str, Any]
View = list[tuple[str, Callable[[Row], str]]]
STATUS_WIDTH = 120  # a longer status is cut in its middle (its notes entry holds it whole)


# ---------------------------------------------------------------- cells
def fmt(value: Any, digits: int = 3) -> str:
    v = number(value)
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_ci(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    if number(value) is None:
        return "-"
    if number(low) is None or number(high) is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_diff(value: Any, digits: int = 3) -> str:
    v = number(value)
    return "" if v is None else f"{v:+.{digits}f}"


def status_cell(status: str) -> str:
    """A row's status: an error's reason is at its end and a file's path at its start, so the middle goes."""
    return status if len(status) <= STATUS_WIDTH else status[:50] + " ... " + status[-65:]


def _finished(row: Row) -> bool:
    return row["status"] == FINISHED


def _aggregate(row: Row) -> bool:
    return row.get("seed") == AGGREGATE


def fmt_seeds(r: Row, col: str, digits: int = 3) -> str:
    """An aggregate row's value: 'mean ± sd (n seeds)', n the seeds that gave the metric."""
    if number(r[col]) is None:
        return "-"
    n = (r.get("seed_counts") or {}).get(col, r["n_seeds"])
    spread = "" if number(r.get(f"{col}_sd")) is None else f" ± {fmt(r[f'{col}_sd'], digits)}"
    return f"{fmt(r[col], digits)}{spread} ({n} seed{'s' if n != 1 else ''})"


def name_cell(row: Row, others: bool = False, partial: bool = False) -> str:
    """The manuscript row's name, with the model config behind it when it is a variant (unet_light under U-Net),
    the count of runs the CSV adds, and a partial test split."""
    name = row["paper_name"]
    if _finished(row) and row["model_name"] and row["model_name"] != row["model"]:
        name += f" (ours: `{row['model_name']}`)"
    if _finished(row) and row.get("splits"):
        name += f" (re-split: {row['splits_name']})"
    if others and row["others"]:  # the hidden one may be newer (pick prefers the row's own config): not "older"
        name += f" (+{row['others']} other run{'s' if row['others'] > 1 else ''} in the CSV)"
    if partial and row.get("partial_test"):
        name += f" **({row['partial_test']})**"
    steps = number(row.get("smoke_steps")) if _finished(row) else None
    if steps:
        name += f" **(smoke run, {steps:.0f} step{'s' if steps != 1 else ''}: a pipeline check, not a score)**"
    return name


def scored(r: Row, col: str) -> str:
    """Our value of column `col` with its interval (over seeds: mean ± sd); a smoke run's says so (its row's name
    says what that is)."""
    value = fmt_seeds(r, col) if _aggregate(r) else fmt_ci(r[col], r[f"{col}_ci_low"], r[f"{col}_ci_high"])
    return f"{value} (smoke run)" if number(r.get("smoke_steps")) else value


def ours_cell(metric: str) -> Callable[[Row], str]:
    col = column(metric)
    return lambda r: scored(r, col) if _finished(r) else status_cell(r["status"])


def speed_cell(proc: str) -> Callable[[Row], str]:
    def cell(r: Row) -> str:
        if not _finished(r):
            return status_cell(r["status"])
        if number(r[f"fps_{proc}"]) is None:
            return "not measured"
        load = number(r[f"load_{proc}_measured"])
        return (
            f"{fmt(r[f'fps_{proc}'], 2)} / {'-' if load is None else f'{load * 100:.0f}%'} / "
            f"{fmt(r[f'implantability_{proc}'])}"
        )

    return cell


def exported_cell(r: Row) -> str:
    """The run's exported model on the CPU (onnxruntime): FPS / implantability, '-' without a passed export."""
    fps = number(r.get("fps_cpu_exported")) if _finished(r) else None
    return "-" if fps is None else f"{fps:.2f} / {fmt(r['implantability_cpu_exported'])}"


EXPORTED_NOTE = (
    "*CPU exported (ORT)*: the run's `export/model.onnx` timed batch-1 through onnxruntime by `spinebench export` "
    "(`export/speed.json`; shown only when `export/parity.json` passed). Its implantability is a second CPU score, "
    "not comparable with the eager one: FPS_best is the fastest exported FPS among this table's runs on the same "
    "CPU and threads, and the load is speed.json's own, else the run's eager CPU load on the same CPU and threads "
    "(`load_cpu_exported_from` in the CSV)."
)


def paper_speed_cell(proc: str) -> Callable[[Row], str]:
    def cell(r: Row) -> str:
        fps, load, score = (number(r[f"paper_{k}_{proc}"]) for k in ("fps", "load", "implantability"))
        return "-" if fps is None else f"{fps:.2f} / {load * 100:.0f}% / {fmt(score)}"

    return cell


def hardware_cell(r: Row) -> str:
    measured = [r[f"hardware_{p}"] for p in ("cpu", "gpu") if r[f"hardware_{p}"]]
    return ", ".join(dict.fromkeys(map(str, measured))) or (r["hardware"] if _finished(r) else "")


def _count(value: Any) -> str:
    v = number(value)
    return "-" if v is None else f"{int(v):,}"


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------- views
def metric_view(table: TaskTable, metrics: Sequence[str], ours: str) -> View:
    view: View = [("model", lambda r: name_cell(r, others=True, partial=True))]
    for m in metrics:
        col = column(m)
        view += [
            (f"{table.label(m)} paper", lambda r, c=col: fmt(r[f"paper_{c}"])),
            (f"{table.label(m)} {ours} [95% CI]", ours_cell(m)),
            ("diff", lambda r, c=col: fmt_diff(r[f"{c}_diff"]) if _finished(r) else ""),
        ]
    return view


def per_class_view(names: Sequence[str]) -> View:
    view: View = [("model", name_cell)]
    for i, name in enumerate(names):
        col = column(f"dice/{name}")
        view.append(
            (
                name,
                lambda r, c=col, first=i == 0: (
                    scored(r, c) if _finished(r) else status_cell(r["status"]) if first else ""
                ),
            )
        )
    return view


SPEED_VIEW: View = [
    ("model", name_cell),
    ("params paper", lambda r: _count(r["paper_params"])),
    ("params ours", lambda r: _count(r["params"])),
    ("CPU paper: FPS / load / impl.", paper_speed_cell("cpu")),
    ("CPU ours", speed_cell("cpu")),
    ("CPU exported (ORT): FPS / impl.", exported_cell),
    ("GPU paper: FPS / load / impl.", paper_speed_cell("gpu")),
    ("GPU ours", speed_cell("gpu")),
    ("our hardware", hardware_cell),
]

TRACE_VIEW: View = [
    ("model", name_cell),
    ("run folder", lambda r: f"`{r['run_dir']}`"),
    ("config", lambda r: f"`{r['config'] or '-'}`"),
    ("hardware", lambda r: r["hardware"]),
    ("commit", lambda r: f"`{r['commit']}`"),
    ("epochs (paper)", lambda r: f"{_or_dash(r['epochs'])} ({_or_dash(r['paper_epochs'])})"),
    ("input size (paper)", lambda r: f"{r['input_size']} ({r['paper_input_size']})"),
    ("pretrained", lambda r: "no" if not r["pretrained"] else f"yes ({r['pretrained_source'] or '?'})"),
]


SPLIT_COLUMN = ("split file (sha256)", lambda r: r["splits"] or "the release's")


def others_view(table: TaskTable, metrics: Sequence[str]) -> View:
    return [
        ("model (no manuscript row)", lambda r: f"`{r['model_name'] or r['model']}`"),
        *[(f"{table.label(m)} [95% CI]", ours_cell(m)) for m in metrics],
        ("run folder", lambda r: f"`{r['run_dir']}`"),
    ]


def inline(value: Any) -> str:
    """Text read from a run (a model or data label, an error) on one line: a newline in it would end a table row
    or start a heading of its own."""
    return " ".join(str(value).split())


def render_table(rows: Iterable[Row], view: View) -> list[str]:
    """A GitHub Markdown table; a cell is one line, and a | inside it is escaped."""
    lines = ["| " + " | ".join(header for header, _ in view) + " |", "|" + "---|" * len(view)]
    for row in rows:
        lines.append("| " + " | ".join(inline(cell(row)).replace("|", "\\|") for _, cell in view) + " |")
    return lines


# ---------------------------------------------------------------- sections
def banner(finished: Sequence[Row]) -> list[str]:
    """One line per distinct data label of a group's runs, with why it is unverified where it is."""
    sources: list[DataSource] = [r["source"] for r in finished]
    if any(s.is_phantom for s in sources):
        labels = dict.fromkeys(inline(s.label) for s in sources if s.is_phantom)
        return [
            f"> **PHANTOM DATA** - {'; '.join(labels)}.",
            (
                "> These rows exercise the pipeline on synthetic images; they are **not a reproduction of the paper's "
                "figures**, and the differences are shown only to orient the reader."
            ),
            "",
        ]
    lines = []
    for source in {(s.label, s.unverified_reason): s for s in sources}.values():
        if source.kind == "unknown":
            lines.append(f"> Data: {inline(source.label)}: **not known to be the Kumar et al. release**.")
        elif source.kind == "unverified":
            lines.append(
                f"> Data: {inline(source.label)} (real data, **UNVERIFIED**: not verified against the release "
                f"manifest: {inline(source.unverified_reason)})."
            )
        else:
            lines.append(f"> Data: {inline(source.label)}.")
    return [*lines, ""]


def group_section(table: TaskTable, rows: pd.DataFrame, human: bool, classes: Sequence[str]) -> list[str]:
    """One data source's tables, for one side (porcine, or zero-shot on human) of a task."""
    records = rows.to_dict("records")
    finished = [r for r in records if _finished(r)]
    shown = [r for r in records if r["shown"] and r["paper_name"]]
    rowless = [r for r in records if r["shown"] and not r["paper_name"]]
    source: DataSource | None = finished[0]["source"] if finished else None
    title, group = table.task.capitalize(), records[0]["data_source"] or "no runs"
    if source is not None:
        kind = source.heading(human)
    else:
        kind = "no zero-shot run yet" if human else "no finished runs yet"
    metrics = table.reported_human if human else table.reported
    ours = source.ours if source is not None else "ours"
    lines = [f"### {title} - {'zero-shot on human - ' if human else ''}{inline(group)} - {inline(kind)}", ""]
    if finished:
        lines += banner(finished)
    lines += render_table(shown, metric_view(table, metrics, ours)) + [""]
    if not human and table.task == "segmentation":
        lines += [f"Per-class Dice, {ours} [95% CI] (the paper reports the spinal cord only, as cord Dice above):", ""]
        lines += render_table(shown, per_class_view(classes)) + [""]
    if not human:
        lines += ["Speed and implantability:", ""] + render_table(shown, SPEED_VIEW) + [""]
        if any(number(r.get("fps_cpu_exported")) is not None for r in shown if _finished(r)):
            lines += [EXPORTED_NOTE, ""]
    if finished:
        traced = [r for r in shown if _finished(r)]
        resplit = any(r.get("splits") for r in traced)
        lines += ["Traceability (the run behind each row):", ""]
        lines += render_table(traced, [*TRACE_VIEW, SPLIT_COLUMN] if resplit else TRACE_VIEW) + [""]
    if rowless:
        lines += ["Runs of models without a manuscript row:", ""]
        lines += render_table(rowless, others_view(table, metrics)) + [""]
    return lines


def commit_line(commits: Iterable[str], checkout: str | None = None) -> str:
    """A warning when the runs come from several commits, or from another one than this checkout's ('' if not);
    `commits` holds one label per run."""
    counts: dict[str, int] = {}
    for commit in commits:
        counts[commit] = counts.get(commit, 0) + 1
    for short in sorted(counts, key=len):  # a hash given in short and in full: one commit, not two
        longer = [
            c
            for c in counts
            if c != short
            and len(c) > len(short)
            and same_commit(c, short)
            and c.endswith("-dirty") == short.endswith("-dirty")
        ]
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


def run_commits(table: pd.DataFrame) -> list[str]:
    """One commit label per finished run of the table (an aggregate row over seeds is not a run)."""
    return list(runs_only(table)["commit"])


def _seeds_and_splits_legend(table: pd.DataFrame) -> str:
    """What a row over seeds and a re-split row mean, only when the report has one ('' otherwise)."""
    text = ""
    if (table["seed"] == AGGREGATE).any():
        text += (
            " *mean ± sd (n seeds)*: a row whose run has other seeds of the same recipe (same model, data, config "
            "apart from the seed, split) shows the mean over them and their sample standard deviation (ddof=1); "
            "*diff* = mean - paper; speed and implantability are means over the seeds; each seed's value and 95% "
            "CI are in the CSV."
        )
    if table["splits"].astype(bool).any():
        text += (
            " *re-split*: trained and scored on a split file (`data.splits=`), not the release's own split; the "
            "traceability table names the file."
        )
    return text


def _discrepancy_note(manuscript: Manuscript) -> str:
    known = manuscript.implantability.get("known_discrepancies") or []
    if not known:
        return ""
    items = ", ".join(
        f"{d['row']} {d['processor'].upper()} (printed {d['printed']}, formula {d['recomputed']})" for d in known
    )
    return (
        f" The formula re-derives the paper's printed scores within {manuscript.implantability.get('tolerance')} "
        f"except {items}."
    )


def render_markdown(
    table: pd.DataFrame,
    manuscript: Manuscript,
    *,
    generated: str,
    notes: Sequence[str] = (),
    plots: Sequence[Path] = (),
    out: Path | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    checkout: str | None = None,
) -> str:
    """results/README.md; `generated` is the time it names, `out` the file (plots are linked relative to it)."""
    finished = len(runs_only(table))
    intro = (
        f"Generated by `spinebench report` on {generated} from {finished} finished run(s); never edited by "
        f"hand. Manuscript numbers: `benchmarks/manuscript.yaml` ({manuscript.short_citation})."
    )
    legend = (
        f"*ours [95% CI]*: bootstrap over the test images ({n_resamples} resamples, seed {seed}); "
        "*diff* = ours - paper. A row without a finished run (no `metrics.json`) reads **not run**, or "
        "**unfinished** / **failed: <error>** when a run folder of it exists (see the notes). "
        "Implantability = A/2 + (FPS/FPS_best)/4 + (1 - load)/4 with FPS_best taken among the runs of the "
        "same table on the same hardware (see `spinebench.report.implantability`)."
        + _discrepancy_note(manuscript)
        + _seeds_and_splits_legend(table)
    )
    lines = ["# Results: spinebench vs the manuscript", "", intro, "", legend, ""]
    commits = commit_line(run_commits(table), checkout)
    if commits:
        lines += [f"> **Code versions differ**: {commits}.", ""]
    for task, task_table in manuscript.tasks.items():
        rows = table[table["task"] == task]
        lines += [f"## {task.capitalize()}", "", f"Paper: {task_table.source}.", ""]
        for human in (False, True):
            if human and not task_table.reported_human:
                continue
            side = rows[(rows["domain"] == HUMAN) == human]
            for group in dict.fromkeys(side["data_source"]):
                lines += group_section(
                    task_table, side[side["data_source"] == group], human, table.attrs["classes"][task]
                )
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            rel = plot.name if out is None else str(plot.resolve().relative_to(out.parent.resolve()))
            lines += [f"![{plot.stem}]({rel})", ""]
    if notes:
        lines += ["## Skipped and notes", ""] + [f"- {inline(note)}" for note in notes] + [""]
    bibtex = manuscript.citation.get("bibtex")
    if bibtex:
        lines += ["## Citation", "", "```bibtex", bibtex.rstrip(), "```", ""]
    return "\n".join(lines)
