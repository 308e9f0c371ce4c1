"""One training job on several processes, as `torchrun --nproc_per_node=N` starts them (PyTorch DDP).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `join()` turns them into a process group (NCCL on CUDA, gloo on
the CPU) and each rank onto its own GPU. The engine then gives each rank a shard of every epoch
(EpochSampler), averages gradients through DistributedDataParallel, and lets rank 0 alone write checkpoints,
logs, progress bars and results. `trainer.batch_size` stays the recipe's global batch (the paper's): each rank
loads batch_size / N images a step, so the steps, the learning rate and the checkpoint are the same as in one
process, and a DDP checkpoint resumes and evaluates in one process.

Outside torchrun every function here is the single-process answer (rank 0 of 1), so the engine calls them
unconditionally.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from spinebench.errors import ConfigError

log = logging.getLogger(__name__)


def launched() -> bool:
    """This process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def join(device: str) -> None:
    """Join torchrun's process group (once; nothing outside torchrun). Ranks other than 0 log warnings and
    errors only, and not into the run folder's log file, which is rank 0's."""
    if not launched() or dist.is_initialized():
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda:"):
        raise ConfigError(
            f"trainer.device={device}: under torchrun each rank takes the GPU of its LOCAL_RANK; give "
            "trainer.device=cuda (or auto)"
        )
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started rank {local} on a machine with {torch.cuda.device_count()} GPU(s): "
                "give --nproc_per_node at most the GPU count"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_rank() != 0:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
        root.setLevel(logging.WARNING)


def agree(value: Any, what: str, remedy: str) -> None:
    """Every rank must hold the same `value` (its run folder, its config): a ConfigError naming the first rank
    that differs from rank 0 otherwise, on every rank."""
    if not active():
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    for other, seen in enumerate(values[1:], start=1):
        if seen != values[0]:
            raise ConfigError(f"torchrun: rank {other}'s {what} is {seen}, rank 0's is {values[0]}: {remedy}")


def share(value: Any = None) -> Any:
    """Rank 0's `value`, on every rank (rank 0's decision: train, or skip a finished run)."""
    if not active():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(indices: list[int], rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's share of an epoch's order: padded with its first indices to a multiple of the world size (as
    torch's DistributedSampler pads), then every N-th from this rank's position, so all ranks take as many steps
    and, at a per-rank batch of B/N, step k of all ranks together sees the images of step k in one process."""
    n = world_size() if world is None else world
    if n == 1 or not indices:
        return indices
    total = -(-len(indices) // n) * n
    padded = (indices * (total // len(indices) + 1))[:total]
    return padded[(rank() if rank_ is None else rank_) : total : n]


def rank_batch_size(batch_size: int) -> int:
    """The images one rank loads a step for the global `batch_size`."""
    n = world_size()
    if batch_size % n:
        raise ConfigError(
            f"trainer.batch_size={batch_size} (the global batch) does not divide among {n} ranks: give a multiple "
            f"of {n}, or another --nproc_per_node"
        )
    return batch_size // n


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model DDP trains (gradients averaged over the ranks in backward), or `model` itself in one process."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # static_graph: every step of a model here uses the same parameters, some of them none of its steps (SAMed's
    # point-prompt embeddings), which DDP then learns once instead of searching the graph at every step
    return DistributedDataParallel(model, device_ids=ids, static_graph=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (its state dict has no `module.` prefix)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def check_weights_agree(model: nn.Module, epoch: int) -> None:
    """After an epoch, every rank must hold the same parameters bit for bit (DDP's promise): a digest of them is
    compared, and a difference is a bug, not a user's mistake."""
    if not active():
        return
    digest = hashlib.sha256()
    for parameter in unwrap(model).parameters():
        digest.update(parameter.detach().float().cpu().numpy().tobytes())
    digests: list[Any] = [None] * world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP: the ranks' weights differ after epoch {epoch}: {digests}")
    log.debug("epoch %d: weights agree across %d ranks", epoch, len(digests))


def barrier() -> None:
    if active():
        dist.barrier()
