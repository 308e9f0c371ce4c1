"""The COCO evaluator: hand-checked cases and agreement with pycocotools on the same files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from spinebench.data.detection import DetectionSample
from spinebench.detection.coco import COCO_METRICS, coco_ground_truth, detections_to_coco, pr_curve, score_coco


def _sample(name: str, boxes: list[list[float]]) -> DetectionSample:
    return DetectionSample(
        image=Path(name),
        width=690,
        height=275,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.zeros(len(boxes), dtype=np.int64),
    )


@pytest.fixture
def ground_truth() -> dict:
    samples = [
        _sample("a.png", [[100, 50, 200, 120]]),
        _sample("b.png", [[300, 80, 420, 160]]),
        _sample("neg.png", []),
    ]  # a pre-injury image: no box
    return coco_ground_truth(samples)


def test_ground_truth_keeps_negatives_and_converts_to_xywh(ground_truth):
    assert [image["id"] for image in ground_truth["images"]] == [1, 2, 3]
    assert len(ground_truth["annotations"]) == 2
    assert ground_truth["annotations"][0]["bbox"] == [100, 50, 100, 70]
    assert ground_truth["categories"] == [{"id": 1, "name": "hematoma"}]


def test_perfect_detections_score_one(ground_truth):
    detections = detections_to_coco(1, [[100, 50, 200, 120]], [0.9], [0]) + detections_to_coco(
        2, [[300, 80, 420, 160]], [0.8], [0]
    )
    scores = score_coco(ground_truth, detections)
    assert scores["mAP50"] == pytest.approx(1.0)
    assert scores["mAP50_95"] == pytest.approx(1.0)
    assert scores["AR100"] == pytest.approx(1.0)
    assert scores["precision"] == scores["recall"] == pytest.approx(1.0)


def test_the_declared_metrics_are_the_ones_scored(ground_truth):
    """COCO_METRICS is what trainer.monitor is checked against before training: it must be what validation gives."""
    assert set(COCO_METRICS) <= set(score_coco(ground_truth, detections_to_coco(1, [[1, 1, 9, 9]], [0.5], [0])))


def test_scoring_leaves_the_files_to_write_as_they_were(ground_truth):
    """ground_truth.json and predictions.json are written after scoring: COCO's loadRes and index must not have
    added their keys (segmentation, area, id, iscrowd, ignore) to the entries."""
    detections = detections_to_coco(1, [[100, 50, 200, 120]], [0.9], [0])
    before = json.dumps([ground_truth, detections], sort_keys=True)
    score_coco(ground_truth, detections)
    assert json.dumps([ground_truth, detections], sort_keys=True) == before


def test_box_on_negative_image_is_a_false_positive(ground_truth):
    good = detections_to_coco(1, [[100, 50, 200, 120]], [0.5], [0]) + detections_to_coco(
        2, [[300, 80, 420, 160]], [0.4], [0]
    )
    with_fp = good + detections_to_coco(3, [[10, 10, 60, 60]], [0.95], [0])
    assert score_coco(ground_truth, with_fp)["mAP50"] < score_coco(ground_truth, good)["mAP50"]
    # ranked FP(0.95), TP(0.5), TP(0.4): the best F1 keeps all three: P = 2/3, R = 1, F1 = 0.8
    scores = score_coco(ground_truth, with_fp)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(1.0)
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["score_threshold"] == pytest.approx(0.4)


def test_no_detections_scores_zero(ground_truth):
    scores = score_coco(ground_truth, [])
    assert scores["mAP50"] == scores["AR100"] == scores["recall"] == 0.0


def test_half_overlap_counts_at_iou_50_only(ground_truth):
    # IoU with the first box = 60x70 / (100x70 + 60x70 - 60x70)... shift right by 40 px: IoU = 60/140 < 0.5
    shifted = detections_to_coco(1, [[140, 50, 240, 120]], [0.9], [0])
    curve = pr_curve(ground_truth, shifted)
    assert curve["n_gt"] == 2 and curve["precision"].tolist() == [0.0]


def test_matches_pycocotools_on_the_same_files(tmp_path, ground_truth):
    rng = np.random.default_rng(0)
    detections = []
    for image in ground_truth["images"]:
        for _ in range(4):
            x, y = rng.uniform(0, 500), rng.uniform(0, 150)
            w, h = rng.uniform(20, 150), rng.uniform(20, 100)
            detections += detections_to_coco(image["id"], [[x, y, x + w, y + h]], [rng.uniform()], [0])
    detections += detections_to_coco(1, [[102, 48, 198, 125]], [0.7], [0])
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = PyCOCO(str(tmp_path / "gt.json"))
        evaluator = PyCOCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = score_coco(json.loads((tmp_path / "gt.json").read_text()), json.loads((tmp_path / "dt.json").read_text()))
    assert ours["mAP50_95"] == pytest.approx(max(evaluator.stats[0], 0), abs=1e-9)
    assert ours["mAP50"] == pytest.approx(max(evaluator.stats[1], 0), abs=1e-9)
    assert ours["AR100"] == pytest.approx(max(evaluator.stats[8], 0), abs=1e-9)
    assert 0 < ours["mAP50"] < 1
