"""Training images/s through spinebench vs the model's compute-only step rate, same device, same run.

- spinebench: `spinebench.engine.fit` on a phantom served from the memmap cache by spinebench-train's loader (on a
  CUDA device the split held in its memory, `trainer.data_on_device`; else the DataLoader's workers) and the
  SegmentationModule (device-side augmentation and resize), the images/s of the epoch after a warm-up epoch;
  timed before the compute-only loop and again after it (resumed from the checkpoint), and the mean of the two
  taken, so that a drift of the device's speed cancels (both are in the JSON).
- compute-only: the same model's forward + loss + backward + optimizer step (bf16 autocast + channels_last on
  CUDA) on the engine's first --steps batches, already on the device as the model trains on them (float,
  augmented, at the input size: `SegmentationModule.inputs`), timed over one pass after an untimed one.
The ratio spinebench / compute-only is the data path's overhead (target >= 0.9).
Inference, on the same images with the trained model: `evaluate_split` (the path that scores a split: loader,
predict, the scorer, a class-index PNG per image written by threads) vs `predict` alone on batches already on
the device (`infer_*` keys), both in float32 as a test split is scored, each timed over one pass after an
untimed one; evaluate_split before and after predict, the mean taken.

    python benchmarks/bench_segmentation_train.py --model unet --batch 16 --json out.json          # GPU
    python benchmarks/bench_segmentation_train.py --model unet_light --batch 2 --size 64 160 --steps 4   # CPU try
    python benchmarks/bench_segmentation_train.py --model transunet --batch 16 --json out.json     # at its config's 256
    python benchmarks/bench_segmentation_train.py --model swin_unet_light --batch 2 --size 64 64 --steps 2   # CPU try
TransUNet and Swin-UNet (SizedSegmentationBenchmark) are built for the input size, --size or their config's.
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
from bench_detection_train import compose_train, model_benchmark


def segmentation_benchmark(name: str, size: list[int] | None):
    """configs/model/<name>.yaml's benchmark as spinebench-train builds it, at input size `size` when given (SAMed's
    square `image_size`: its first side)."""
    settings = {}
    if size:
        square = "image_size" in compose_train([f"model={name}"]).model  # SAMed: image_size, no input_size of its own
        settings = {"image_size": size[0]} if square else {"input_size": list(size)}
    return model_benchmark(name, **settings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet", help="configs/model/<name>.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="input size (default: config's)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--data-on-device",
        default="auto",
        choices=("auto", "true", "false"),
        help="trainer.data_on_device (auto: the split held on a CUDA device, as spinebench-train does)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from spinebench.data.resident import ResidentBatches
    from spinebench.data.source import prepare_dataset
    from spinebench.engine import TEST_SPLIT_AMP, TrainerConfig, autocast_for, fit, precision_label, resolve_device
    from spinebench.engine.loop import build_optimizer
    from spinebench.runinfo import device_name, git_commit
    from spinebench.segmentation.data import SegmentationSplit
    from spinebench.segmentation.task import evaluate_split
    from spinebench.speed import pass_rate

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    started = time.perf_counter()

    def phase(done: str) -> None:  # as it goes, so a run stopped at its time limit shows how far it got
        print(f"[{time.perf_counter() - started:6.1f} s] {args.model}: {done}", file=sys.stderr, flush=True)

    bench = segmentation_benchmark(args.model, args.size)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if cuda else 0)

    def trainer_cfg(epochs: int) -> TrainerConfig:
        return TrainerConfig.from_config(
            {
                "device": str(device),
                "epochs": epochs,
                "batch_size": args.batch,
                "num_workers": workers,
                "progress": "false",
                "limit_train_batches": args.steps,
                "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4},
                "scheduler": {"_target_": "spinebench.engine.schedules.constant", "_partial_": True},
                "deterministic": False,
                "amp": True,
                "channels_last": True,
                "data_on_device": args.data_on_device,
            }
        )

    trainer = trainer_cfg(epochs=2)  # a warm-up epoch and a timed one
    with tempfile.TemporaryDirectory() as tmp:
        n_train = args.batch * args.steps
        spec = prepare_dataset(
            "bench",
            "segmentation",
            Path(tmp) / "phantom",
            {"n_train": n_train, "n_val": 1, "n_test": 1, "seed": 0, "domain": "porcine", "workers": 2},
        )
        dataset = SegmentationSplit(spec.root, "train", Path(tmp) / "cache")
        phase(f"phantom of {len(dataset)} images ready")

        # spinebench: the engine (spinebench-train's loader, the module's device-side data path, the step)
        module = bench.module(None, augment=True)
        loader = bench.loader(dataset, args.batch, True, workers, device, on_device=trainer.data_on_device)
        run = Path(tmp) / "run"
        before = fit(module, loader, None, trainer, run, monitor="mean_dice").history[-1]["images_per_s"]
        phase(f"spinebench {before:.1f} img/s")

        # compute-only: the same model, loss and optimizer step on the engine's first --steps batches, already on
        # the device as the model trains on them (float, augmented, at the input size)
        model = module.model
        model.train()
        optimizer = build_optimizer(list(model.parameters()), trainer)
        held = [module.inputs(batch, device) for _, batch in zip(range(args.steps), loader)]

        def train_steps() -> None:
            for x, y in held:
                with autocast_for(device, trainer.amp):
                    loss = module.loss(model(x), y)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        compute = pass_rate(train_steps, sum(len(x) for x, _ in held), device)  # after one untimed pass
        held.clear()  # the held batches and the optimizer's state go before the engine runs again
        optimizer.state.clear()
        phase(f"compute-only {compute:.1f} img/s")
        # the engine once more, resumed from its checkpoint: a drift of the device's speed cancels in the mean
        after = fit(module, loader, None, trainer_cfg(epochs=3), run, monitor="mean_dice").history[-1]["images_per_s"]
        spine = (before + after) / 2
        phase(f"spinebench again {after:.1f} img/s")

        # inference: the path that scores a split (loader, predict, scorer, prediction PNGs written by threads),
        # timed before and after predict alone on the same batches already on the device
        scoring_loader = bench.loader(dataset, args.batch, False, workers, device, on_device=trainer.data_on_device)

        def scoring() -> None:
            evaluate_split(
                module, scoring_loader, dataset.names, device, Path(tmp) / "eval", n_overlays=0, amp=TEST_SPLIT_AMP
            )

        infer_before = pass_rate(scoring, len(dataset), device)
        on_device = [images.to(device) for images, _, _ in scoring_loader]

        def predict_only():
            with autocast_for(device, TEST_SPLIT_AMP):
                for images in on_device:
                    module.predict(images)

        infer_compute = pass_rate(predict_only, len(dataset), device)
        infer_after = pass_rate(scoring, len(dataset), device)
        infer = (infer_before + infer_after) / 2
        phase(f"inference: evaluate_split {infer:.1f} img/s, predict only {infer_compute:.1f} img/s")

    report = {
        "model": args.model,
        "data": f"{spec.label}, {len(dataset)} training images",
        "device": device_name(device),
        "batch": args.batch,
        "input_size": bench.effective_size(None),
        "steps": args.steps,
        "workers": workers,
        "data_on_device": isinstance(loader, ResidentBatches),
        "precision": precision_label(device, trainer.amp)
        + (" + channels_last" if cuda and trainer.channels_last else ""),
        "infer_precision": precision_label(device, TEST_SPLIT_AMP),
        "compute_only_images_per_s": compute,
        "spinebench_images_per_s": spine,
        "ratio": spine / compute,
        "spinebench_images_per_s_before_reference": before,
        "spinebench_images_per_s_after_reference": after,
        "infer_spinebench_images_per_s": infer,
        "infer_compute_only_images_per_s": infer_compute,
        "infer_spinebench_images_per_s_before_reference": infer_before,
        "infer_spinebench_images_per_s_after_reference": infer_after,
        "infer_ratio": infer / infer_compute,
        "torch": torch.__version__,
        "git": git_commit(),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
