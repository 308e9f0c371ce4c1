"""The trainer settings (`configs/trainer/*.yaml`), validated once so a wrong override fails in one line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch


class ConfigError(ValueError):
    """A config value the user gave is unusable; the message names the key and what was expected."""


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # cosine | poly | step | constant
    warmup_epochs: float = 0.0
    warmup_iters: int | None = None  # overrides warmup_epochs when set (SAMed: 250 iterations)
    warmup_factor: float = 0.001  # lr multiplier at iteration 0 of the warmup
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    power: float = 0.9  # poly
    step_size: float = 10.0  # step: epochs between decays
    gamma: float = 0.1  # step


@dataclass
class TrainerConfig:
    name: str = "default"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    epochs: int = 10
    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 4
    data_on_device: str = "auto"  # train/val splits held in device memory: auto (a CUDA GPU they fit) | true | false
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip: float | None = None
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    monitor: str | None = None  # metric choosing `best`; None -> the task's default (mAP50_95, mean_dice)
    mode: str = "max"
    seed: int = 0
    deterministic: bool = True
    progress: str = "auto"  # auto (rich bars on a TTY) | true | false
    limit_train_batches: int | None = None  # smoke runs: stop each epoch after this many batches
    limit_val_batches: int | None = None
    limit_test_images: int | None = None
    max_input_size: int | None = None  # smoke runs: cap a model's input size (models that cannot shrink ignore it)
    fps_images: int = 50  # batch-1 inference FPS: timed images
    fps_warmup: int = 5
    cpu_fps_images: int = 0  # a GPU run times this many on the CPU too (the paper's CPU column); 0: not
    cpu_fps_warmup: int = 2
    augment: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, **overrides: Any) -> "TrainerConfig":
        """Build from a (DictConfig or dict) trainer block; unknown keys and wrong types raise ConfigError."""
        data = _to_dict(cfg or {})
        data.update(overrides)
        return _build(cls, data, "trainer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def val_batch_size(self) -> int:
        return self.eval_batch_size or self.batch_size


def input_size(value: Any, key: str = "model.input_size") -> list[int]:
    """A model's [height, width] in pixels, or a ConfigError naming the key (int() on 'abc' named neither)."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{key} must be [height, width] in pixels, got {value!r}")
    return list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, key: str, allow_zero: bool = False) -> int:
    """A model's integer setting (a padding multiple, a rank), or a ConfigError naming the key: `abc` from the
    command line otherwise fails deep in the network's construction, naming neither."""
    if not _is_int(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value}: must be {'a non-negative' if allow_zero else 'a positive'} integer")
    return int(value)


def positive_ints(value: Any, key: str) -> list[int]:
    """A model's list of widths, or a ConfigError naming the key."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
            or not all(_is_int(v) and v > 0 for v in value)):
        raise ConfigError(f"{key}={value}: must be a list of positive integers")
    return [int(v) for v in value]


def non_negative_number(value: Any, key: str) -> float:
    """A model's weight (a loss term's), or a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{key}={value}: must be a number >= 0")
    return float(value)


def check_trainer_key(path: Sequence[str]) -> None:
    """Raise ConfigError, as a bad value does, when `trainer.<path>` names no setting (a typo on the command line,
    `trainer.epoch=3`, which Hydra would answer in seven lines suggesting `+trainer.epoch`)."""
    cls, prefix = TrainerConfig, "trainer"
    for name in path:
        _require_field(cls, name, prefix)
        cls, prefix = NESTED.get(name) if cls is TrainerConfig else None, f"{prefix}.{name}"
        if cls is None:  # a plain value: anything below it is Hydra's to judge
            return


def _require_field(cls, name: str, prefix: str) -> None:
    """The one 'unknown key' error, for a config file's keys (_build) and the command line's (check_trainer_key)."""
    fields = sorted(f.name for f in dataclasses.fields(cls))
    if name not in fields:
        raise ConfigError(f"unknown key {prefix}.{name} (known: {', '.join(fields)})")


def _to_dict(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def _coerce(value: Any, annotation: str, key: str) -> Any:
    optional = "None" in annotation
    base = annotation.replace("| None", "").replace("None |", "").strip()
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be null (expected {base})")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if base == "str":
        if isinstance(value, bool):  # progress=false from the command line
            return str(value).lower()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if base == "tuple":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(float(v) for v in value)
    return value


def _build(cls, data: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(data):  # the first unknown key in sorted order, as before
        _require_field(cls, name, prefix)
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        key = f"{prefix}.{name}"
        nested = NESTED.get(name) if cls is TrainerConfig else None
        if nested is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping, got {value!r}")
            kwargs[name] = _build(nested, dict(value), key)
        else:
            kwargs[name] = _coerce(value, str(f.type), key)
    out = cls(**kwargs)
    _check(out, prefix)
    return out


NESTED = {"optimizer": OptimizerConfig, "scheduler": SchedulerConfig}  # TrainerConfig's sub-blocks


def _check(obj: Any, prefix: str) -> None:
    def positive(name: str, allow_zero: bool = False) -> None:
        value = getattr(obj, name)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            raise ConfigError(f"{prefix}.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    if isinstance(obj, TrainerConfig):
        for name in ("epochs", "batch_size", "eval_batch_size", "limit_train_batches", "limit_val_batches",
                     "limit_test_images", "fps_images", "max_input_size"):
            positive(name)
        positive("num_workers", allow_zero=True)
        positive("fps_warmup", allow_zero=True)
        positive("cpu_fps_images", allow_zero=True)
        positive("cpu_fps_warmup", allow_zero=True)
        if obj.mode not in ("max", "min"):
            raise ConfigError(f"{prefix}.mode must be max or min, got {obj.mode!r}")
        if obj.data_on_device not in ("auto", "true", "false"):
            raise ConfigError(f"{prefix}.data_on_device must be auto, true or false, got {obj.data_on_device!r}")
        if obj.progress not in ("auto", "true", "false", "True", "False"):
            raise ConfigError(f"{prefix}.progress must be auto, true or false, got {obj.progress!r}")
        if not (obj.device == "auto" or obj.device == "cpu" or obj.device.startswith("cuda")):
            raise ConfigError(f"{prefix}.device must be auto, cpu or cuda[:N], got {obj.device!r}")
    elif isinstance(obj, OptimizerConfig):
        if obj.name.lower() not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"{prefix}.name must be sgd, adam or adamw, got {obj.name!r}")
        positive("lr")
    elif isinstance(obj, SchedulerConfig):
        if obj.name.lower() not in ("cosine", "poly", "step", "constant"):
            raise ConfigError(f"{prefix}.name must be cosine, poly, step or constant, got {obj.name!r}")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device when there is one, else the CPU; an unavailable CUDA request fails clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but no CUDA device is available (use trainer.device=cpu)")
    return device
