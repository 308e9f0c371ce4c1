"""Operator counts of a detector's training step: what a step launches, independent of the device's speed.

A torchvision detector's training step on a GPU is bound by its kernel launches and by the host syncs of its
loss (a boolean index, `.item()`), so a count of operators explains step-rate gaps that a CPU cannot time. For
each model, on the CPU, it counts the aten operators dispatched by:
  data path   `to_device` with augmentation: what the spinebench engine adds to a compute-only step
  step        forward + loss + backward + SGD step of an untrained model, on batches of --batch images of which
              k hold a box, for k = 0 .. --batch (the loss's per-image matching depends on k)
and, of those, the host syncs on a GPU: the operators whose output size or value the host must read back
(`is_host_sync`: `nonzero`, `.item()`, indexing or assigning with a boolean mask, `masked_select`, ...). A sync
made inside one counted operator (a boolean index calls `nonzero` below the dispatcher) counts once, with it; a
`.tolist()` or a copy to the host is not dispatched on a CPU and is not seen. The counts do not depend on the
input size, so the models run small (--max-input-size).

    python benchmarks/count_step_ops.py --models retinanet,faster_rcnn --data detection_phantom --json ops.json
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

import torch
from bench_detection_train import PHANTOMS, REPO, dataset, model_benchmark, torchvision_models
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# operators whose output's size (or value) the host reads back from the device, whatever their arguments
ALWAYS_SYNC = {
    aten.nonzero.default,
    aten._local_scalar_dense.default,
    aten.masked_select.default,
    aten.equal.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
}
# indexing with a boolean mask: CUDA turns the mask into indices with nonzero first
MASK_INDEXED = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}


def is_host_sync(func, args: tuple, kwargs: dict) -> bool:
    """Whether this aten call makes the host wait for the device on a GPU."""
    if func in ALWAYS_SYNC:
        return True
    if func in MASK_INDEXED:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if func is aten.repeat_interleave.Tensor:  # the output's length is the repeats' sum, unless given
        return kwargs.get("output_size") is None
    return False


class OpCounter(TorchDispatchMode):
    """Counts every aten operator dispatched while active (autograd's backward ops included), and the host syncs."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.counts[str(func)] += 1
        if is_host_sync(func, args, kwargs):
            self.syncs[str(func)] += 1
        return func(*args, **kwargs)

    def summary(self) -> dict:
        return {
            "ops": sum(self.counts.values()),
            "host_syncs": sum(self.syncs.values()),
            "host_syncs_by_op": dict(self.syncs.most_common()),
        }


def count_model(name: str, args, spec, cache: Path) -> dict:
    from spinebench.contract import RunContext
    from spinebench.data.detection import read_detection_split
    from spinebench.detection.data import build_dataset, collate, to_device
    from spinebench.engine import TrainerConfig
    from spinebench.engine.loop import build_optimizer

    cpu = torch.device("cpu")
    samples = read_detection_split(spec.root, "train")
    data = build_dataset(samples, cache)
    positives = [i for i, s in enumerate(samples) if len(s.boxes)]
    negatives = [i for i, s in enumerate(samples) if not len(s.boxes)]
    if len(positives) < args.batch or len(negatives) < args.batch:
        raise SystemExit(f"{spec.name}: needs {args.batch} training images with a box and {args.batch} without")
    cfg = TrainerConfig.from_config({"device": "cpu", "max_input_size": args.max_input_size})
    family = model_benchmark(name, weights=None)  # configs/model/<name>.yaml, untrained
    ctx = RunContext(Path("."), cache, cfg, cpu, 0, {})
    torch.manual_seed(0)  # weights and augmentation: RetinaNet's count moves by a few operators with them
    model, _ = family._build(ctx, load_weights=False)
    model.train()
    optimizer = build_optimizer(list(model.parameters()), cfg)
    rows = []
    for k in range(args.batch + 1):
        batch = collate([data[i] for i in positives[:k] + negatives[: args.batch - k]])
        with OpCounter() as data_path:
            images, targets, _ = to_device(batch, cpu, augment=True)
        with OpCounter() as step:
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rows.append({"images_with_a_box": k, "step": step.summary(), "data_path": data_path.summary()})
        print(
            f"{name:<12} {k:>2}/{args.batch} with a box   step {rows[-1]['step']['ops']:>6} ops "
            f"{rows[-1]['step']['host_syncs']:>4} host syncs   data path {rows[-1]['data_path']['ops']:>4} ops "
            f"{rows[-1]['data_path']['host_syncs']:>2} host syncs",
            flush=True,
        )
    return {"model": name, "batch": args.batch, "input_size": family.effective_size(ctx), "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=torchvision_models("count"), default="retinanet,faster_rcnn")
    parser.add_argument("--data", default="detection_phantom", choices=PHANTOMS)
    parser.add_argument("--cache", default=os.environ.get("SPINEBENCH_CACHE", str(REPO / ".cache")))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-input-size", type=int, default=160)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from spinebench.runinfo import device_name, git_commit, write_json

    cache = Path(args.cache)
    spec = dataset(args.data, cache)
    models = [count_model(name, args, spec, cache) for name in args.models]
    if args.json:
        write_json(
            args.json,
            {
                "meta": {
                    "data": spec.label,
                    "torch": torch.__version__,
                    "git": git_commit(),
                    "device": device_name("cpu"),
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                "models": models,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
