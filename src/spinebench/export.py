"""`spinebench export`: a finished run's best.pt as an ONNX file that takes an image and gives a mask or boxes,
checked against the PyTorch model on the run's test split and timed on the CPU through onnxruntime.

    spinebench export ckpt=outputs/segmentation_phantom/unet-paper-s0 [format=onnx] [opset=18] [dynamic_batch=true]

Writes into the run folder's export/: model.onnx, parity.json (the exported model against PyTorch on the first
`images` test images; the export fails when the score moves by more than TOLERANCE) and speed.json (batch-1 CPU
latency and CPU load through onnxruntime beside eager PyTorch, same machine, same threads, one process; the load is
spinebench.speed's, as the run's eager CPU FPS records it, and the report's exported score uses onnxruntime's).
The model is rebuilt
as spinebench-eval rebuilds it: the run's config.yaml model node (allow-listed targets) and the adapter's own
checkpoint loading. What each row's graph takes and gives: docs/export.md.

Exporters: segmenters and DETR through torch.onnx's dynamo exporter; torchvision detectors and YOLOv7 through the
TorchScript exporter (`dynamo=False`): torch.export cannot trace their post-processing, whose NMS and box filtering
branch on how many boxes there are (a data-dependent shape); YOLOv8 through ultralytics' own export (its boxes
decoded in the graph, ultralytics' NMS beside it). DETR and YOLOv7 export their adapter's own `detect`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from spinebench.atomic import write_json
from spinebench.build import build, check_saved_targets, suite_targets, to_container
from spinebench.contract import Benchmark, RunContext
from spinebench.errors import ConfigError, RunStateError, WeightsError
from spinebench.hydra_run import CONFIG_DIR
from spinebench.run_folder import CONFIG_FILE, RunFolder, checkpoint_run_folder
from spinebench.runinfo import cpu_model
from spinebench.speed import measure_inference

log = logging.getLogger("spinebench")

EXPORT_DIR, MODEL_FILE, PARITY_FILE, SPEED_FILE = "export", "model.onnx", "parity.json", "speed.json"
FORMATS = ("onnx",)
TOLERANCE = 0.005  # the largest |mean Dice| or |mAP50-95| difference the exported model may show against PyTorch
MIN_PIXEL_AGREEMENT = 0.995  # segmentation: the least fraction of pixels given the same class
MIN_BOX_IOU, MAX_UNPAIRED = 0.95, 0.01  # detection: paired boxes' mean IoU (NMS may keep another of near-tied
# overlapping candidates), and the largest share of boxes left unpaired
SCORE_TIE = 1e-5  # detection: an unpaired box scored within this of the lowest kept score is a near-tie at the
# output's cut (top-k or score threshold), counted apart (a smoke model's scores differ by 1e-7 there)
SAME_BOX_PX = 0.05  # two zero-area boxes (no IoU) this close, in native pixels, are the same box (float noise
# moves a coordinate clamped to a 690-pixel image by some 1e-3 px)
DYNAMO_OPSETS = (18, 23)  # torch.onnx's dynamo exporter writes opset 18 and converts up to what onnx knows
TORCHSCRIPT_OPSETS = (11, 20)  # torchvision's detection ops need 11; torch's TorchScript exporter stops at 20
YOLO_OPSETS = (11, 22)
DEFAULT_IMAGES = 16  # test images compared; the whole split is scored by spinebench-train/eval already
SPEED_IMAGES, SPEED_WARMUP = 8, 2


# ------------------------------------------------------------------------------------------------ arguments
def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` arguments, as the issue's and spinebench-eval's command lines write them."""
    known = {"ckpt": str, "format": str, "opset": int, "dynamic_batch": bool, "images": int, "threads": int}
    given: dict[str, Any] = {}
    for pair in pairs:
        key, is_pair, value = pair.partition("=")
        if not is_pair or key not in known:
            raise ConfigError(f"{pair!r}: expected key=value with key one of {', '.join(known)}")
        kind = known[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                given[key] = value.lower() == "true"
            else:
                given[key] = kind(value)
        except ValueError:
            raise ConfigError(f"{key}={value}: must be {'true or false' if kind is bool else kind.__name__}") from None
    if "ckpt" not in given:
        raise ConfigError("ckpt= is not set: add ckpt=<finished run folder or its checkpoints/best.pt>")
    return given


def check_opset(opset: int | None, allowed: tuple[int, int], exporter: str) -> None:
    if opset is not None and not allowed[0] <= opset <= allowed[1]:
        raise ConfigError(
            f"opset={opset}: the {exporter} exporter writes opsets {allowed[0]} to {allowed[1]} for this model"
        )


# ------------------------------------------------------------------------------------------------ the run
class Rebuilt:
    """A finished run as spinebench-eval sees it: its benchmark, checkpoint, test data and a CPU context."""

    def __init__(self, ckpt: Any):
        folder = RunFolder(checkpoint_run_folder(ckpt))
        self.checkpoint = folder.best_checkpoint(ckpt)  # RunStateError: unfinished, or not a run
        self.folder = folder.path
        saved = to_container(OmegaConf.load(folder.file(CONFIG_FILE)))
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            raise RunStateError(f"{folder.file(CONFIG_FILE)}: holds no model block; not a config a run wrote")
        check_saved_targets(saved["model"], "model", suite_targets(CONFIG_DIR))  # before anything is imported
        from spinebench.pipeline import build_benchmark, trainer_config

        self.benchmark: Benchmark = build_benchmark(OmegaConf.create(saved["model"]))
        trainer = trainer_config({**saved["trainer"], "device": "cpu"}, saved.get("seed", 0))
        self.spec = build(OmegaConf.create(saved["data"]), "data")
        cache = Path((saved.get("paths") or {}).get("cache_dir") or ".cache")
        self.ctx = RunContext(
            run_dir=self.folder, cache_dir=cache, trainer=trainer, device=torch.device("cpu"), seed=0, config=saved
        )


# ------------------------------------------------------------------------------------------------ timing
def _latency(run: Callable[[Any], Any], inputs: Sequence[Any]) -> dict[str, float]:
    """spinebench.speed's batch-1 clock and CPU load (the process's CPU time over the timed passes, a fraction of
    all cores), the measure of the run's own eager CPU FPS and load in metrics.json."""
    speed = measure_inference(run, inputs, "cpu", warmup=SPEED_WARMUP, n=len(inputs))
    return {"latency_ms": 1000.0 / speed.fps, "fps": speed.fps, "load": speed.cpu_load, "images": len(inputs)}


def speed_doc(eager: Callable, exported: Callable, inputs: Sequence[Any], threads: int, what: str) -> dict:
    """Batch-1 CPU latency and load of both, on the same inputs, threads and machine (one process)."""
    torch_speed = _latency(eager, inputs)
    return {
        "batch": 1,
        "threads": threads,
        "cpu": cpu_model(),
        "timed": what,
        "onnxruntime": _latency(exported, inputs),
        "pytorch_eager": torch_speed,
        "onnxruntime_version": _ort().__version__,
        "torch_version": torch.__version__,
    }


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("onnxruntime is not installed: pip install -e '.[export]' (make setup does)") from None
    return onnxruntime


def ort_session(path: Path, threads: int):
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # its warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx's progress lines and deprecation notes: one log line says which exporter ran instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------------------------ segmenters
class MaskGraph(nn.Module):
    """Native uint8 images (B x H x W) -> class maps (B x H x W uint8): the scaling to 0-1, the resize to the
    run's input size and back, and the argmax are SegmentationModule.logits/predict's, inside the graph."""

    def __init__(self, module):
        super().__init__()
        self.model, self.module = module.model, module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.logits(images).argmax(dim=1).to(torch.uint8)


def export_segmenter(run: Rebuilt, out: Path, opset: int | None, dynamic_batch: bool, images: int, threads: int):
    from spinebench.engine import load_checkpoint
    from spinebench.segmentation.data import SegmentationSplit
    from spinebench.segmentation.metrics import SegmentationScorer
    from spinebench.segmentation.task import load_model_state

    check_opset(opset, DYNAMO_OPSETS, "dynamo")
    benchmark, ctx = run.benchmark, run.ctx
    state = load_checkpoint(run.checkpoint)
    module = benchmark.module(ctx, augment=False, trained=state.get("config") or {})
    load_model_state(module.model, state["model"], source=f"checkpoint {run.checkpoint}")
    graph = MaskGraph(module).eval()
    dataset = SegmentationSplit(run.spec, "test", ctx.cache_dir, limit=images)
    first = dataset[0][0][None]
    example = first.expand(2, -1, -1).contiguous() if dynamic_batch else first  # a batch of 1 would be fixed
    shapes = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None
    path = out / MODEL_FILE
    log.info("exporting %s through torch.onnx (dynamo, opset %s)", benchmark.name, opset or DYNAMO_OPSETS[0])
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset or DYNAMO_OPSETS[0],
            input_names=["images"],
            output_names=["masks"],
            dynamic_shapes=shapes,
            verbose=False,
        )
        program.save(str(path))
    session = ort_session(path, threads)
    torch_scorer, ort_scorer = SegmentationScorer(), SegmentationScorer()
    same = total = 0
    speed_inputs = []
    for index in range(len(dataset)):
        image, mask = dataset[index][0][None], dataset[index][1][None].long()
        with torch.no_grad():
            ours = graph(image)
        theirs = torch.from_numpy(session.run(None, {"images": image.numpy()})[0])
        same += int((ours == theirs).sum())
        total += ours.numel()
        torch_scorer.update(ours, mask)
        ort_scorer.update(theirs, mask)
        if len(speed_inputs) < SPEED_IMAGES:
            speed_inputs.append(image)
    dice_torch, dice_ort = torch_scorer.metrics()["mean_dice"], ort_scorer.metrics()["mean_dice"]
    agreement = same / total
    difference = abs((dice_torch or 0.0) - (dice_ort or 0.0))
    parity = {
        "task": "segmentation",
        "images": len(dataset),
        "pixel_agreement": agreement,
        "mean_dice_pytorch": dice_torch,
        "mean_dice_onnxruntime": dice_ort,
        "mean_dice_difference": difference,
        "tolerance": {"mean_dice_difference": TOLERANCE, "pixel_agreement_min": MIN_PIXEL_AGREEMENT},
        "passed": difference <= TOLERANCE and agreement >= MIN_PIXEL_AGREEMENT,
    }
    speed = speed_doc(
        graph,
        lambda x: session.run(None, {"images": x.numpy()}),
        speed_inputs,
        threads,
        "uint8 image in, class map out (resize and argmax included)",
    )
    graph_io = {
        "exporter": "torch.onnx dynamo",
        "opset": opset or DYNAMO_OPSETS[0],
        "input": {"name": "images", "dtype": "uint8", "shape": ["batch" if dynamic_batch else 1, *first.shape[1:]]},
        "output": {"name": "masks", "dtype": "uint8", "shape": ["batch" if dynamic_batch else 1, *first.shape[1:]]},
    }
    return parity, speed, graph_io


# ------------------------------------------------------------------------------------------------ detectors
class BoxGraph(nn.Module):
    """One native uint8 image (H x W) -> boxes (N x 4 xyxy native pixels, float), scores (N), labels (N, int64,
    0 = hematoma): the scaling, grey-to-3-channel, torchvision's own resize and normalisation, box decoding and
    NMS are all inside the graph."""

    def __init__(self, model: nn.Module, label_offset: int):
        super().__init__()
        self.model, self.label_offset = model, label_offset

    def forward(self, image: torch.Tensor):
        x = image.float().div(255.0)
        out = self.model([x.unsqueeze(0).expand(3, -1, -1)])[0]
        return out["boxes"], out["scores"], out["labels"] - self.label_offset


def box_parity(torch_out: list[tuple], ort_out: list[tuple]) -> tuple[float | None, int, int, int]:
    """Boxes paired one-to-one across the two outputs, image by image (Hungarian on IoU; a pair needs IoU > 0.5):
    their mean IoU, how many pairs, the boxes left unpaired, and those of the unpaired swapped at the output's cut
    (one box of each output, both scored within SCORE_TIE of the lowest score either kept for that image: a top-k
    near-tie that float noise may order either way). Each output is a list of (boxes N x 4, scores N) per image."""
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    ious, unpaired, at_cut = [], 0, 0
    for (a, a_scores), (b, b_scores) in zip(torch_out, ort_out):
        a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
        a_scores, b_scores = np.asarray(a_scores, np.float32), np.asarray(b_scores, np.float32)
        left_a, left_b = np.ones(len(a), bool), np.ones(len(b), bool)
        if len(a) and len(b):
            iou = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
            # two zero-area boxes (a box clamped to an image edge) have no IoU: the same box, or none
            same = np.abs(a[:, None] - b[None]).max(-1) <= SAME_BOX_PX
            iou = np.where(np.isnan(iou), same.astype(np.float32), iou)
            rows, cols = linear_sum_assignment(-iou)
            pairs = iou[rows, cols] > 0.5
            ious += iou[rows, cols][pairs].tolist()
            left_a[rows[pairs]], left_b[cols[pairs]] = False, False
        if left_a.any() or left_b.any():  # a box of each output swapped at the cut: both scored at the lowest kept
            floor = min(np.min(a_scores, initial=np.inf), np.min(b_scores, initial=np.inf))
            swaps = min((a_scores[left_a] <= floor + SCORE_TIE).sum(), (b_scores[left_b] <= floor + SCORE_TIE).sum())
            at_cut += 2 * int(swaps)
            unpaired += int(left_a.sum() + left_b.sum()) - 2 * int(swaps)
    return (float(np.mean(ious)) if ious else None), len(ious), unpaired, at_cut


def detection_parity(samples, torch_dets: list[dict], ort_dets: list[dict], outputs: tuple[list, list]) -> dict:
    """COCO scores of both outputs against the ground truth, and their boxes paired (`box_parity`)."""
    from spinebench.detection.coco import coco_ground_truth, score_coco

    ground_truth = coco_ground_truth(samples)
    ours, theirs = score_coco(ground_truth, torch_dets), score_coco(ground_truth, ort_dets)
    mean_iou, paired, unpaired, at_cut = box_parity(*outputs)
    difference = max(abs(ours["mAP50_95"] - theirs["mAP50_95"]), abs(ours["mAP50"] - theirs["mAP50"]))
    unpaired_share = unpaired / max(1, 2 * paired + unpaired + at_cut)
    return {
        "task": "detection",
        "images": len(samples),
        "matched_box_iou": mean_iou,
        "boxes_matched": paired,
        "boxes_unmatched": unpaired,
        "boxes_unmatched_at_cut": at_cut,
        "mAP50_pytorch": ours["mAP50"],
        "mAP50_onnxruntime": theirs["mAP50"],
        "mAP50_95_pytorch": ours["mAP50_95"],
        "mAP50_95_onnxruntime": theirs["mAP50_95"],
        "mAP_difference": difference,
        "unmatched_share": unpaired_share,
        "tolerance": {
            "mAP_difference": TOLERANCE,
            "matched_box_iou_min": MIN_BOX_IOU,
            "unmatched_share": MAX_UNPAIRED,
            "score_tie_at_cut": SCORE_TIE,
        },
        "passed": difference <= TOLERANCE
        and unpaired_share <= MAX_UNPAIRED
        and (mean_iou is None or mean_iou >= MIN_BOX_IOU),
    }


class EngineBoxGraph(nn.Module):
    """One native uint8 image (H x W) -> boxes, scores, labels as BoxGraph gives them, through the adapter's own
    `detect` (spinebench-eval's prediction): DETR's stretch, ImageNet normalisation, softmax and box scaling;
    YOLOv7's letterbox, box decoding, score threshold and NMS; all inside the graph."""

    def __init__(self, benchmark, model: nn.Module):
        super().__init__()
        self.benchmark, self.model = benchmark, model

    def forward(self, image: torch.Tensor):
        x = image.float().div(255.0)
        boxes, scores, labels = self.benchmark.detect(self.model, [x.unsqueeze(0).expand(3, -1, -1)])[0]
        return boxes, scores, labels


def one_image_per_call(run: Rebuilt, dynamic_batch: bool, why: str) -> None:
    if dynamic_batch:
        raise ConfigError(
            f"dynamic_batch=true: {run.benchmark.name}'s graph takes one image per call ({why}); "
            "leave dynamic_batch out"
        )


def export_box_graph(
    run: Rebuilt, out: Path, graph: nn.Module, dynamo: bool, opset: int | None, images: int, threads: int
):
    """Export a one-image graph (uint8 H x W -> boxes, scores, labels), then score its outputs through
    onnxruntime against the graph's own in PyTorch on the first `images` test images, and time both."""
    from spinebench.data.detection import read_detection_split
    from spinebench.detection.coco import detections_to_coco
    from spinebench.detection.data import build_dataset

    samples = read_detection_split(run.spec, "test")[:images]
    dataset = build_dataset(samples, run.ctx.cache_dir)
    example = dataset[0][0]
    path = out / MODEL_FILE
    names = {"input_names": ["image"], "output_names": ["boxes", "scores", "labels"]}
    if dynamo:
        chosen, exporter = opset or DYNAMO_OPSETS[0], "torch.onnx dynamo"
        log.info("exporting %s through torch.onnx (dynamo, opset %d)", run.benchmark.name, chosen)
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=chosen, verbose=False, **names)
            program.save(str(path))
    else:
        chosen, exporter = opset or 17, "torch.onnx TorchScript (dynamo=False)"
        log.info("exporting %s through torch.onnx (TorchScript, dynamo=False, opset %d)", run.benchmark.name, chosen)
        with quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=False,
                opset_version=chosen,
                dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}},
                **names,
            )
    session = ort_session(path, threads)
    torch_dets, ort_dets, torch_out, ort_out, speed_inputs = [], [], [], [], []
    for index in range(len(dataset)):
        image = dataset[index][0]
        with torch.no_grad():
            boxes, scores, labels = (t.numpy() for t in graph(image))
        o_boxes, o_scores, o_labels = session.run(None, {"image": image.numpy()})
        torch_dets += detections_to_coco(index + 1, boxes, scores.tolist(), labels.tolist())
        ort_dets += detections_to_coco(index + 1, o_boxes, o_scores.tolist(), o_labels.tolist())
        torch_out.append((boxes, scores))
        ort_out.append((o_boxes, o_scores))
        if len(speed_inputs) < SPEED_IMAGES:
            speed_inputs.append(image)
    parity = detection_parity(samples, torch_dets, ort_dets, (torch_out, ort_out))
    speed = speed_doc(
        graph,
        lambda x: session.run(None, {"image": x.numpy()}),
        speed_inputs,
        threads,
        "uint8 image in, boxes out (resize, normalisation, box decoding and any NMS included)",
    )
    graph_io = {
        "exporter": exporter,
        "opset": chosen,
        "input": {"name": "image", "dtype": "uint8", "shape": list(example.shape)},
        "output": [
            {"name": "boxes", "dtype": "float32", "shape": ["n", 4], "meaning": "xyxy, native pixels"},
            {"name": "scores", "dtype": "float32", "shape": ["n"]},
            {"name": "labels", "dtype": "int64", "shape": ["n"], "meaning": "0 = hematoma"},
        ],
    }
    return parity, speed, graph_io


def export_torchvision(run: Rebuilt, out: Path, opset: int | None, dynamic_batch: bool, images: int, threads: int):
    from spinebench.detection.data import LABEL_OFFSET
    from spinebench.detection.models import built_pretrained
    from spinebench.engine import load_checkpoint

    check_opset(opset, TORCHSCRIPT_OPSETS, "TorchScript (dynamo=False)")
    one_image_per_call(run, dynamic_batch, "torchvision detectors take a list of images")
    benchmark, ctx = run.benchmark, run.ctx
    state = load_checkpoint(run.checkpoint)
    model, _ = benchmark._build(ctx, load_weights=False, pretrained=built_pretrained(state["model"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise WeightsError(
            f"checkpoint {run.checkpoint} does not fit {benchmark.name}: {str(error).splitlines()[0]} "
            "(another model's checkpoint?)"
        ) from None
    graph = BoxGraph(model.eval(), LABEL_OFFSET).eval()
    return export_box_graph(run, out, graph, False, opset, images, threads)


def export_engine_detector(run: Rebuilt, out: Path, opset: int | None, dynamic_batch: bool, images: int, threads: int):
    """DETR through the dynamo exporter (its graph has no data-dependent shape: every query is a box); YOLOv7
    through the TorchScript one, as the torchvision detectors, for its score threshold and NMS."""
    from spinebench.detection.detr import Detr
    from spinebench.engine import load_checkpoint

    benchmark, ctx = run.benchmark, run.ctx
    dynamo = isinstance(benchmark, Detr)
    check_opset(opset, *((DYNAMO_OPSETS, "dynamo") if dynamo else (TORCHSCRIPT_OPSETS, "TorchScript (dynamo=False)")))
    one_image_per_call(run, dynamic_batch, "the image's own size sets its resize and box scaling")
    benchmark.size = benchmark.effective_size(ctx)  # as test() sets it: the input the run was trained and scored at
    state = load_checkpoint(run.checkpoint)
    model, _ = benchmark.build(ctx, load_weights=False)
    benchmark.load_trained(model, state["model"], run.checkpoint)  # WeightsError: another model's checkpoint
    graph = EngineBoxGraph(benchmark, model.eval()).eval()
    return export_box_graph(run, out, graph, dynamo, opset, images, threads)


def export_yolo(run: Rebuilt, out: Path, opset: int | None, dynamic_batch: bool, images: int, threads: int):
    """ultralytics' own export (box decoding in the graph, NMS beside it); parity and speed through ultralytics'
    predict on both files, which letterboxes the image and runs the same NMS around either graph."""
    from spinebench.data.detection import read_detection_split
    from spinebench.detection.yolo import PREDICT, _yolo, keep_torch_threads, predict_coco, ultralytics_env

    check_opset(opset, YOLO_OPSETS, "ultralytics")
    benchmark, ctx = run.benchmark, run.ctx
    ultralytics_env(ctx.cache_dir)
    YOLO = _yolo()
    imgsz = benchmark.effective_imgsz(ctx)
    work = out / "ultralytics"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "best.pt"
    shutil.copyfile(run.checkpoint, source)  # ultralytics writes its export beside the file it loads
    try:
        model = YOLO(str(source))
    except Exception as error:
        raise WeightsError(
            f"checkpoint {run.checkpoint}: ultralytics cannot load it ({type(error).__name__})"
        ) from None
    chosen = opset or 17
    log.info("exporting %s through ultralytics' export (opset %d)", benchmark.name, chosen)
    with keep_torch_threads():
        exported = model.export(
            format="onnx",
            imgsz=imgsz,
            opset=chosen,
            dynamic=True,  # as ultralytics' PyTorch predict letterboxes: the short side to a multiple of 32 only
            nms=False,  # its in-graph NMS is not ultralytics' own: it left 40% of a smoke run's boxes unpaired
            simplify=False,
            device="cpu",
        )
    path = out / MODEL_FILE
    shutil.move(str(exported), path)
    shutil.rmtree(work, ignore_errors=True)
    samples = read_detection_split(run.spec, "test")[:images]
    torch.set_num_threads(threads)
    model = YOLO(str(run.checkpoint))  # export() left the one it exported fused and in its export mode
    onnx_model = YOLO(str(path), task="detect")
    torch_dets = predict_coco(model, samples, imgsz, "cpu", 1)
    ort_dets = predict_coco(onnx_model, samples, imgsz, "cpu", 1)

    def boxes_of(dets):
        per = [([], []) for _ in samples]
        for d in dets:
            x, y, w, h = d["bbox"]
            per[d["image_id"] - 1][0].append([x, y, x + w, y + h])
            per[d["image_id"] - 1][1].append(d["score"])
        return [(np.asarray(b, dtype=np.float32).reshape(-1, 4), np.asarray(s, np.float32)) for b, s in per]

    parity = detection_parity(samples, torch_dets, ort_dets, (boxes_of(torch_dets), boxes_of(ort_dets)))
    import cv2

    frames = [cv2.imread(str(s.image)) for s in samples[:SPEED_IMAGES]]
    speed = speed_doc(
        lambda im: model.predict(im, imgsz=imgsz, device="cpu", verbose=False, **PREDICT),
        lambda im: onnx_model.predict(im, imgsz=imgsz, device="cpu", verbose=False, **PREDICT),
        frames,
        threads,
        "ultralytics predict on a BGR frame, letterbox and box scaling (Python) included on both sides",
    )
    graph_io = {
        "exporter": "ultralytics export (nms=False: ultralytics' non_max_suppression runs beside it)",
        "opset": chosen,
        "input": {
            "name": "images",
            "dtype": "float32",
            "shape": ["batch", 3, "height", "width"],
            "meaning": f"RGB 0-1, long side {imgsz}, letterboxed to /32",
        },
        "output": {"name": "output0", "shape": [1, 5, "anchors"], "meaning": "xywh (letterboxed pixels), score"},
    }
    return parity, speed, graph_io


# ------------------------------------------------------------------------------------------------ dispatch
def exporter_for(benchmark: Benchmark) -> Callable:
    from spinebench.detection.engine_detector import EngineDetector
    from spinebench.detection.torchvision_benchmark import TorchvisionDetector
    from spinebench.detection.yolo import YoloV8
    from spinebench.segmentation.benchmark import SegmentationBenchmark

    if isinstance(benchmark, SegmentationBenchmark):
        return export_segmenter
    if isinstance(benchmark, TorchvisionDetector):
        return export_torchvision
    if isinstance(benchmark, YoloV8):
        return export_yolo
    if isinstance(benchmark, EngineDetector):
        return export_engine_detector
    raise ConfigError(
        f"{benchmark.name} ({type(benchmark).__name__}) has no ONNX export yet: spinebench exports segmenters, "
        "torchvision detectors, YOLOv8, DETR and YOLOv7 (docs/export.md)"
    )


def export_run(
    ckpt: Any,
    format: str = "onnx",
    opset: int | None = None,
    dynamic_batch: bool = False,
    images: int = DEFAULT_IMAGES,
    threads: int | None = None,
) -> dict[str, Any]:
    """Export, check and time one finished run; returns {"model", "parity", "speed", "graph"}. Raises ConfigError
    (a bad argument), RunStateError (no finished run), WeightsError (best.pt is not this model's) and, when the
    exported model disagrees with PyTorch beyond the tolerance, RunStateError naming the numbers."""
    if format not in FORMATS:
        raise ConfigError(f"format={format}: spinebench exports {', '.join(FORMATS)}")
    if images < 1:
        raise ConfigError(f"images={images}: the parity check needs at least one test image")
    run = Rebuilt(ckpt)
    export = exporter_for(run.benchmark)
    threads = threads or torch.get_num_threads()
    out = run.folder / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for name in (MODEL_FILE, PARITY_FILE, SPEED_FILE, MODEL_FILE + ".data"):
        (out / name).unlink(missing_ok=True)  # a stale file must never pass for this export's
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        parity, speed, graph_io = export(run, out, opset, dynamic_batch, images, threads)
    finally:
        torch.set_num_threads(before)
    about = {"run": str(run.folder.resolve()), "checkpoint": str(run.checkpoint.resolve()), "model": run.benchmark.name}
    parity = {**about, **parity, "graph": graph_io}
    write_json(out / PARITY_FILE, parity)
    write_json(out / SPEED_FILE, {**about, **speed})
    if not parity["passed"]:
        failed = {k: v for k, v in parity.items() if k.endswith(("difference", "agreement", "_share", "box_iou"))}
        raise RunStateError(
            f"{out / MODEL_FILE} disagrees with PyTorch beyond the tolerance ({failed}; tolerance "
            f"{parity['tolerance']}): see {out / PARITY_FILE}"
        )
    log.info(
        "exported %s: onnxruntime %.1f FPS vs eager %.1f FPS on %d threads",
        out / MODEL_FILE,
        speed["onnxruntime"]["fps"],
        speed["pytorch_eager"]["fps"],
        threads,
    )
    return {"model": out / MODEL_FILE, "parity": parity, "speed": speed, "graph": graph_io}


def main(pairs: Sequence[str]) -> int:
    """The `spinebench export` subcommand: errors a user can cause are spinebench.errors kinds (one line)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    result = export_run(**parse_pairs(pairs))
    parity, speed = result["parity"], result["speed"]
    keys = [k for k in parity if k.endswith(("difference", "agreement", "box_iou"))]
    print(f"wrote {result['model']}: parity {', '.join(f'{k} {parity[k]}' for k in keys)}")
    print(
        f"batch-1 CPU ({speed['threads']} threads): onnxruntime {speed['onnxruntime']['fps']:.2f} FPS, "
        f"eager PyTorch {speed['pytorch_eager']['fps']:.2f} FPS"
    )
    return 0
