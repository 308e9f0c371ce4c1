"""`spinebench export`: smoke-trained runs exported to ONNX, their graphs run through onnxruntime against the
adapters' own PyTorch prediction, and the bad inputs a user can give, one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spinebench.cli import main as cli_main
from spinebench.errors import ConfigError, RunStateError, WeightsError
from spinebench.export import EXPORT_DIR, MODEL_FILE, PARITY_FILE, SPEED_FILE, Rebuilt, export_run, parse_pairs
from spinebench.pipeline import train

from helpers.hydra import compose_cfg

ort = pytest.importorskip("onnxruntime")
FAST = ["trainer=smoke", "trainer.limit_test_images=2", "trainer.fps_images=1", "trainer.fps_warmup=0"]


def smoke(tmp_path_factory, cache_dir, name: str, overrides: list[str]) -> Path:
    out = tmp_path_factory.mktemp(name)
    train(compose_cfg("train", [*overrides, *FAST], out, cache_dir, out / "run"))
    return out / "run"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, cache_dir) -> Path:
    return smoke(tmp_path_factory, cache_dir, "unet", ["model=unet_light", "data=segmentation_phantom_tiny"])


def read(run: Path, name: str) -> dict:
    return json.loads((run / EXPORT_DIR / name).read_text())


def check_speed(run: Path) -> dict:
    speed = read(run, SPEED_FILE)
    assert speed["batch"] == 1 and speed["threads"] == torch.get_num_threads()
    for side in ("onnxruntime", "pytorch_eager"):
        assert speed[side]["fps"] > 0 and speed[side]["latency_ms"] == pytest.approx(1000 / speed[side]["fps"])
        assert 0 <= speed[side]["load"] <= 1  # a fraction (0.0: the timing was shorter than the CPU clock ticks)
    return speed


def test_a_segmenter_exports_a_graph_from_uint8_image_to_the_mask_pytorch_predicts(segmenter):
    from spinebench.engine import load_checkpoint
    from spinebench.segmentation.data import SegmentationSplit
    from spinebench.segmentation.task import load_model_state

    result = export_run(segmenter, dynamic_batch=True, images=2)
    parity = read(segmenter, PARITY_FILE)
    assert parity["passed"] and parity["images"] == 2 and parity["pixel_agreement"] >= 0.995
    assert parity["mean_dice_difference"] <= 0.005 and parity["graph"]["exporter"] == "torch.onnx dynamo"
    check_speed(segmenter)
    # the adapter's own prediction (SegmentationModule.predict), rebuilt apart from the exporter's wrapper
    run = Rebuilt(segmenter)
    state = load_checkpoint(run.checkpoint)
    module = run.benchmark.module(run.ctx, augment=False, trained=state["config"])
    load_model_state(module.model, state["model"])
    module.model.eval()
    split = SegmentationSplit(run.spec.root, "test", run.ctx.cache_dir, limit=3)
    images = torch.stack([split[i][0] for i in range(3)])  # a batch of 3: dynamic_batch=true
    expected = module.predict(images)
    session = ort.InferenceSession(str(result["model"]), providers=["CPUExecutionProvider"])
    (masks,) = session.run(None, {"images": images.numpy()})
    assert masks.dtype == np.uint8 and masks.shape == tuple(expected.shape) == (3, 275, 690)
    assert (masks == expected.numpy()).mean() >= 0.995


def test_bad_inputs_are_one_line_each(segmenter, tmp_path, capsys):
    with pytest.raises(ConfigError, match="opset=9: the dynamo exporter writes opsets 18"):
        export_run(segmenter, opset=9)
    with pytest.raises(ConfigError, match="format=tflite"):
        export_run(segmenter, format="tflite")
    with pytest.raises(ConfigError, match="ckpt= is not set"):
        parse_pairs(["opset=18"])
    with pytest.raises(ConfigError, match="dynamic_batch=maybe: must be true or false"):
        parse_pairs(["ckpt=x", "dynamic_batch=maybe"])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(segmenter, unfinished, ignore=shutil.ignore_patterns(EXPORT_DIR))
    (unfinished / "metrics.json").unlink()
    with pytest.raises(RunStateError, match="the run is unfinished"):
        export_run(unfinished)
    other = tmp_path / "other"  # best.pt of another network (two of its layers gone: not this U-Net's)
    shutil.copytree(segmenter, other, ignore=shutil.ignore_patterns(EXPORT_DIR))
    state = torch.load(other / "checkpoints" / "best.pt", weights_only=True)
    state["model"] = dict(list(state["model"].items())[2:])
    torch.save(state, other / "checkpoints" / "best.pt")
    with pytest.raises(WeightsError, match="does not fit this model"):
        export_run(other)
    assert not (other / EXPORT_DIR / MODEL_FILE).exists()
    # the command line: exit 2 and one line
    assert cli_main(["export", f"ckpt={unfinished}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unfinished" in err and len(err.splitlines()) == 1


def test_a_yolo_run_exports_through_ultralytics_and_matches_its_pytorch_predictions(tmp_path_factory, cache_dir):
    run = smoke(tmp_path_factory, cache_dir, "yolo", ["model=yolov8n", "data=detection_phantom_tiny"])
    export_run(run, images=2)
    parity = read(run, PARITY_FILE)
    assert parity["passed"] and parity["mAP_difference"] <= 0.005 and parity["unmatched_share"] <= 0.01
    assert parity["boxes_matched"] > 0 and parity["matched_box_iou"] >= 0.95  # a smoke YOLO keeps low-score boxes
    check_speed(run)
    session = ort.InferenceSession(str(run / EXPORT_DIR / MODEL_FILE), providers=["CPUExecutionProvider"])
    (candidates,) = session.run(None, {"images": np.zeros((1, 3, 96, 160), np.float32)})
    assert candidates.shape[:2] == (1, 5)  # xywh + the hematoma score of each anchor; NMS beside the graph
    assert not (run / EXPORT_DIR / "ultralytics").exists()


@pytest.mark.slow
def test_a_torchvision_detector_exports_with_its_nms_and_gives_pytorchs_boxes(tmp_path_factory, cache_dir):
    run = smoke(tmp_path_factory, cache_dir, "frcnn", ["model=faster_rcnn", "data=detection_phantom_tiny"])
    with pytest.raises(ConfigError, match="dynamic_batch=true"):
        export_run(run, dynamic_batch=True)
    with pytest.raises(ConfigError, match="opset=21"):
        export_run(run, opset=21)
    export_run(run, images=2)
    parity = read(run, PARITY_FILE)
    assert parity["passed"] and parity["graph"]["exporter"].endswith("(dynamo=False)")
    assert parity["boxes_unmatched"] == 0 and (parity["boxes_matched"] == 0 or parity["matched_box_iou"] > 0.999)
    check_speed(run)
    session = ort.InferenceSession(str(run / EXPORT_DIR / MODEL_FILE), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": np.full((275, 690), 128, np.uint8)})
    assert boxes.shape[1:] == (4,) and len(boxes) == len(scores) == len(labels)
    assert (labels == 0).all() and (boxes[:, 2] <= 690 + 1e-3).all()  # hematoma, native pixels


@pytest.mark.slow
def test_samed_exports_with_its_frozen_encoder_in_the_graph(tmp_path_factory, cache_dir):
    run = smoke(
        tmp_path_factory, cache_dir, "samed", ["model=samed", "model.image_size=128", "data=segmentation_phantom_tiny"]
    )
    export_run(run, images=1)
    parity = read(run, PARITY_FILE)
    assert parity["passed"] and parity["pixel_agreement"] >= 0.995 and parity["model"] == "samed"
    check_speed(run)


def test_a_row_without_an_exporter_stops_in_one_line():
    from spinebench.contract import Benchmark
    from spinebench.export import exporter_for

    class Other(Benchmark):
        name = "other"

    with pytest.raises(ConfigError, match=r"other \(Other\) has no ONNX export yet"):
        exporter_for(Other())


def test_box_parity_pairs_equal_boxes_and_sets_near_ties_at_the_cut_apart():
    from spinebench.export import box_parity

    # boxes clamped to the top edge: zero area, no IoU; float noise moves them by 1e-3 px (a smoke RetinaNet's)
    edge_a, edge_b = [342.0621, 0.0, 690.0, 0.0], [342.0599, 0.0, 690.0, 0.0]
    a = (np.array([[10, 10, 50, 50], edge_a, [100, 100, 200, 150]], np.float32), np.array([0.9, 0.5, 0.0046001]))
    b = (np.array([[10, 10, 50, 50.5], edge_b, [300, 100, 400, 150]], np.float32), np.array([0.9, 0.5, 0.0046]))
    mean_iou, paired, unpaired, at_cut = box_parity([a], [b])
    assert (paired, unpaired, at_cut) == (2, 0, 2)  # the last boxes differ, both at the cut
    assert mean_iou == pytest.approx((40 * 40 / (40 * 40.5) + 1.0) / 2)
    b_far = (b[0], np.array([0.9, 0.5, 0.3]))  # the stray box scored well above the cut: no swap, a real miss
    assert box_parity([a], [b_far])[2:] == (2, 0)
    assert box_parity([a], [(b[0][:2], b[1][:2])])[2:] == (1, 0)  # a box the other output lacks, with none swapped
    b_moved = (np.array([[10, 10, 50, 50.5], [300, 0, 690, 0], [100, 100, 200, 150]], np.float32), b[1])
    assert box_parity([a], [b_moved])[1:] == (2, 2, 0)  # zero-area boxes 42 px apart: not the same box


@pytest.mark.slow
def test_detr_exports_through_dynamo_with_its_resize_and_box_scaling_in_the_graph(tmp_path_factory, cache_dir):
    from spinebench.report.collect import LOAD_FROM_EXPORT, _load_run

    run = smoke(tmp_path_factory, cache_dir, "detr", ["model=detr_light", "data=detection_phantom_tiny"])
    with pytest.raises(ConfigError, match="dynamic_batch=true"):
        export_run(run, dynamic_batch=True)
    with pytest.raises(ConfigError, match="opset=17: the dynamo exporter"):
        export_run(run, opset=17)
    export_run(run, images=2)
    parity = read(run, PARITY_FILE)
    assert parity["passed"] and parity["graph"]["exporter"] == "torch.onnx dynamo" and parity["model"] == "detr_light"
    # every query is a box, no NMS: the two outputs pair one to one
    assert parity["boxes_matched"] == 2 * 20 and parity["boxes_unmatched"] == parity["boxes_unmatched_at_cut"] == 0
    assert parity["matched_box_iou"] > 0.999 and parity["mAP_difference"] <= 0.005
    speed = check_speed(run)
    session = ort.InferenceSession(str(run / EXPORT_DIR / MODEL_FILE), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": np.full((275, 690), 128, np.uint8)})
    assert boxes.shape == (20, 4) and scores.shape == labels.shape == (20,)
    assert (labels == 0).all() and (boxes >= 0).all() and (boxes[:, [0, 2]] <= 690).all()
    # the report scores the exported speed with the load onnxruntime's own timing measured
    notes: list[str] = []
    exported = _load_run(run, notes).exported
    assert exported["load"] == speed["onnxruntime"]["load"] and exported["load_from"] == LOAD_FROM_EXPORT


@pytest.mark.slow
def test_yolov7_exports_with_its_letterbox_and_nms_in_the_graph(tmp_path_factory, cache_dir):
    run = smoke(tmp_path_factory, cache_dir, "yolov7", ["model=yolov7_tiny", "data=detection_phantom_tiny"])
    with pytest.raises(ConfigError, match="opset=21: the TorchScript"):
        export_run(run, opset=21)
    export_run(run, images=2)
    parity = read(run, PARITY_FILE)
    assert parity["passed"] and parity["graph"]["exporter"].endswith("(dynamo=False)")
    assert parity["boxes_matched"] > 0 and parity["matched_box_iou"] >= 0.95 and parity["unmatched_share"] <= 0.01
    check_speed(run)
    session = ort.InferenceSession(str(run / EXPORT_DIR / MODEL_FILE), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": np.full((275, 690), 128, np.uint8)})
    assert 0 < len(boxes) <= 100 and boxes.shape[1:] == (4,) and len(scores) == len(labels) == len(boxes)
    assert (labels == 0).all() and (scores > 0.001).all() and (boxes[:, [1, 3]] <= 275 + 1e-3).all()
