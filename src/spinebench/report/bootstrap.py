"""95% confidence intervals of our metrics by bootstrap over test images (default 1,000 resamples, seeded).

Each resample draws N test images with replacement from the N of the run's test split and recomputes every
metric on that multiset; the interval is the 2.5th-97.5th percentile of the resampled values (percentile
bootstrap). The same seed gives the same resamples, hence the same interval.

* detection: the run's `ground_truth.json` + `predictions.json` are re-scored by the suite's one COCO scorer
  (`spinebench.detection.coco.score_coco`). An image drawn k times must count k times, which COCO's image-id
  filter cannot express, so every draw becomes a new image: the resampled ground truth gets image ids 1..N
  (draw order), its annotations and detections are copied under the new id, and the pair is scored whole.
* segmentation: the per-image, per-class Dice and IoU of `summary.json`'s `metric_per_case` (nnU-Net style,
  NaN/null where TP+FP+FN = 0) are aggregated exactly as `spinebench.segmentation.metrics` aggregates them:
  per-class nanmean over images, then nanmean over all classes (mIoU, mean Dice; index 0 included) or the cord
  class alone.

Should a run's reported value differ from the value recomputed from these files (a different aggregation, or a
metrics.json that does not match its prediction files), the interval is translated by that difference so it is
centred as the percentile interval would be around the reported value; `shift` records it (0 when the files
reproduce the reported number, the normal case) and `bootstrap_run` returns a note naming the run. Every metric
here is a fraction, so an interval is clipped to [0, 1].
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

N_RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
DETECTION_METRICS = ("mAP50", "mAP50_95", "AR100", "precision", "recall", "f1")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    estimate: float  # recomputed from the run's files on all test images
    shift: float = 0.0

    def as_tuple(self) -> tuple[float, float]:
        return (self.low, self.high)


def _percentile_intervals(
    point: Mapping[str, float], samples: Mapping[str, np.ndarray], level: float, reported: Mapping[str, Any] | None
) -> dict[str, Interval]:
    alpha = (1.0 - level) / 2
    out = {}
    for key, values in samples.items():
        values = np.asarray(values, dtype=float)
        values = values[~np.isnan(values)]
        estimate = point.get(key, math.nan)
        if not len(values) or estimate is None or math.isnan(estimate):
            continue
        low, high = np.quantile(values, [alpha, 1 - alpha])
        shift = 0.0
        if (
            reported is not None
            and isinstance(reported.get(key), (int, float))
            and abs(reported[key] - estimate) > 1e-6
        ):
            shift = float(reported[key] - estimate)
        out[key] = Interval(
            low=min(max(float(low) + shift, 0.0), 1.0),
            high=min(max(float(high) + shift, 0.0), 1.0),
            estimate=float(estimate),
            shift=shift,
        )
    return out


def shift_note(run_path: Path, intervals: Mapping[str, Interval]) -> str | None:
    """A note naming a run whose metrics.json disagrees with its prediction files (its intervals were moved)."""
    shifted = {k: iv for k, iv in intervals.items() if iv.shift}
    if not shifted:
        return None
    key, worst = max(shifted.items(), key=lambda kv: abs(kv[1].shift))
    return (
        f"{run_path}: {len(shifted)} metric(s) in metrics.json differ from those recomputed from its prediction "
        f"files (largest: {key} {worst.estimate + worst.shift:.4f} reported, {worst.estimate:.4f} recomputed); "
        "their intervals were moved by the difference and clipped to [0, 1]"
    )


# ---------------------------------------------------------------- detection
def resample_coco(
    ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], draw: Sequence[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ground-truth/detections pair holding the images `draw` (indices into ground_truth['images']), each
    draw a new image with id = its position + 1, so duplicated images count as often as they were drawn."""
    images = list(ground_truth["images"])
    anns_by, dets_by = _group(ground_truth.get("annotations", [])), _group(detections)
    new_images, new_anns, new_dets = [], [], []
    for position, index in enumerate(draw):
        image = images[int(index)]
        new_id = position + 1
        new_images.append({**image, "id": new_id})
        for ann in anns_by.get(image["id"], ()):
            new_anns.append({**ann, "id": len(new_anns) + 1, "image_id": new_id})
        for det in dets_by.get(image["id"], ()):
            new_dets.append({**det, "image_id": new_id})
    gt = {key: value for key, value in ground_truth.items() if key not in ("images", "annotations")}
    gt.update(images=new_images, annotations=new_anns)
    gt.setdefault("categories", [{"id": 1, "name": "hematoma"}])
    return gt, new_dets


def _group(entries: Sequence[Mapping[str, Any]]) -> dict[Any, list[Mapping[str, Any]]]:
    grouped: dict[Any, list] = {}
    for entry in entries:
        grouped.setdefault(entry["image_id"], []).append(entry)
    return grouped


def _score_draws(
    ground_truth: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    draws: np.ndarray,
    keys: Sequence[str],
    scorer: Callable[..., dict[str, float]] | None,
) -> np.ndarray:
    """len(draws) x len(keys) metric values, one row per resample."""
    if scorer is None:
        from spinebench.detection.coco import score_coco as scorer
    out = np.empty((len(draws), len(keys)))
    for b, draw in enumerate(draws):
        scored = scorer(*resample_coco(ground_truth, detections, draw))
        out[b] = [scored.get(k, math.nan) for k in keys]
    return out


_SHARED: dict[str, Any] = {}  # what forked workers inherit (ground truth, detections, keys)


def _worker_chunk(draws: np.ndarray) -> np.ndarray:
    import torch

    torch.set_num_threads(1)
    return _score_draws(_SHARED["gt"], _SHARED["dets"], draws, _SHARED["keys"], None)


def default_workers(n_images: int, n_resamples: int) -> int:
    """Processes for a detection bootstrap: 1 for small jobs (a pool costs more than it saves), else up to 8."""
    if n_images * n_resamples < 50_000:
        return 1
    return max(1, min(8, (os.cpu_count() or 1)))


def bootstrap_detection(
    ground_truth: Mapping[str, Any],
    detections: Sequence[Mapping[str, Any]],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    reported: Mapping[str, Any] | None = None,
    scorer: Callable[..., dict[str, float]] | None = None,
    workers: int | None = None,
) -> dict[str, Interval]:
    """Interval per detection metric (mAP50, mAP50_95, AR100, precision, recall, f1).

    The resamples are drawn up front from `seed`, so the result does not depend on `workers` (processes that
    score chunks of resamples in parallel; default: `default_workers`). A custom `scorer` runs in-process.
    """
    n = len(ground_truth["images"])
    if n == 0:
        return {}
    full_gt, full_dets = resample_coco(ground_truth, detections, np.arange(n))
    if scorer is None:
        from spinebench.detection.coco import score_coco

        point_scores = score_coco(full_gt, full_dets)
    else:
        point_scores = scorer(full_gt, full_dets)
    point = {k: v for k, v in point_scores.items() if k in DETECTION_METRICS}
    keys = list(point)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    workers = default_workers(n, n_resamples) if workers is None else workers
    values = None
    if workers > 1 and scorer is None and "fork" in mp.get_all_start_methods():
        _SHARED.update(gt=ground_truth, dets=detections, keys=keys)
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                values = np.concatenate(pool.map(_worker_chunk, np.array_split(draws, workers * 4)))
        except OSError as exc:  # no processes allowed here: fall back to one
            log.warning("bootstrap pool failed (%s); scoring in-process", exc)
        finally:
            _SHARED.clear()
    if values is None:
        values = _score_draws(ground_truth, detections, draws, keys, scorer)
    samples = {k: values[:, j] for j, k in enumerate(keys)}
    return _percentile_intervals(point, samples, level, reported)


def bootstrap_detection_run(run_dir: Path, **kwargs: Any) -> dict[str, Interval]:
    run_dir = Path(run_dir)
    ground_truth = json.loads((run_dir / "ground_truth.json").read_text())
    detections = json.loads((run_dir / "predictions.json").read_text())
    if isinstance(detections, dict):  # tolerate {"annotations": [...]} wrappers
        detections = detections.get("annotations", [])
    return bootstrap_detection(ground_truth, detections, **kwargs)


# ---------------------------------------------------------------- segmentation
def case_table(summary: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(Dice N x C, IoU N x C with NaN for null, class names) from an nnU-Net style summary.json."""
    cases = summary.get("metric_per_case") or []
    if not cases:
        raise ValueError("summary.json has no metric_per_case")
    labels = summary.get("labels")
    if labels:
        keys = sorted(labels, key=lambda k: int(k))
        names = [labels[k] for k in keys]
    else:
        keys = sorted(cases[0]["metrics"], key=lambda k: int(k) if str(k).isdigit() else str(k))
        names = list(keys)
    dice = np.full((len(cases), len(keys)), np.nan)
    iou = np.full_like(dice, np.nan)
    for i, case in enumerate(cases):
        for j, key in enumerate(keys):
            entry = case["metrics"].get(key) or case["metrics"].get(str(key)) or {}
            dice[i, j] = np.nan if entry.get("Dice") is None else entry["Dice"]
            iou[i, j] = np.nan if entry.get("IoU") is None else entry["IoU"]
    return dice, iou, names


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    count = (~np.isnan(values)).sum(axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def segmentation_statistics(
    dice: np.ndarray, iou: np.ndarray, names: Sequence[str], cord: str = "spinal cord"
) -> dict[str, np.ndarray]:
    """Metrics of (..., N, C) per-case arrays -> each (...,): mIoU, mean_dice, cord_*, foreground_*, per class."""
    dice_class, iou_class = _nanmean(dice, axis=-2), _nanmean(iou, axis=-2)  # (..., C)
    stats = {
        "mIoU": _nanmean(iou_class, -1),
        "mean_dice": _nanmean(dice_class, -1),
        "foreground_mIoU": _nanmean(iou_class[..., 1:], -1),
        "foreground_mean_dice": _nanmean(dice_class[..., 1:], -1),
    }
    if cord in names:
        c = list(names).index(cord)
        stats["cord_iou"], stats["cord_dice"] = iou_class[..., c], dice_class[..., c]
    for j, name in enumerate(names):
        stats[f"dice/{name}"] = dice_class[..., j]
        stats[f"iou/{name}"] = iou_class[..., j]
    return stats


def flat_segmentation_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json's segmentation block with per-class dicts flattened to 'dice/<class>' and 'iou/<class>'."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, Mapping)}
    for name, value in (metrics.get("dice_per_class") or {}).items():
        flat[f"dice/{name}"] = value
    for name, value in (metrics.get("iou_per_class") or {}).items():
        flat[f"iou/{name}"] = value
    return flat


def bootstrap_segmentation(
    summary: Mapping[str, Any],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    reported: Mapping[str, Any] | None = None,
    chunk: int = 100,
) -> dict[str, Interval]:
    """Interval per segmentation metric, per-class Dice/IoU included ('dice/<class>')."""
    dice, iou, names = case_table(summary)
    n = dice.shape[0]
    point = {k: float(v) for k, v in segmentation_statistics(dice, iou, names).items()}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_resamples, chunk):  # chunks bound memory: chunk x N x C floats at a time
        idx = draws[start : start + chunk]
        for k, v in segmentation_statistics(dice[idx], iou[idx], names).items():
            parts.setdefault(k, []).append(np.asarray(v))
    samples = {k: np.concatenate(v) for k, v in parts.items()}
    return _percentile_intervals(
        point, samples, level, flat_segmentation_metrics(reported) if reported is not None else None
    )


def bootstrap_segmentation_run(run_dir: Path, **kwargs: Any) -> dict[str, Interval]:
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return bootstrap_segmentation(summary, **kwargs)


def bootstrap_run(
    run: Any, n_resamples: int = N_RESAMPLES, seed: int = SEED, workers: int | None = None
) -> tuple[dict[str, Interval], str | None]:
    """Intervals of a collected run (spinebench.report.collect.Run), and a note naming the run when it has none
    (its files are missing or unusable) or when they were moved to its reported values."""
    from spinebench.report.collect import display_path

    where = Path(display_path(run.path))
    try:
        if run.task == "detection":
            if not (run.path / "ground_truth.json").is_file() or not (run.path / "predictions.json").is_file():
                return {}, f"{where}: no ground_truth.json/predictions.json, no confidence interval"
            intervals = bootstrap_detection_run(
                run.path, n_resamples=n_resamples, seed=seed, reported=run.values, workers=workers
            )
            return intervals, shift_note(where, intervals)
        if run.task == "segmentation":
            if not (run.path / "summary.json").is_file():
                return {}, f"{where}: no summary.json, no confidence interval"
            intervals = bootstrap_segmentation_run(run.path, n_resamples=n_resamples, seed=seed, reported=run.values)
            return intervals, shift_note(where, intervals)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {}, f"{where}: bootstrap failed ({type(exc).__name__}: {exc})"
    return {}, f"{where}: unknown task {run.task!r}"
