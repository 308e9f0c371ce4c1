"""Dice and IoU per image and class with nnU-Net's empty-class policy, batched on the GPU when there is one.

Counting: one bincount over `(image, reference, prediction)` triples gives each image's confusion matrix;
TP/FP/FN per image and class follow from it. Pixels whose reference is IGNORE_INDEX (unknown mask colours)
are left out of every count.

Policy (nnU-Net's `evaluate_predictions.py`, not MONAI's default): Dice = 2TP / (2TP + FP + FN) and
IoU = TP / (TP + FP + FN) are NaN only where TP + FP + FN = 0, i.e. the class is absent from both the
reference and the prediction of that image. A class predicted on an image whose reference lacks it scores 0
(MONAI's `ignore_empty=True` would give NaN there and hide the false positives). Means use nanmean.

Aggregation (what `metrics.json` reports):
- per-class Dice / IoU = nanmean over the test images of that class's per-image value (nnU-Net's `mean`);
- `mean_dice` / `mIoU` = mean over **all 10 classes, background (index 0) included** of those per-class values
  (nanmean, so a class that is absent from every reference and every prediction drops out instead of counting
  as 0 or 1). Why all 10: the manuscript defines its "anatomy" figures as "all classes" (manuscript.md), and in
  this release index 0 is a drawn palette colour covering ~1% of the pixels (18.99M px in 6,385 images), not
  the unlabelled bulk that nnU-Net's `foreground_mean` exists to exclude. `summary.json` additionally gives
  nnU-Net's `foreground_mean` (classes 1-9), and `metrics.json` the same as `foreground_mean_dice` /
  `foreground_mIoU`, for readers who prefer that definition.
- `cord_dice` / `cord_iou` = the per-class values of "spinal cord" (index 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from spinebench.classes import CORD, IGNORE_INDEX, SEGMENTATION_CLASSES


def confusion_counts(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TP, FP, FN (each B x C int64) of a batch of class-index maps (B x H x W), computed where `pred` lives."""
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != reference shape {tuple(target.shape)}: "
            "map predictions back to the reference size before scoring"
        )
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    batch = pred.shape[0]
    pred = pred.to(torch.int64).reshape(batch, -1)
    target = target.to(pred.device, torch.int64).reshape(batch, -1)
    valid = target != ignore_index
    if bool(((target < 0) | (target >= num_classes))[valid].any()):
        bad = int(target[valid & ((target < 0) | (target >= num_classes))][0])
        raise ValueError(
            f"reference holds class index {bad}, outside 0..{num_classes - 1} (and not ignore {ignore_index})"
        )
    if bool(((pred < 0) | (pred >= num_classes)).any()):
        raise ValueError(f"prediction holds a class index outside 0..{num_classes - 1}")
    image = torch.arange(batch, device=pred.device)[:, None].expand_as(pred)
    index = ((image * num_classes + target) * num_classes + pred)[valid]
    matrix = torch.bincount(index, minlength=batch * num_classes * num_classes).view(batch, num_classes, num_classes)
    tp = matrix.diagonal(dim1=1, dim2=2)
    fp = matrix.sum(dim=1) - tp  # predicted as c, reference another class
    fn = matrix.sum(dim=2) - tp  # reference c, predicted another class
    return tp, fp, fn


def dice_iou(tp: Any, fp: Any, fn: Any) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU (float64 arrays) with NaN exactly where TP + FP + FN = 0."""
    tp, fp, fn = (np.asarray(torch.as_tensor(x).cpu(), dtype=np.float64) for x in (tp, fp, fn))
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    return dice, iou


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """nanmean without numpy's 'mean of empty slice' warning; all-NaN gives NaN."""
    values = np.asarray(values, dtype=np.float64)
    count = (~np.isnan(values)).sum(axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            np.where(count > 0, total / np.maximum(count, 1), np.nan)
            if axis is not None
            else (float(total / count) if count else math.nan)
        )


def _clean(value: float) -> float | None:
    """NaN -> None so the JSON files stay strict JSON (null = class absent from reference and prediction)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class SegmentationScorer:
    """Accumulates per-image TP/FP/FN (on the device of the predictions) and aggregates them at the end."""

    def __init__(
        self,
        class_names: Sequence[str] = SEGMENTATION_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        cord_index: int = CORD,
    ):
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.cord_index = cord_index
        self.names: list[str] = []
        self._counts: list[torch.Tensor] = []  # B x 3 x C per batch

    def update(self, pred: torch.Tensor, target: torch.Tensor, names: Sequence[str] | None = None) -> None:
        tp, fp, fn = confusion_counts(pred, target, self.num_classes, self.ignore_index)
        self._counts.append(torch.stack([tp, fp, fn], dim=1).cpu())
        start = len(self.names)
        self.names.extend(names if names is not None else [f"case_{start + i:05d}" for i in range(tp.shape[0])])

    def __len__(self) -> int:
        return len(self.names)

    def counts(self) -> np.ndarray:
        """N x 3 x C (TP, FP, FN)."""
        if not self._counts:
            raise ValueError("no predictions were scored")
        return torch.cat(self._counts).numpy()

    def per_case(self) -> tuple[np.ndarray, np.ndarray]:
        counts = self.counts()
        return dice_iou(counts[:, 0], counts[:, 1], counts[:, 2])

    def metrics(self) -> dict[str, Any]:
        """The `metrics` block of metrics.json (see the module docstring for every definition)."""
        dice, iou = self.per_case()
        dice_class, iou_class = _nanmean(dice, axis=0), _nanmean(iou, axis=0)
        return {
            "mIoU": _clean(_nanmean(iou_class)),
            "mean_dice": _clean(_nanmean(dice_class)),
            "cord_iou": _clean(float(iou_class[self.cord_index])) if self.cord_index < self.num_classes else None,
            "cord_dice": _clean(float(dice_class[self.cord_index])) if self.cord_index < self.num_classes else None,
            "foreground_mIoU": _clean(_nanmean(iou_class[1:])),
            "foreground_mean_dice": _clean(_nanmean(dice_class[1:])),
            "dice_per_class": {n: _clean(float(v)) for n, v in zip(self.class_names, dice_class)},
            "iou_per_class": {n: _clean(float(v)) for n, v in zip(self.class_names, iou_class)},
            "n_images": len(self),
            "averaging": "per-class = nanmean over images; mean_dice/mIoU = nanmean over all classes incl. index 0; "
            "NaN (null) only where TP+FP+FN=0 (nnU-Net)",
        }

    def summary(
        self, prediction_files: Sequence[str] | None = None, reference_files: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """nnU-Net-style summary.json: `metric_per_case`, `mean` (per class), `foreground_mean` (classes 1..C-1)."""
        counts = self.counts()
        dice, iou = dice_iou(counts[:, 0], counts[:, 1], counts[:, 2])
        per_case = []
        for i, name in enumerate(self.names):
            per_class = {}
            for c in range(self.num_classes):
                tp, fp, fn = (int(counts[i, k, c]) for k in range(3))
                per_class[str(c)] = {
                    "Dice": _clean(float(dice[i, c])),
                    "IoU": _clean(float(iou[i, c])),
                    "TP": tp,
                    "FP": fp,
                    "FN": fn,
                    "n_pred": tp + fp,
                    "n_ref": tp + fn,
                }
            per_case.append(
                {
                    "case": name,
                    "metrics": per_class,
                    "prediction_file": prediction_files[i] if prediction_files else None,
                    "reference_file": reference_files[i] if reference_files else None,
                }
            )
        mean = {}
        for c in range(self.num_classes):
            mean[str(c)] = {
                "Dice": _clean(float(_nanmean(dice[:, c]))),
                "IoU": _clean(float(_nanmean(iou[:, c]))),
                "TP": float(counts[:, 0, c].mean()),
                "FP": float(counts[:, 1, c].mean()),
                "FN": float(counts[:, 2, c].mean()),
            }
        fg = {
            key: _clean(
                _nanmean(
                    np.array(
                        [np.nan if mean[str(c)][key] is None else mean[str(c)][key] for c in range(1, self.num_classes)]
                    )
                )
            )
            for key in ("Dice", "IoU")
        }
        return {
            "labels": {str(i): n for i, n in enumerate(self.class_names)},
            "ignore_index": self.ignore_index,
            "policy": "Dice/IoU null (NaN) only where TP+FP+FN = 0; means are nanmeans (nnU-Net)",
            "metric_per_case": per_case,
            "mean": mean,
            "foreground_mean": fg,
        }
