"""Training images/s of one model through spinebench in one process vs under torchrun (DDP), same machine.

Each measurement is a fresh process that trains the model as spinebench-train does, through its Benchmark's
`fit` (configs/train.yaml composed with model=, data=, trainer=gpu on CUDA or trainer=default on the CPU, the
phantom from the cache, the engine's loaders, validation on one batch an epoch, checkpoints): one warm-up epoch,
then --epochs timed epochs, their images/s the engine's own (FitResult.history: training steps only, not
validation or checkpoints). In order:
  one process        python bench_ddp.py (no process group): the single-GPU path
  DDP, 1 rank        torchrun --standalone --nproc_per_node=1: world size 1 does not switch the engine's DDP path
                     on (distributed.active() needs more than one rank, and join() starts no process group), so
                     this process starts torchrun's group itself (NCCL on CUDA, gloo on the CPU) and makes
                     distributed.active() answer True: the engine then runs every DDP branch it runs with N
                     ranks (the DistributedDataParallel wrapper with its gradient all-reduce hooks and buckets,
                     the sharded sampler, the per-rank batch, the weights' digest compared after each epoch) with
                     no second GPU to talk to: the cost of the DDP path itself. `trained_through` in the JSON says
                     which module the steps ran through (DistributedDataParallel or the network)
  DDP, N ranks       --ranks N (N >= 2): torchrun --nproc_per_node=N as spinebench-train runs it (the engine's own
                     join()); needs N GPUs on CUDA (one GPU refuses a second rank), any N on the CPU (gloo). Its
                     images/s is the job's (all ranks); per_rank_images_per_s divides it by N
  one process        again, last: the single rate is the mean of the two, so that a drift of the device's speed
                     during the run cancels (both are in the JSON)
ddp_cost = 1 - (DDP 1 rank / one process) (the issue's target: under 0.05 at batch 16).

    python benchmarks/bench_ddp.py --device cpu --model unet_light --data segmentation_phantom_tiny \\
        --batch 4 --size 64 64 --steps 2 --epochs 1 --ranks 1,2                           # CPU try (minutes)
    python benchmarks/bench_ddp.py --device cuda --model unet --data segmentation_phantom --batch 16 \\
        --epochs 3 --json bench_ddp.json                                                   # one GPU
    python benchmarks/bench_ddp.py --device cuda --model faster_rcnn --data detection_phantom --batch 16 \\
        --epochs 2 --json bench_ddp_frcnn.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from bench_detection_train import REPO, compose_train

SCRIPT = Path(__file__).resolve()


def ranks(value: str) -> list[int]:
    """--ranks: comma-separated world sizes, each at least 1."""
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: comma-separated world sizes >= 1, e.g. 1 or 1,2")
    return sorted(set(sizes))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unet", help="configs/model/<name>.yaml")
    p.add_argument("--data", default="segmentation_phantom", help="configs/data/<name>.yaml (a phantom)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--batch", type=int, default=16, help="trainer.batch_size: the global batch, as the engine's")
    p.add_argument("--steps", type=int, default=None, help="trainer.limit_train_batches (default: whole epochs)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up epoch")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="model.input_size")
    p.add_argument("--max-input-size", type=int, default=None, help="trainer.max_input_size (detectors, CPU runs)")
    p.add_argument("--workers", type=int, default=None, help="trainer.num_workers (default: the trainer file's)")
    p.add_argument("--ranks", type=ranks, default=[1], help="world sizes to time under torchrun (1: see above)")
    p.add_argument("--cache", default=os.environ.get("SPINEBENCH_CACHE", str(REPO / ".cache")))
    p.add_argument("--json", type=Path, default=None)
    # one measurement, in a process of its own (the parent starts these)
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--force-ddp", action="store_true", help=argparse.SUPPRESS)
    return p


def cuda_wanted(device: str) -> bool:
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def overrides(args) -> list[str]:
    """What spinebench-train would be given for this measurement."""
    found = [
        f"model={args.model}",
        f"data={args.data}",
        f"paths.cache_dir={args.cache}",
        f"trainer={'gpu' if cuda_wanted(args.device) else 'default'}",
        f"trainer.device={args.device}",
        f"trainer.batch_size={args.batch}",
        f"trainer.epochs={1 + args.epochs}",
        "trainer.limit_val_batches=1",
        "trainer.progress=false",
    ]
    if args.steps:
        found.append(f"trainer.limit_train_batches={args.steps}")
    if args.size:
        found.append(f"model.input_size=[{args.size[0]},{args.size[1]}]")
    if args.max_input_size:
        found.append(f"trainer.max_input_size={args.max_input_size}")
    if args.workers is not None:
        found.append(f"trainer.num_workers={args.workers}")
    return found


@contextlib.contextmanager
def ddp_on_one_rank(device: torch.device):
    """The engine's DDP path at world size 1: torchrun's process group started here (join() starts none for one
    rank) and distributed.active() answering True while it exists."""
    import torch.distributed as dist

    from spinebench.engine import distributed

    if int(os.environ.get("WORLD_SIZE", "0")) != 1:
        raise SystemExit("--force-ddp runs under torchrun --nproc_per_node=1 only")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with mock.patch.object(distributed, "active", dist.is_initialized):
            yield
    finally:
        dist.destroy_process_group()


def worker(args) -> int:
    """One measurement: the model trained as spinebench-train trains it (pipeline.train's _start, then the
    Benchmark's fit), rank 0 writing the rates to --worker."""
    import logging

    from spinebench.build import build, to_container
    from spinebench.contract import RunContext
    from spinebench.engine import distributed, precision_label, resolve_device
    from spinebench.pipeline import build_benchmark, trainer_config
    from spinebench.runinfo import device_name

    logging.basicConfig(level=logging.WARNING)
    cfg = compose_train(overrides(args))
    trainer = trainer_config(cfg.trainer, cfg.seed)
    device = resolve_device(trainer.device)
    through: list[str] = []  # the type of what each training step ran through
    wrap = distributed.wrap

    def recorded_wrap(model, at):
        wrapped = wrap(model, at)
        through.append(type(wrapped).__name__)
        return wrapped

    with contextlib.ExitStack() as stack:
        if args.force_ddp:
            stack.enter_context(ddp_on_one_rank(device))
        else:
            distributed.join(trainer.device)  # under torchrun with N >= 2 ranks, as spinebench-train does
        stack.enter_context(mock.patch.object(distributed, "wrap", recorded_wrap))
        world = distributed.world_size()
        if distributed.active():  # as pipeline._start: each rank loads its share of the global batch
            trainer = dataclasses.replace(trainer, batch_size=distributed.rank_batch_size(trainer.batch_size))
        benchmark = build_benchmark(cfg.model)
        spec = build(cfg.data, "data")
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(os.environ.get("BENCH_DDP_RUN_DIR", tmp))  # one folder for all ranks (the parent's)
            config = {key: to_container(cfg[key]) for key in ("model", "data", "trainer")}  # no Hydra run: no paths
            ctx = RunContext(run_dir, Path(cfg.paths.cache_dir), trainer, device, trainer.seed, config)
            facts = benchmark.fit(ctx, spec)
        if distributed.is_main():
            timed = facts["history"][1:]
            rate = sum(h["images_per_s"] for h in timed) / len(timed)  # equal-length epochs
            doc = {
                "world_size": world,
                "forced_ddp": args.force_ddp,
                "trained_through": sorted(set(through)),
                "images_per_s": rate,
                "per_rank_images_per_s": rate / world,
                "epoch_images_per_s": [h["images_per_s"] for h in timed],
                "rank_batch": trainer.batch_size,
                "input_size": facts.get("input_size"),
                "data": spec.label,
                "device": device_name(device),
                "precision": precision_label(device, trainer.amp),
            }
            args.worker.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def measure(args, label: str, world: int | None, tmp: Path) -> dict:
    """One measurement in a fresh process: `world` None for one process, else under torchrun with that many
    ranks (1: the DDP path forced on)."""
    index = len(list(tmp.glob("run*.json")))
    out, run_dir = tmp / f"run{index}.json", tmp / f"run{index}"
    run_dir.mkdir()
    forwarded = [
        f"--model={args.model}",
        f"--data={args.data}",
        f"--device={args.device}",
        f"--batch={args.batch}",
        f"--epochs={args.epochs}",
        f"--cache={args.cache}",
        *([f"--steps={args.steps}"] if args.steps else []),
        *(["--size", str(args.size[0]), str(args.size[1])] if args.size else []),
        *([f"--max-input-size={args.max_input_size}"] if args.max_input_size else []),
        *([f"--workers={args.workers}"] if args.workers is not None else []),
        f"--worker={out}",
    ]
    command = [sys.executable, str(SCRIPT), *forwarded]
    if world is not None:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={world}",
            str(SCRIPT),
            *forwarded,
            *(["--force-ddp"] if world == 1 else []),
        ]
    started = time.perf_counter()
    print(f"[bench_ddp] {label}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, env={**os.environ, "BENCH_DDP_RUN_DIR": str(run_dir)})
    if done.returncode != 0:
        raise SystemExit(f"bench_ddp: {label} failed (exit {done.returncode}); its output is above")
    doc = json.loads(out.read_text())
    doc.update(label=label, process_s=time.perf_counter() - started)
    print(
        f"[bench_ddp] {label}: {doc['images_per_s']:.2f} img/s ({doc['per_rank_images_per_s']:.2f} a rank), "
        f"through {', '.join(doc['trained_through'])}, {doc['process_s']:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return doc


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.worker is not None:
        return worker(args)
    if args.force_ddp:
        p.error("--force-ddp is for the measurements this script starts itself")
    if cuda_wanted(args.device):
        gpus = torch.cuda.device_count()
        if max(args.ranks) > gpus:
            p.error(f"--ranks {max(args.ranks)}: this machine has {gpus} GPU(s), and a rank needs one of its own")
    uneven = [n for n in args.ranks if args.batch % n]
    if uneven:
        p.error(f"--batch {args.batch} (the global batch) does not divide among {uneven[0]} ranks")

    from spinebench.build import build
    from spinebench.runinfo import git_commit, write_json

    spec = build(compose_train(overrides(args)).data, "data")  # the phantom generated once, before any worker
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = measure(args, "one process", None, tmp)
        ddp = {n: measure(args, f"torchrun DDP, {n} rank{'s' if n > 1 else ''}", n, tmp) for n in args.ranks}
        after = measure(args, "one process, again", None, tmp)
    single = (before["images_per_s"] + after["images_per_s"]) / 2
    report = {
        "model": args.model,
        "data": f"{spec.label}: data={args.data}",
        "device": before["device"],
        "batch": args.batch,
        "input_size": before["input_size"],
        "precision": before["precision"],
        "steps_per_epoch": args.steps,
        "timed_epochs": args.epochs,
        "single_images_per_s": single,
        "single_images_per_s_before": before["images_per_s"],
        "single_images_per_s_after": after["images_per_s"],
        "runs": [before, *ddp.values(), after],
        "torch": torch.__version__,
        "git": git_commit(),
    }
    if 1 in ddp:
        report["ddp_images_per_s"] = ddp[1]["images_per_s"]
        report["ratio"] = ddp[1]["images_per_s"] / single
        report["ddp_cost"] = 1 - report["ratio"]
    print(
        f"\n{'path':<26} {'world':>5} {'img/s':>9} {'a rank':>9} {'vs one process':>15}  through  ({report['device']})"
    )
    for run in report["runs"]:
        print(
            f"{run['label']:<26} {run['world_size']:>5} {run['images_per_s']:>9.2f} "
            f"{run['per_rank_images_per_s']:>9.2f} {run['images_per_s'] / single:>15.3f}  "
            f"{', '.join(run['trained_through'])}"
        )
    if "ddp_cost" in report:
        print(f"DDP path at 1 rank costs {100 * report['ddp_cost']:.1f}% (target < 5%)")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
