"""The paper's implantability score, for the manuscript's rows and for ours.

Method
------
    score = A/2 + (FPS / FPS_best)/4 + (1 - load)/4

* ``A`` is the accuracy: mAP50 for detection, porcine mean Dice for segmentation.
* ``FPS`` is batch-1 inference speed on one processor (CPU or GPU): `spinebench.speed.measure_inference`
  times ``n`` single-image forward passes over test images after ``warmup`` passes (CUDA synchronised).
* ``FPS_best`` is the highest FPS among the compared models *of the same task on the same processor*. For the
  manuscript that is the paper's rows; for our runs it is the runs one table shows (same task, same data source,
  one run per manuscript row and split, or the seeds of its recipe) measured on the same hardware label, so a score
  never mixes a CPU with a GPU or two different GPUs, nor a run the table does not show into FPS_best. A row over
  seeds shows the mean of its seeds' scores.
* ``load`` is the processor's utilisation (0-1) during the timed passes: the process's CPU utilisation from
  psutil normalised by the core count (CPU), or the GPU utilisation sampled through NVML every 50 ms (GPU).

A second CPU score, `run.implantability["cpu_exported"]`, puts the run's exported model in place of eager
PyTorch: FPS is export/speed.json's onnxruntime batch-1 FPS (a run whose export passed its parity check only),
load speed.json's own when it records one, else the run's eager CPU load timed on the same CPU with the same
threads (`spinebench.report.collect`); FPS_best is the fastest exported FPS among the runs the table shows on the
same CPU and threads. It is never compared with, nor sets FPS_best for, the eager scores.

The normalisation by FPS_best and mean Dice as A are reconstructions: with them the formula reproduces every
score printed in the paper within 0.0065 but SAMed's CPU score (tests/test_manuscript.py checks all 26). A score is
only defined where FPS and load were both measured; otherwise it is None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spinebench.report.collect import Run
    from spinebench.report.manuscript import Manuscript

ACCURACY_METRIC = {"detection": "mAP50", "segmentation": "mean_dice"}


def implantability(accuracy: float, fps: float, fps_best: float, load: float) -> float:
    """One score; `load` as a fraction 0-1."""
    if fps_best <= 0:
        raise ValueError(f"FPS_best must be positive, got {fps_best}")
    if not 0.0 <= load <= 1.0:
        raise ValueError(f"load must be a fraction in [0, 1], got {load}")
    return accuracy / 2 + (fps / fps_best) / 4 + (1.0 - load) / 4


def scores(rows: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Scores of a set of compared models on one processor.

    `rows` maps a name to {"accuracy", "fps", "load"}; rows with any of them missing, or an FPS that is not
    positive (nothing was timed), get None and do not take part in FPS_best: one such row never stops a report.
    """
    complete = {
        k: r
        for k, r in rows.items()
        if all(r.get(f) is not None for f in ("accuracy", "fps", "load")) and float(r["fps"]) > 0
    }
    if not complete:
        return {k: None for k in rows}
    best = max(float(r["fps"]) for r in complete.values())
    return {
        k: (implantability(float(r["accuracy"]), float(r["fps"]), best, float(r["load"])) if k in complete else None)
        for k, r in rows.items()
    }


def fps_best(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return max(present) if present else None


def score_runs(runs: Sequence[Run], manuscript: Manuscript | None = None) -> None:
    """Set `run.implantability[processor]`. The compared models, whose fastest sets FPS_best, are the runs a table
    shows: per manuscript row and split the runs `pick_seeds` chooses (the picked run and its other seeds), among
    the runs of the same task and data source measured on the same processor and hardware (porcine side only: the
    zero-shot evaluations are not speed-compared). Any other run (an older one, a model without a row) is scored as if it had joined them. The exported CPU speed
    (`run.exported`) is scored the same way under "cpu_exported", among exported speeds only."""
    from spinebench.report.collect import EXPORTED, pick_seeds, splits_of

    groups: dict[tuple, list[tuple[Run, dict]]] = {}
    tables: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.domain == "human" or run.task not in ACCURACY_METRIC:
            continue
        tables.setdefault((run.task, run.source.group), []).append(run)
        timed = {**run.speeds, **({EXPORTED: run.exported} if run.exported else {})}
        for processor, speed in timed.items():
            groups.setdefault((run.task, run.source.group, processor, speed["hardware"]), []).append((run, speed))
    shown = (
        set()
    )  # the runs the tables show (every seed of a row's, on each split), among a table's runs on any hardware
    for (task, _), table_runs in tables.items():
        table = manuscript.tasks.get(task) if manuscript else None
        for key in table.rows if table else {r.model for r in table_runs}:
            for split in splits_of(table_runs):
                shown |= {id(run) for run in pick_seeds(table_runs, key, split)[0]}
    for (task, _, processor, _), group in groups.items():
        rows = {
            i: {"accuracy": run.values.get(ACCURACY_METRIC[task]), "fps": speed["fps"], "load": speed["load"]}
            for i, (run, speed) in enumerate(group)
        }
        compared = {i: row for i, row in rows.items() if id(group[i][0]) in shown}
        table_scores = scores(compared)
        for i, (run, _) in enumerate(group):
            run.implantability[processor] = table_scores[i] if i in compared else scores({**compared, i: rows[i]})[i]
