"""The paper's implantability score, for the manuscript's rows and for ours.

Method
------
    score = A/2 + (FPS / FPS_best)/4 + (1 - load)/4

* ``A`` is the accuracy: mAP50 for detection, porcine mean Dice for segmentation.
* ``FPS`` is batch-1 inference speed on one processor (CPU or GPU): `spinebench.speed.measure_inference`
  times ``n`` single-image forward passes over test images after ``warmup`` passes (CUDA synchronised).
* ``FPS_best`` is the highest FPS among the compared models *of the same task on the same processor*. For the
  manuscript that is the paper's rows; for our runs it is the runs one table shows (same task, same data source,
  one run per manuscript row) measured on the same hardware label, so a score never mixes a CPU with a GPU or two
  different GPUs, nor a run the table does not show into FPS_best.
* ``load`` is the processor's utilisation (0-1) during the timed passes: the process's CPU utilisation from
  psutil normalised by the core count (CPU), or the GPU utilisation sampled through NVML every 50 ms (GPU).

The normalisation by FPS_best and mean Dice as A are reconstructions: with them the formula reproduces every
score printed in the paper within 0.0065 but SAMed's CPU score (tests/test_manuscript.py checks all 26). A score is
only defined where FPS and load were both measured; otherwise it is None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
    complete = {k: r for k, r in rows.items()
                if all(r.get(f) is not None for f in ("accuracy", "fps", "load")) and float(r["fps"]) > 0}
    if not complete:
        return {k: None for k in rows}
    best = max(float(r["fps"]) for r in complete.values())
    return {k: (implantability(float(r["accuracy"]), float(r["fps"]), best, float(r["load"])) if k in complete else None)
            for k, r in rows.items()}


def fps_best(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return max(present) if present else None
