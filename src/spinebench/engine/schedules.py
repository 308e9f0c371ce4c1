"""The learning-rate schedules of configs/trainer/scheduler/, stepped once per iteration.

`trainer.scheduler` is a `_partial_` target: the engine calls it with the optimizer and those of the keywords
`epochs`, `steps_per_epoch` and `total_steps` its signature takes (so a torch scheduler such as
torch.optim.lr_scheduler.OneCycleLR fits too; one that takes none of them counts its steps in iterations).

Each schedule here is a linear warmup from lr * warmup_factor to lr over `warmup_iters` iterations (or
`warmup_epochs` epochs, fractions allowed, when warmup_iters is null), then its decay over the remaining ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup_then(
    decay: Callable[[int, float], float],
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    warmup_iters: int | None,
    warmup_factor: float,
) -> LambdaLR:
    """decay(step, progress) is the multiplier of lr after the warmup; progress runs from 0 to 1 over the rest."""
    total = max(1, epochs * steps_per_epoch)
    warmup = warmup_iters if warmup_iters is not None else int(round(warmup_epochs * steps_per_epoch))
    warmup = min(max(0, warmup), total - 1) if total > 1 else 0

    def factor(step: int) -> float:
        if step < warmup:
            alpha = step / warmup
            return warmup_factor * (1 - alpha) + alpha
        return decay(step, min(1.0, (step - warmup) / max(1, total - warmup)))

    return LambdaLR(optimizer, factor)


def cosine(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_iters: int | None = None,
    warmup_factor: float = 0.001,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Cosine decay to lr * min_lr_ratio at the last iteration."""

    def decay(step: int, progress: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return _warmup_then(decay, optimizer, epochs, steps_per_epoch, warmup_epochs, warmup_iters, warmup_factor)


def poly(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_iters: int | None = None,
    warmup_factor: float = 0.001,
    power: float = 0.9,
) -> LambdaLR:
    """Polynomial decay to 0: lr * (1 - progress) ** power (SAMed's)."""
    return _warmup_then(
        lambda step, progress: (1 - progress) ** power,
        optimizer,
        epochs,
        steps_per_epoch,
        warmup_epochs,
        warmup_iters,
        warmup_factor,
    )


def step(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_iters: int | None = None,
    warmup_factor: float = 0.001,
    step_size: float = 10.0,
    gamma: float = 0.1,
) -> LambdaLR:
    """lr * gamma every `step_size` epochs (torch's StepLR, counted from the first iteration, warmup included)."""
    every = max(1, round(step_size * steps_per_epoch))
    return _warmup_then(
        lambda step, progress: gamma ** int(step // every),
        optimizer,
        epochs,
        steps_per_epoch,
        warmup_epochs,
        warmup_iters,
        warmup_factor,
    )


def constant(
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_iters: int | None = None,
    warmup_factor: float = 0.001,
) -> LambdaLR:
    """lr itself after the warmup."""
    return _warmup_then(
        lambda step, progress: 1.0, optimizer, epochs, steps_per_epoch, warmup_epochs, warmup_iters, warmup_factor
    )
