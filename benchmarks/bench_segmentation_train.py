"""Training images/s through spinebench vs the model's compute-only step rate, same device, same run.

- compute-only: one preprocessed batch already on the device; forward + loss + backward + optimizer step
  (bf16 autocast + channels_last on CUDA), timed after warmup.
- spinebench: `spinebench.engine.fit` on a phantom served from the memmap cache by spinebench-train's loader (on a
  CUDA device the split held in its memory, `trainer.data_on_device`; else the DataLoader's workers) and the
  SegmentationModule (device-side resize + augmentation), 2 epochs, the second epoch's images/s.
The ratio spinebench / compute-only is the data path's overhead (target >= 0.9).
Inference, on the same images with the trained model: `evaluate_split` (the path that scores a split: loader,
predict, the scorer, a class-index PNG per image written by threads) vs `predict` alone on batches already on
the device (`infer_*` keys), both in float32 as a test split is scored, each timed over one pass after an
untimed one.

    python benchmarks/bench_segmentation_train.py --model unet --batch 16 --json out.json          # GPU
    python benchmarks/bench_segmentation_train.py --model unet_light --batch 2 --size 64 160 --steps 4   # CPU try
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())
    for parent in cfg.pop("defaults", []) or []:
        if parent != "_self_":
            cfg = {**model_config(parent), **cfg}
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet", help="configs/model/<name>.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size (default: config's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-on-device", default="auto", choices=("auto", "true", "false"),
                        help="trainer.data_on_device (auto: the split held on a CUDA device, as spinebench-train does)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from spinebench.data.resident import ResidentBatches
    from spinebench.data.source import prepare_dataset
    from spinebench.engine import TEST_SPLIT_AMP, TrainerConfig, autocast_for, fit, precision_label, resolve_device
    from spinebench.runinfo import device_name, git_commit
    from spinebench.segmentation.benchmark import SegmentationBenchmark
    from spinebench.segmentation.data import SegmentationSplit
    from spinebench.segmentation.task import evaluate_split
    from spinebench.speed import pass_rate

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    started = time.perf_counter()

    def phase(done: str) -> None:  # as it goes, so a run stopped at its time limit shows how far it got
        print(f"[{time.perf_counter() - started:6.1f} s] {args.model}: {done}", file=sys.stderr, flush=True)
    cfg = {k: v for k, v in model_config(args.model).items() if k != "_target_"}
    if args.size:
        if cfg["arch"] == "samed":
            cfg["image_size"] = args.size[0]
        else:
            cfg["input_size"] = list(args.size)
    bench = SegmentationBenchmark(**cfg)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if cuda else 0)
    trainer = TrainerConfig.from_config({
        "device": str(device), "epochs": 2, "batch_size": args.batch, "num_workers": workers, "progress": "false",
        "limit_train_batches": args.steps, "optimizer": {"name": "adamw", "lr": 1e-4},
        "scheduler": {"name": "constant"}, "deterministic": False, "amp": True, "channels_last": True,
        "data_on_device": args.data_on_device})

    with tempfile.TemporaryDirectory() as tmp:
        n_train = args.batch * args.steps
        spec = prepare_dataset("bench", "segmentation", Path(tmp) / "phantom",
                               {"n_train": n_train, "n_val": 1, "n_test": 1, "seed": 0, "domain": "porcine", "workers": 2})
        dataset = SegmentationSplit(spec.root, "train", Path(tmp) / "cache")
        phase(f"phantom of {len(dataset)} images ready")

        # compute-only
        module = bench.module(None, augment=False)
        model = module.model.to(device)
        if cuda:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        images = torch.stack([dataset[i % len(dataset)][0] for i in range(args.batch)])
        masks = torch.stack([dataset[i % len(dataset)][1] for i in range(args.batch)])
        batch = (images.to(device), masks.to(device), None)
        model.train()

        def step():
            with autocast_for(device, True):
                loss = module.training_step(batch, device)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(max(2, args.steps // 5)):
            step()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        compute = args.steps * args.batch / (time.perf_counter() - start)
        del optimizer, module, model
        phase(f"compute-only {compute:.1f} img/s")

        # through spinebench (fresh model, the engine's loop, the cached data path)
        module = bench.module(None, augment=True)
        loader = bench.loader(dataset, args.batch, True, workers, device, on_device=trainer.data_on_device)
        result = fit(module, loader, None, trainer, Path(tmp) / "run", monitor="mean_dice")
        spine = result.history[-1]["images_per_s"]
        phase(f"spinebench {spine:.1f} img/s")

        # inference: the path that scores a split (loader, predict, scorer, prediction PNGs written by threads)
        # vs predict alone on the same batches already on the device
        scoring_loader = bench.loader(dataset, args.batch, False, workers, device, on_device=trainer.data_on_device)
        infer = pass_rate(lambda: evaluate_split(module, scoring_loader, dataset.names, device, Path(tmp) / "eval",
                                             n_overlays=0, amp=TEST_SPLIT_AMP), len(dataset), device)
        on_device = [images.to(device) for images, _, _ in scoring_loader]

        def predict_only():
            with autocast_for(device, TEST_SPLIT_AMP):
                for images in on_device:
                    module.predict(images)

        infer_compute = pass_rate(predict_only, len(dataset), device)
        phase(f"inference: evaluate_split {infer:.1f} img/s, predict only {infer_compute:.1f} img/s")

    report = {"model": args.model, "data": f"{spec.label}, {len(dataset)} training images",
              "device": device_name(device), "batch": args.batch,
              "input_size": bench.effective_size(None), "steps": args.steps, "workers": workers,
              "data_on_device": isinstance(loader, ResidentBatches),
              "precision": precision_label(device, trainer.amp) + (" + channels_last" if cuda and trainer.channels_last else ""),
              "infer_precision": precision_label(device, TEST_SPLIT_AMP),
              "compute_only_images_per_s": compute, "spinebench_images_per_s": spine, "ratio": spine / compute,
              "infer_spinebench_images_per_s": infer, "infer_compute_only_images_per_s": infer_compute,
              "infer_ratio": infer / infer_compute, "torch": torch.__version__, "git": git_commit()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
