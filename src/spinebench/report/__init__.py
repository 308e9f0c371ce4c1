"""`spinebench report RUNS... --out results/`: finished runs -> one comparison table against the manuscript ->
CSV, Markdown and plots.

collect (records and status files) -> bootstrap (95% CIs over test images) -> implantability (ours, per
hardware) -> tables (the comparison DataFrame; `<task>.csv`) -> markdown (README.md) and plots (PNG). Each step
lives in its own module; this one runs them and holds the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spinebench.report.bootstrap import N_RESAMPLES, SEED, bootstrap_run
from spinebench.report.collect import Collection, Run, collect_runs, commit_label, pick, pick_seeds
from spinebench.report.datasource import DataSource
from spinebench.report.implantability import implantability, score_runs
from spinebench.report.manuscript import Manuscript, ManuscriptError, load_manuscript

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "Collection",
    "Comparison",
    "DataSource",
    "Manuscript",
    "Run",
    "add_report_parser",
    "collect_runs",
    "compare",
    "implantability",
    "load_manuscript",
    "pick",
    "pick_seeds",
    "run_report",
    "score_runs",
]

TASKS = ("detection", "segmentation")  # one CSV each, written even when empty


@dataclass
class Comparison:
    """What a report shows: the comparison table, the runs behind it, and every note (skipped folders,
    unfinished runs, runs without an interval, plots that failed)."""

    table: pd.DataFrame
    collection: Collection
    notes: list[str]


def compare(
    runs: Sequence[str | Path],
    manuscript: Manuscript,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    workers: int | None = None,
) -> Comparison:
    """Collect the runs under `runs`, bootstrap their intervals, score their implantability, and tabulate them."""
    from spinebench.report.tables import (
        comparison_table,  # pandas: loaded by a report, not by `spinebench data`
    )

    collection = collect_runs(list(runs))
    notes = list(collection.notes)
    for run in collection.runs:
        run.intervals, note = bootstrap_run(run, n_resamples=n_resamples, seed=seed, workers=workers)
        if note:
            run.notes.append(note)
            notes.append(note)
    score_runs(collection.runs, manuscript)
    return Comparison(table=comparison_table(collection, manuscript), collection=collection, notes=notes)


def generated_at() -> str:
    """When the report was made: SOURCE_DATE_EPOCH's time when set (a reproducible build's), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(epoch)))
    return time.strftime("%Y-%m-%d %H:%M %Z")


def run_report(
    runs: Sequence[str | Path],
    out: str | Path = "results",
    manuscript: str | Path | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    plots: bool = True,
    workers: int | None = None,
) -> int:
    """Write `out/detection.csv`, `out/segmentation.csv`, `out/README.md` and `out/plots/*.png`.

    `workers`: processes for the detection bootstrap (default: automatic, 1 for small test sets); the intervals
    do not depend on it. Returns a process exit code: 0 when written (even with no finished run: the tables then
    read "not run"), 2 when the manuscript file is unusable or none of `runs` exists (a mistyped path must not
    overwrite `out` with an empty report; some missing among others are notes, as `make reproduce` names runs
    that never started).
    """
    from spinebench.report.markdown import commit_line, render_markdown, run_commits
    from spinebench.report.tables import write_csv

    out = Path(out)
    missing = [str(p) for p in runs if not Path(p).exists()]
    if runs and len(missing) == len(runs):
        print(f"error: no such run folder: {', '.join(missing)} (nothing written to {out})", file=sys.stderr)
        return 2
    try:
        paper = load_manuscript(manuscript)
    except ManuscriptError as exc:
        log.error("%s", exc)
        print(f"error: {exc}")
        return 2
    result = compare(runs, paper, n_resamples=n_resamples, seed=seed, workers=workers)
    checkout = commit_label(_checkout_git())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    except OSError as error:
        return _write_failed(out, error)
    try:  # everything into `staging` first: a report that stops half-way leaves `out` as it was
        written_plots: list[Path] = []
        if plots:
            from spinebench.report.plots import make_plots

            written_plots, plot_notes = make_plots(result.table, result.collection, paper, staging / "plots")
            result.notes += plot_notes
        files = [write_csv(result.table, task, paper, staging / f"{task}.csv") for task in TASKS]
        readme = staging / "README.md"
        readme.write_text(
            render_markdown(
                result.table,
                paper,
                generated=generated_at(),
                notes=result.notes,
                plots=written_plots,
                out=readme,
                n_resamples=n_resamples,
                seed=seed,
                checkout=checkout,
            )
        )
        files.append(readme)
        _publish(staging, out)
    except OSError as error:
        return _write_failed(out, error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = [out / path.relative_to(staging) for path in files]
    written_plots = [out / path.relative_to(staging) for path in written_plots]
    print(
        f"{len(result.collection.runs)} finished run(s), {len(result.collection.unfinished)} unfinished, "
        f"{len(result.notes)} note(s)"
    )
    for note in result.notes:  # the README's "Skipped and notes", on the console too
        print(f"  note: {note}")
    commits = commit_line(run_commits(result.table), checkout)
    if commits:
        print(f"  warning: {commits}")
    for path in [*files, *written_plots]:
        print(f"  wrote {path}")
    return 0


def _publish(staging: Path, out: Path) -> None:
    """Move a finished report from `staging` into `out`: each file, and plots/ as a whole (an old plot of a group
    no longer reported goes with it); other files in `out` stay."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(staging.iterdir()):
        target = out / path.name
        if path.is_dir() and target.is_dir():
            target.rename(staging / f".old-{path.name}")
        os.replace(path, target)


def _write_failed(out: Path, error: OSError) -> int:
    """A report that cannot be written (a full or read-only disk): one line, `out` as it was, exit 2."""
    from spinebench.atomic import write_error

    print(f"error: {write_error(getattr(error, 'filename', None) or out, error)}; {out} is unchanged", file=sys.stderr)
    return 2


def _checkout_git() -> dict:
    """This checkout's commit ({"commit", "dirty"}), as a run records it."""
    from spinebench.runinfo import git_commit

    return git_commit()


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `spinebench report`; the handler is `args.func(args) -> int`."""
    parser = subparsers.add_parser(
        "report", help="tables and plots of finished runs against the manuscript", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or folders holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    parser.add_argument(
        "--manuscript", type=Path, default=None, help="manuscript table (default: benchmarks/manuscript.yaml)"
    )
    parser.add_argument(
        "--resamples", type=int, default=N_RESAMPLES, help=f"bootstrap resamples (default {N_RESAMPLES})"
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for the detection bootstrap (default: auto)"
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.set_defaults(
        func=lambda a: run_report(
            a.runs, a.out, a.manuscript, n_resamples=a.resamples, seed=a.seed, plots=not a.no_plots, workers=a.workers
        )
    )
    return parser
