"""What bf16 autocast does to a detector's boxes, and what spinebench's float32 box geometry keeps of them.

On a GPU the engine trains and validates under bf16 autocast, where torchvision builds the anchors in the feature
maps' dtype and decodes box deltas in the deltas' dtype (AnchorGenerator, BoxCoder.decode_single). spinebench
keeps both in float32 (detection.models.boxes_in_float32), and scores the test split in float32. The CPU's bf16
autocast follows the same dtype rules, so the effects show here:
  anchors  Faster R-CNN's and RetinaNet's anchors on a 256 x 642 input built under bf16 autocast by torchvision as
           it is, against float32: coordinate difference in px, share of anchors off by 1 px or more
  decode   the same bf16 deltas (N(0, 0.1)) on --boxes random anchors (40-240 px) of a 256 x 642 input, decoded in
           bf16 and in float32: coordinate difference in px, and the IoU of each box with its float32 self
  scores   a finished run's best checkpoint scored on its test split three ways, by the one COCO evaluator:
           fp32; bf16 autocast with torchvision as it is (the run's model config with
           model.network.float32_boxes=false); bf16 autocast as spinebench builds the model. For the bf16 modes also
           the mean IoU of each image's top box with the fp32 top box (top_box_iou_with_fp32)

    python benchmarks/decode_precision.py outputs/detection_phantom/<run> --json decode.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from bench_detection_train import TORCHVISION_TARGET, model_benchmark
from torch import nn

MODES = (
    "fp32",
    "bf16 autocast, bf16 anchors and decode (torchvision as is)",
    "bf16 autocast, float32 anchors and decode (spinebench)",
)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i] (torchvision's box_iou is all pairs: N x N)."""
    lower, upper = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (upper - lower).clamp(min=0).prod(1)
    area_a, area_b = ((boxes[:, 2:] - boxes[:, :2]).prod(1) for boxes in (a, b))
    return inter / (area_a + area_b - inter)


def top_boxes(detections: list[dict]) -> dict[int, torch.Tensor]:
    """Each image's highest-scoring box (x1, y1, x2, y2) of a COCO results list."""
    best: dict[int, dict] = {}
    for detection in detections:
        if detection["score"] > best.get(detection["image_id"], {"score": -1.0})["score"]:
            best[detection["image_id"]] = detection
    return {image: torch.tensor([x, y, x + w, y + h]) for image, d in best.items() for x, y, w, h in [d["bbox"]]}


def anchor_generator(model: nn.Module) -> nn.Module:
    """The submodule of a torchvision detector that builds its anchors, found by its type."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

    found = [module for module in model.modules() if isinstance(module, (AnchorGenerator, DefaultBoxGenerator))]
    if len(found) != 1:
        raise ValueError(f"{type(model).__name__}: {len(found)} anchor generators, expected one")
    return found[0]


def box_geometry(float32: bool) -> dict:
    """The model keys of a config's network with its box geometry in float32 under autocast (spinebench), or as
    torchvision keeps it (`model.network.float32_boxes=false`); no pretrained file looked for."""
    return {"weights": None, "network": {"float32_boxes": float32}}


def context(cache: Path | str | None = None, trainer=None, device: str = "cpu"):
    """A RunContext for building and scoring on `device` (the trainer's max_input_size caps the input size)."""
    from spinebench.contract import RunContext
    from spinebench.engine import TrainerConfig

    trainer = trainer or TrainerConfig.from_config({"device": device})
    return RunContext(Path("."), Path(cache or "."), trainer, torch.device(device), 0, {})


def anchor_difference() -> dict[str, dict[str, float]]:
    result = {}
    for arch in ("faster_rcnn", "retinanet"):  # configs/model/<arch>.yaml: the paper's 256 x 642 input
        benchmark = model_benchmark(arch, **box_geometry(float32=False))
        (model, _), anchors = benchmark._build(context(), load_weights=False), []
        model.eval()
        anchor_generator(model).register_forward_hook(lambda _m, _i, out, kept=anchors: kept.append(out[0]))
        image = torch.rand(3, 275, 690, generator=torch.Generator().manual_seed(0))
        for bf16 in (True, False):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model([image])
        error = (anchors[0].float() - anchors[1]).abs()
        result[arch] = {
            "anchors": len(error),
            "mean_px": float(error.mean()),
            "max_px": float(error.max()),
            "share_off_by_1px_or_more": float((error.max(1).values >= 1).float().mean()),
        }
    return result


def decode_difference(n: int, seed: int = 0) -> dict[str, float]:
    from torchvision.models.detection._utils import BoxCoder

    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=generator) * torch.tensor([642.0, 256.0])
    sizes = torch.rand(n, 2, generator=generator) * 200 + 40
    anchors = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    deltas = (torch.randn(n, 4, generator=generator) * 0.1).bfloat16()
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    in_bf16, in_float32 = coder.decode_single(deltas, anchors).float(), coder.decode_single(deltas.float(), anchors)
    error, iou = (in_bf16 - in_float32).abs(), paired_iou(in_bf16, in_float32)
    return {
        "boxes": n,
        "mean_px": float(error.mean()),
        "max_px": float(error.max()),
        "mean_iou": float(iou.mean()),
        "min_iou": float(iou.min()),
        "share_iou_below_0.95": float((iou < 0.95).float().mean()),
    }


def score_three_ways(run: Path, batch: int) -> dict:
    from omegaconf import OmegaConf

    from spinebench.build import build
    from spinebench.data.detection import read_detection_split
    from spinebench.data.source import DatasetSpec, describe_source
    from spinebench.detection.coco import coco_ground_truth, score_coco
    from spinebench.detection.data import build_dataset, detection_loader
    from spinebench.detection.models import built_pretrained
    from spinebench.detection.torchvision_benchmark import predict
    from spinebench.engine import TrainerConfig, load_checkpoint

    config = OmegaConf.load(run / "config.yaml")
    target = config.model.get("_target_")
    if target != TORCHVISION_TARGET:
        raise SystemExit(f"{run}: model._target_={target} is not a torchvision detector ({TORCHVISION_TARGET})")
    # the run's own model and trainer configs: the network it trained, at the input size it was scored at
    ctx = context(config.paths.cache_dir, TrainerConfig.from_config({**config.trainer, "device": "cpu"}))
    benchmarks = {
        float32: build(OmegaConf.merge(config.model, box_geometry(float32)), "model") for float32 in (True, False)
    }
    network = getattr(benchmarks[True].network, "func", benchmarks[True].network)  # a config's _partial_ builder
    arch, size = network.__name__.removeprefix("build_"), benchmarks[True].effective_size(ctx)
    root = Path(config.data.root)
    samples = read_detection_split(root, "test")
    ground_truth = coco_ground_truth(samples)
    cpu = torch.device("cpu")
    loader = detection_loader(build_dataset(samples, config.paths.cache_dir), batch, False, 0, cpu)
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    scores, tops = {}, {}
    for mode in MODES:
        benchmark = benchmarks["as is" not in mode]
        model, _ = benchmark._build(ctx, load_weights=False, pretrained=built_pretrained(state["model"]))
        model.load_state_dict(state["model"])  # as TorchvisionDetector.test
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            detections, _ = predict(model, loader, cpu)
        metrics = score_coco(ground_truth, detections)
        scores[mode] = {key: metrics[key] for key in ("mAP50", "mAP50_95", "AR100")}
        tops[mode] = top_boxes(detections)
        shared = sorted(set(tops[mode]) & set(tops[MODES[0]]))  # images with a box in this mode and in fp32
        if mode != MODES[0] and shared:
            ious = paired_iou(
                torch.stack([tops[mode][i] for i in shared]), torch.stack([tops[MODES[0]][i] for i in shared])
            )
            scores[mode]["top_box_iou_with_fp32"] = float(ious.mean())
        shown = "  ".join(f"{k} {v:.4f}" for k, v in scores[mode].items())
        print(f"{mode:<{max(map(len, MODES))}}  {shown}", flush=True)
    data = DatasetSpec(config.data.name, "detection", root, describe_source(root)).label
    return {
        "run": str(run),
        "arch": arch,
        "input_size": size,
        "checkpoint_epoch": state.get("epoch"),
        "data": f"{data}: {root}",
        "test_images": len(samples),
        "scores": scores,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="a finished torchvision detector run folder (scores)")
    parser.add_argument("--boxes", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from spinebench.runinfo import device_name, git_commit, write_json

    result = {
        "meta": {
            "torch": torch.__version__,
            "git": git_commit(),
            "device": device_name("cpu"),
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        "anchors": anchor_difference(),
        "decode": decode_difference(args.boxes),
    }
    for arch, anchors in result["anchors"].items():
        print(f"anchors {arch}: " + "  ".join(f"{k} {v:.4g}" for k, v in anchors.items()), flush=True)
    print("decode: " + "  ".join(f"{k} {v:.4g}" for k, v in result["decode"].items()), flush=True)
    if args.run:
        if not all((args.run / name).is_file() for name in ("config.yaml", "checkpoints/best.pt")):
            raise SystemExit(
                f"{args.run}: no config.yaml and checkpoints/best.pt (a finished torchvision detector run?)"
            )
        result["scores"] = score_three_ways(args.run, args.batch)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
