"""The one detection evaluator: COCO mAP50, mAP50-95 and AR@100 (faster-coco-eval), plus precision and
recall at the best-F1 score threshold. Every detector, YOLOv8 included, is scored here on the same files,
so the numbers are comparable (ultralytics' own mAP interpolates differently).

Negative (pre-injury) images are part of the evaluation: a box predicted on one is a false positive, as in
the paper. `ground_truth.json` / `predictions.json` written from these dicts re-score identically with
pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from spinebench.classes import DETECTION_CLASSES
from spinebench.data.detection import DetectionSample

PR_IOU = 0.5  # IoU at which precision/recall/F1 and the PR curve are reported
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)  # its INFO lines repeat every COCO summary


def coco_ground_truth(samples: Sequence[DetectionSample]) -> dict[str, Any]:
    """COCO dict of a split: image ids 1..N in sample order, category 1 = hematoma, negatives included."""
    images, annotations = [], []
    for image_id, sample in enumerate(samples, start=1):
        images.append({"id": image_id, "file_name": sample.image.name, "width": sample.width, "height": sample.height})
        for box, label in zip(sample.boxes.tolist(), sample.labels.tolist()):
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(DETECTION_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(image_id: int, boxes: Iterable, scores: Iterable, labels: Iterable) -> list[dict[str, Any]]:
    """COCO results entries of one image from xyxy boxes, scores and 0-based class labels."""
    return [
        {"image_id": image_id, "category_id": int(label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}
        for (x0, y0, x1, y1), score, label in zip(
            np.asarray(boxes, dtype=float).reshape(-1, 4).tolist(), scores, labels
        )
    ]


def _coco_stats(ground_truth: dict, detections: list[dict], image_ids: Sequence[int] | None) -> np.ndarray:
    # COCO's index and loadRes add keys to the entries they are given (ignore; segmentation, area, id, iscrowd):
    # they get copies, so ground_truth.json and predictions.json stay the plain files anyone can re-score
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {**ground_truth, "annotations": [dict(a) for a in ground_truth.get("annotations", [])]}
        gt.createIndex()
        if not detections:  # loadRes refuses an empty list; with nothing predicted every AP/AR is 0
            return np.zeros(12)
        dt = gt.loadRes([dict(d) for d in detections])
        evaluator = COCOeval_faster(gt, dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.maximum(np.asarray(evaluator.stats[:12], dtype=float), 0.0)  # -1 (undefined) -> 0


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of COCO (x, y, w, h) boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def pr_curve(
    ground_truth: dict, detections: list[dict], iou: float = PR_IOU, image_ids: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Raw precision/recall/score arrays at one IoU (greedy matching by descending score, as COCO does)."""
    keep = set(image_ids) if image_ids is not None else {image["id"] for image in ground_truth["images"]}
    gt_boxes: dict[int, list] = {}
    for ann in ground_truth["annotations"]:
        if ann["image_id"] in keep:
            gt_boxes.setdefault(ann["image_id"], []).append(ann["bbox"])
    n_gt = sum(len(v) for v in gt_boxes.values())
    by_image: dict[int, list[dict]] = {}
    for det in detections:
        if det["image_id"] in keep:
            by_image.setdefault(det["image_id"], []).append(det)
    scores, hits = [], []
    for image_id, dets in by_image.items():
        dets = sorted(dets, key=lambda d: -d["score"])
        scores += [d["score"] for d in dets]
        gts = np.asarray(gt_boxes.get(image_id, []), dtype=float).reshape(-1, 4)
        if not len(gts):
            hits += [False] * len(dets)
            continue
        overlaps = _iou_xywh(np.asarray([d["bbox"] for d in dets], dtype=float), gts)
        for row in overlaps:
            best = int(row.argmax())
            hit = bool(row[best] >= iou)
            if hit:
                overlaps[:, best] = -1.0  # each reference box matches one detection at most
            hits.append(hit)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    hits_sorted = np.asarray(hits, dtype=float)[order]
    tp, fp = np.cumsum(hits_sorted), np.cumsum(1.0 - hits_sorted)
    return {
        "precision": tp / np.maximum(tp + fp, 1e-12),
        "recall": tp / max(n_gt, 1),
        "score": np.asarray(scores, dtype=float)[order],
        "n_gt": n_gt,
    }


COCO_METRICS = ("mAP50", "mAP50_95", "AR100", "precision", "recall", "f1")  # score_coco's, with score_threshold


def score_coco(ground_truth: dict, detections: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """mAP50, mAP50_95, AR100 (COCO, all areas) and precision/recall/F1 at the best-F1 score threshold (IoU 0.5)."""
    stats = _coco_stats(ground_truth, detections, image_ids)
    curve = pr_curve(ground_truth, detections, image_ids=image_ids)
    f1 = 2 * curve["precision"] * curve["recall"] / np.maximum(curve["precision"] + curve["recall"], 1e-12)
    best = int(np.argmax(f1)) if len(f1) else None
    return {
        "mAP50": float(stats[1]),
        "mAP50_95": float(stats[0]),
        "AR100": float(stats[8]),
        "precision": float(curve["precision"][best]) if best is not None else 0.0,
        "recall": float(curve["recall"][best]) if best is not None else 0.0,
        "f1": float(f1[best]) if best is not None else 0.0,
        "score_threshold": float(curve["score"][best]) if best is not None else None,
    }
