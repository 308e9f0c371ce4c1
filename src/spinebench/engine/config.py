"""The trainer settings. `TrainerConfig` is the schema of configs/trainer/*.yaml (`trainer/base`), so Hydra refuses a
wrong key or type when it composes; from_config() checks those and the ranges of any other config, in one line."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from spinebench.engine import checks
from spinebench.engine.checks import at_least, input_size, non_negative_number, one_of, positive_int, positive_ints  # noqa: F401
from spinebench.errors import ConfigError

# the defaults of the Python API; configs/trainer/ chooses a file of optimizer/ and of scheduler/ instead
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
COSINE = {"_target_": "spinebench.engine.schedules.cosine", "_partial_": True}


@dataclass
class TrainerConfig:
    name: str = "default"
    device: str = one_of("auto", "cpu", "cuda[:N]", pattern=r"auto|cpu|cuda(:\d+)?")
    epochs: int = at_least(1, 10)
    batch_size: int = at_least(1, 8)
    eval_batch_size: int | None = at_least(1, None)
    num_workers: int = at_least(0, 4)
    data_on_device: str = one_of("auto", "true", "false")  # train/val splits held in device memory (auto: if they fit)
    optimizer: Any = field(default_factory=lambda: dict(SGD))  # `_partial_` targets (see spinebench.engine)
    scheduler: Any = field(default_factory=lambda: dict(COSINE))
    grad_clip: float | None = None
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    monitor: str | None = None  # metric choosing `best`; None -> the task's default (mAP50_95, mean_dice)
    mode: str = one_of("max", "min")
    seed: int = 0
    deterministic: bool = True
    progress: str = one_of("auto", "true", "false")  # auto: rich bars on a TTY
    limit_train_batches: int | None = at_least(1, None)  # smoke runs: stop each epoch after this many batches
    limit_val_batches: int | None = at_least(1, None)
    limit_test_images: int | None = at_least(1, None)
    max_input_size: int | None = at_least(1, None)  # smoke runs: cap a model's input size (if it can shrink)
    fps_images: int = at_least(1, 50)  # batch-1 inference FPS: timed images
    fps_warmup: int = at_least(0, 5)
    cpu_fps_images: int = at_least(0, 0)  # a GPU run times this many on the CPU too (the paper's CPU column)
    cpu_fps_warmup: int = at_least(0, 2)
    augment: bool = True

    def __post_init__(self) -> None:
        self.progress, self.data_on_device = str(self.progress).lower(), str(self.data_on_device).lower()  # from bools
        checks.check_values(self, "trainer")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            # a negative norm flips the gradient (training goes uphill); 0 or null: no clipping
            raise ConfigError(f"trainer.grad_clip must be a finite number >= 0 (0 or null: off), got {self.grad_clip}")
        for name in ("optimizer", "scheduler"):
            checks.check_numbers(getattr(self, name), f"trainer.{name}")
        for name in (name for name in ("optimizer", "scheduler") if not isinstance(getattr(self, name), Mapping)):
            what = f"a mapping with a _target_ (trainer/{name}=<file of configs/trainer/{name}/>)"
            raise ConfigError(f"trainer.{name} must be {what}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, **overrides: Any) -> TrainerConfig:
        """From a trainer block (DictConfig or dict). An optimizer or scheduler given replaces the default whole:
        one torch class's keywords do not fit another's."""
        return checks.build(cls, node, "trainer", overrides, replaced=("optimizer", "scheduler"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def val_batch_size(self) -> int:
        return self.eval_batch_size or self.batch_size


SCHEMA = OmegaConf.structured(TrainerConfig)
SCHEMA.optimizer = SCHEMA.scheduler = MISSING  # each from its group's file: never SGD's keys merged under AdamW's
ConfigStore.instance().store(group="trainer", name="base", node=SCHEMA)


def check_trainer_key(path: Sequence[str], value: str | None = None) -> None:
    """`trainer.<path>=<value>` from a command line, refused in one line (Hydra's own message is seven): see
    check_override. `value` is the text after `=`; without it only the key is checked."""
    checks.check_override(TrainerConfig, "trainer", path, value)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when there is one, else the CPU; an unavailable CUDA request fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available (use trainer.device=cpu)")
    return device
