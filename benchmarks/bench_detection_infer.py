"""Inference images/s on a phantom's test split: spinebench's scoring path vs the framework's own loop.

For each detector, in one process on one device (untrained weights; both paths keep the same boxes):
  spinebench   the path that scores the test split: torchvision detectors through
               detection.torchvision_benchmark.predict (uint8 cache; on a CUDA device the split held in its
               memory, else loader workers; to_device; float32, as a test split is scored; COCO results); YOLOv8
               through detection.yolo.predict_coco (ultralytics predict on the files, --batch at a time, COCO results)
  reference    torchvision: the model alone on the same batches already on the device (compute only, float32);
               YOLOv8: ultralytics' own loop, `YOLO(...).predict(source=<test folder>, stream=True)`
  ratio        spinebench / reference
For the torchvision detectors spinebench is timed before the reference and again after it, and the mean of the
two taken, as in bench_detection_train.py: a drift of the device's speed during the run then cancels (both are
in the JSON).
Every path runs once untimed (workers, autotuning, ultralytics' set-up), then is timed over --passes passes.
The paper's batch-1 FPS is in every run's metrics.json (spinebench.speed), not here. --profile MODELS records one
pass of each torchvision path with torch.profiler and writes the op tables to profile_<model>_infer_*.txt.

    python benchmarks/bench_detection_infer.py                                  # CPU, small (a minute)
    python benchmarks/bench_detection_infer.py --device cuda --data detection_phantom_paper --batch 16 \
        --models faster_rcnn,retinanet,ssd300,ssd512,yolov8m --json infer.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from bench_detection_train import add_common_arguments, model_benchmark, run_models, write_profiles  # shared

from spinebench.speed import pass_rate

os.environ.setdefault("YOLO_OFFLINE", "1")


def bench_torchvision(name: str, args, spec, cache: Path) -> dict:
    from spinebench.contract import RunContext
    from spinebench.data.detection import read_detection_split
    from spinebench.detection.data import build_dataset, detection_loader, to_device
    from spinebench.detection.torchvision_benchmark import predict
    from spinebench.engine import TEST_SPLIT_AMP, TrainerConfig, autocast_for, resolve_device

    device = resolve_device(args.device)
    cfg = TrainerConfig.from_config({"device": args.device, "max_input_size": args.max_input_size})
    family = model_benchmark(name, weights=None)  # configs/model/<name>.yaml, untrained
    ctx = RunContext(Path("."), cache, cfg, device, 0, {})
    model, _ = family._build(ctx, load_weights=False)
    model.to(device).eval()  # as TorchvisionDetector.test
    samples = read_detection_split(spec.root, "test")
    loader = detection_loader(
        build_dataset(samples, cache), args.batch, False, args.workers, device, on_device=args.data_on_device
    )  # as TorchvisionDetector.test

    def scoring():
        return predict(model, loader, device, amp=TEST_SPLIT_AMP)

    before = pass_rate(scoring, len(samples), device, args.passes)
    on_device = [to_device(batch, device)[0] for batch in loader]

    @torch.no_grad()
    def compute_only():
        with autocast_for(device, TEST_SPLIT_AMP):
            for images in on_device:
                model(images)

    reference = pass_rate(compute_only, len(samples), device, args.passes)
    after = pass_rate(scoring, len(samples), device, args.passes)
    spinebench = (before + after) / 2
    if name in args.profile:  # one pass of each, after the timed ones
        passes = {"scoring": scoring, "compute": compute_only}
        write_profiles(f"{name}_infer", args, f"{len(on_device)} batches", passes)
    return {
        "model": name,
        "path": "spinebench predict",
        "images_per_s": spinebench,
        "reference": "compute-only",
        "reference_images_per_s": reference,
        "ratio": spinebench / reference,
        "images_per_s_before_reference": before,
        "images_per_s_after_reference": after,
        "input_size": family.effective_size(ctx),
        "batch": args.batch,
        "device": str(device),
    }


def bench_yolo(name: str, args, spec, cache: Path) -> dict:
    from spinebench.data.detection import read_detection_split
    from spinebench.data.layout import find_splits
    from spinebench.detection.yolo import PREDICT, keep_torch_threads, predict_coco, ultralytics_env
    from spinebench.engine import resolve_device

    device = resolve_device(args.device)
    ultralytics_env(cache)
    from ultralytics import YOLO

    samples = read_detection_split(spec.root, "test")
    folder = find_splits(spec.root, "detection")["test"]
    yolo_device = "cpu" if device.type == "cpu" else (device.index or 0)
    with keep_torch_threads():  # ultralytics resets torch's thread count; the next benchmark needs it back
        model = YOLO(f"yolov8{name[-1]}.yaml")
        spinebench = pass_rate(
            lambda: predict_coco(model, samples, args.yolo_imgsz, yolo_device, args.batch),
            len(samples),
            device,
            args.passes,
        )

        def plain():
            for _ in model.predict(
                source=str(folder),
                stream=True,
                batch=args.batch,
                imgsz=args.yolo_imgsz,
                device=yolo_device,
                verbose=False,
                **PREDICT,
            ):
                pass

        reference = pass_rate(plain, len(samples), device, args.passes)
    return {
        "model": name,
        "path": "spinebench predict_coco",
        "images_per_s": spinebench,
        "reference": "plain YOLO().predict",
        "reference_images_per_s": reference,
        "ratio": spinebench / reference,
        "input_size": [args.yolo_imgsz] * 2,
        "batch": args.batch,
        "device": str(device),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, batch=4)
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the test split")
    run_models(parser.parse_args(argv), bench_torchvision, bench_yolo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
