"""`spinebench report RUNS... --out results/`: finished runs -> tables and plots against the manuscript.

collect (finished runs only) -> bootstrap (95% CIs over test images) -> implantability (ours, per hardware)
-> tables (CSV per task + results/README.md) -> plots (PNG). Each step lives in its own module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from spinebench.report.bootstrap import N_RESAMPLES, SEED, bootstrap_run
from spinebench.report.collect import Collection, Run, collect_runs, pick
from spinebench.report.implantability import ACCURACY_METRIC, implantability, scores
from spinebench.report.manuscript import Manuscript, load_manuscript

log = logging.getLogger(__name__)

__all__ = ["run_report", "add_report_parser", "collect_runs", "load_manuscript", "implantability",
           "score_runs", "Collection", "Run", "Manuscript"]


def score_runs(runs: Sequence[Run], manuscript: Manuscript | None = None) -> None:
    """Set `run.implantability[processor]`. The compared models, whose fastest sets FPS_best, are the runs a table
    shows: per manuscript row the run `pick` chooses, among the runs of the same task and data source measured on
    the same processor and hardware (porcine side only: the zero-shot evaluations are not speed-compared). Any
    other run (an older one, a model without a row) is scored as if it had joined them."""
    groups: dict[tuple, list[tuple[Run, dict]]] = {}
    tables: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.domain == "human" or run.task not in ACCURACY_METRIC:
            continue
        tables.setdefault((run.task, run.data_group), []).append(run)
        for processor, speed in run.speeds.items():
            groups.setdefault((run.task, run.data_group, processor, speed["hardware"]), []).append((run, speed))
    shown = set()  # the runs the tables show, picked among all of a table's runs (any hardware)
    for (task, _), table_runs in tables.items():
        table = manuscript.tasks.get(task) if manuscript else None
        shown |= {id(pick(table_runs, key)[0]) for key in (table.rows if table else {r.model for r in table_runs})}
    for (task, _, processor, _), group in groups.items():
        rows = {i: {"accuracy": run.values.get(ACCURACY_METRIC[task]), "fps": speed["fps"], "load": speed["load"]}
                for i, (run, speed) in enumerate(group)}
        compared = {i: row for i, row in rows.items() if id(group[i][0]) in shown}
        table_scores = scores(compared)
        for i, (run, _) in enumerate(group):
            run.implantability[processor] = table_scores[i] if i in compared else scores({**compared, i: rows[i]})[i]


def run_report(runs: Sequence[str | Path], out: str | Path = "results", manuscript: str | Path | None = None,
               n_resamples: int = N_RESAMPLES, seed: int = SEED, plots: bool = True, workers: int | None = None) -> int:
    """Write `out/detection.csv`, `out/segmentation.csv`, `out/README.md` and `out/plots/*.png`.

    `workers`: processes for the detection bootstrap (default: automatic, 1 for small test sets); the intervals
    do not depend on it. Returns a process exit code: 0 when written (even with no finished run: the tables then read "not run"),
    2 when the manuscript file is unusable or none of `runs` exists (a mistyped path must not overwrite `out`
    with an empty report; some missing among others are notes, as `make reproduce` names runs that never started).
    """
    from spinebench.report.manuscript import ManuscriptError
    from spinebench.report.tables import commit_line, write_tables

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
    collection = collect_runs(list(runs))
    ci_notes = []
    for run in collection.runs:
        run.intervals, note = bootstrap_run(run, n_resamples=n_resamples, seed=seed, workers=workers)
        if note:
            ci_notes.append(note)
    score_runs(collection.runs, paper)
    written_plots: list[Path] = []
    if plots:
        from spinebench.report.plots import make_plots

        written_plots, plot_notes = make_plots(collection, paper, out / "plots")
        ci_notes += plot_notes
    checkout = _checkout_commit()
    files = write_tables(collection, paper, out, written_plots, n_resamples=n_resamples, seed=seed, ci_notes=ci_notes,
                         checkout=checkout)
    print(f"{len(collection.runs)} finished run(s), {len(collection.unfinished)} unfinished, "
          f"{len(collection.notes) + len(ci_notes)} note(s)")
    for note in [*collection.notes, *ci_notes]:  # the README's "Skipped and notes", on the console too
        print(f"  note: {note}")
    commits = commit_line(collection.runs, checkout)
    if commits:
        print(f"  warning: {commits}")
    for path in [*files, *written_plots]:
        print(f"  wrote {path}")
    return 0


def _checkout_commit() -> str | None:
    """This checkout's commit as Run.commit writes it (12 digits, '-dirty'), None when git cannot tell."""
    from spinebench.report.collect import commit_label
    from spinebench.runinfo import git_commit

    return commit_label(git_commit())


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `spinebench report`; the handler is `args.func(args) -> int`."""
    parser = subparsers.add_parser("report", help="tables and plots of finished runs against the manuscript",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or folders holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results/)")
    parser.add_argument("--manuscript", type=Path, default=None, help="manuscript table (default: benchmarks/manuscript.yaml)")
    parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help=f"bootstrap resamples (default {N_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    parser.add_argument("--workers", type=int, default=None, help="processes for the detection bootstrap (default: auto)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.set_defaults(func=lambda a: run_report(a.runs, a.out, a.manuscript, n_resamples=a.resamples, seed=a.seed,
                                                  plots=not a.no_plots, workers=a.workers))
    return parser
