"""What a DDP test runs on each rank (torch.multiprocessing.spawn imports it by name in the child processes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spinebench.engine import EpochSampler, TrainerConfig, distributed, fit

GLOBAL_BATCH = 8


class Regressor:
    """A tiny regressor; `noise` adds a random augmentation (what the engine's per-epoch seeding must control)."""

    def __init__(self, noise: float = 0.0, die_at_step: int | None = None):
        torch.manual_seed(123)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
        self.noise, self.die_at_step, self.steps = noise, die_at_step, 0

    def training_step(self, batch, device):
        self.steps += 1
        if self.steps == self.die_at_step:
            raise KeyboardInterrupt  # a killed process: every rank dies at the same step
        x, y = (t.to(device) for t in batch)
        x = x + self.noise * torch.randn_like(x)
        return nn.functional.mse_loss(self.model(x), y)

    def validation(self, loader, device):
        errors = [nn.functional.mse_loss(self.model(x.to(device)), y.to(device)).item() for x, y in loader]
        return {"neg_mse": -sum(errors) / len(errors)}


def trainer(epochs: int) -> TrainerConfig:
    return TrainerConfig.from_config(
        {
            "device": "cpu",
            "epochs": epochs,
            "progress": "false",
            "seed": 3,
            "batch_size": GLOBAL_BATCH,
            "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"_target_": "spinebench.engine.schedules.constant", "_partial_": True, "warmup_epochs": 0},
        }
    )


def train(run_dir: Path, epochs: int, noise: float = 0.0, die_at_step: int | None = None):
    """fit() on 40 samples at the global batch, in this process's share (all of it outside DDP)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    loader = DataLoader(data, batch_size=distributed.rank_batch_size(GLOBAL_BATCH), sampler=EpochSampler(data, 3))
    module = Regressor(noise, die_at_step)
    try:
        result = fit(module, loader, DataLoader(data, batch_size=20), trainer(epochs), run_dir, {"n": 1}, "neg_mse")
    except KeyboardInterrupt:
        return module, None
    return module, result


def on_rank(rank: int, world: int, store: str, run_dir: str, out: str, epochs: int, noise: float, die: int | None):
    """One rank: joins a gloo group as torchrun's environment would describe it, trains, saves its weights."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        module, result = train(Path(run_dir), epochs, noise, die)
        torch.save(
            {"weights": module.model.state_dict(), "resumed_from": result.resumed_from if result else "killed"},
            Path(out) / f"rank{rank}.pt",
        )
        dist.barrier()  # both ranks done before either tears the group down (a rank that left first aborted gloo)
    finally:
        dist.destroy_process_group()


def agree_on_rank(rank: int, world: int, store: str, out: str):
    """Each rank names another run folder: distributed.agree must refuse on every rank."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        distributed.agree(f"/runs/rank-{rank}", "run folder", "pin one with run_name=...")
    except Exception as error:  # noqa: BLE001 - the test reads what each rank raised
        (Path(out) / f"rank{rank}.txt").write_text(f"{type(error).__name__}: {error}")
    finally:
        dist.destroy_process_group()
