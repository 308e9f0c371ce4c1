"""Config checks the schemas share: OmegaConf's errors and a command line's typos as one-line ConfigErrors, the ranges
and choices a dataclass field declares (at_least, one_of), and the small validators model adapters use for their own
settings (a wrong value from the command line otherwise fails deep in a network's construction, naming neither the
key nor the value)."""

from __future__ import annotations

import difflib
import inspect
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field, fields
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from spinebench.engine import schedules
from spinebench.errors import ConfigError

EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def known_keys(schema: type) -> list[str]:
    return sorted(typing.get_type_hints(schema))


def config_error(error: OmegaConfBaseException, schema: type, prefix: str, value: Any = None) -> ConfigError:
    """OmegaConf's three-line error for a key `schema` lacks, or a value of the wrong type, as one line naming it."""
    key = str(error.full_key or error.key or "")
    if isinstance(error, ConfigKeyError) or key.split(".")[0] not in known_keys(schema):
        return ConfigError(f"unknown key {prefix}.{key} (known: {', '.join(known_keys(schema))})")
    annotation = typing.get_type_hints(schema)[key.split(".")[0]]
    expected = [
        EXPECTED.get(t, getattr(t, "__name__", str(t)))
        for t in typing.get_args(annotation) or (annotation,)
        if t is not type(None)
    ]
    value = getattr(error, "value", None) if value is None else value
    return ConfigError(f"{prefix}.{key} must be {' or '.join(expected)}, got {value!r}")


def build(schema: type, node: Any, prefix: str, overrides: Mapping[str, Any], replaced: Sequence[str] = ()) -> Any:
    """A `schema` instance from `node` (DictConfig or mapping) and `overrides`, through OmegaConf (types and keys
    checked as at compose time); a key in `replaced` is taken whole from them, not merged into its default."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    data.update(overrides)
    base = OmegaConf.structured(schema)
    for name in (name for name in replaced if name in data):
        base[name] = MISSING
    try:
        return OmegaConf.to_object(OmegaConf.merge(base, data))
    except OmegaConfBaseException as error:
        raise config_error(error, schema, prefix) from None


def at_least(least: int, default: Any) -> Any:
    """A dataclass field whose value, unless None, must be >= `least` (check_values)."""
    return field(default=default, metadata={"at_least": least})


def one_of(*choices: str, pattern: str | None = None) -> Any:
    """A dataclass field whose value must be one of `choices` (or match `pattern`, which they describe); the first is
    the default (check_values)."""
    return field(default=choices[0], metadata={"one_of": choices, "pattern": pattern})


def check_values(obj: Any, prefix: str) -> None:
    """The ranges and choices the fields of dataclass `obj` declare with at_least() and one_of()."""
    for spec in fields(obj):
        value, least, choices = getattr(obj, spec.name), spec.metadata.get("at_least"), spec.metadata.get("one_of")
        if least is not None and value is not None and value < least:
            raise ConfigError(f"{prefix}.{spec.name} must be {'> 0' if least == 1 else f'>= {least}'}, got {value}")
        pattern = spec.metadata.get("pattern") or "|".join(map(re.escape, choices or ()))
        if choices and not re.fullmatch(pattern, str(value)):
            said = f"{', '.join(choices[:-1])} or {choices[-1]}"
            raise ConfigError(f"{prefix}.{spec.name} must be {said}, got {value!r}")


def _keywords(*callables: Any) -> set[str]:
    """The keyword arguments any of `callables` takes (their first, the params or the optimizer, left out)."""
    return {"_target_", "_partial_"}.union(*(list(inspect.signature(f).parameters)[1:] for f in callables))


def _classes(module: Any, base: type) -> list[type]:
    return [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, base) and c is not base]


# What a `trainer.optimizer.<key>` or `trainer.scheduler.<key>` may name: a keyword of a torch optimizer, or of a
# schedule here or in torch (with a few examples for the message)
TARGET_KEYWORDS = {
    "optimizer": (_keywords(*_classes(torch.optim, torch.optim.Optimizer)), "lr, momentum, weight_decay, betas"),
    "scheduler": (
        _keywords(
            schedules.cosine,
            schedules.poly,
            schedules.step,
            schedules.constant,
            *_classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
        ),
        "warmup_epochs, warmup_iters, min_lr_ratio, power, step_size, gamma",
    ),
}


def check_target_keyword(group: str, name: str, prefix: str = "trainer") -> None:
    """A command line's typo in a key of the optimizer or the schedule, as one line (Hydra's message is seven)."""
    known, examples = TARGET_KEYWORDS[group]
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"e.g. {examples}"
        raise ConfigError(
            f"unknown key {prefix}.{group}.{name}: no torch {group} takes it ({hint}); "
            f"++{prefix}.{group}.{name}=... gives it to one of your own"
        )


def check_override(schema: type, prefix: str, path: Sequence[str], value: str | None = None) -> None:
    """`<prefix>.<path>=<value>` from a command line, checked against `schema` before Hydra composes: an unknown key,
    or (given the value's text, parsed by Hydra's grammar, each value of a sweep) a value of the wrong type."""
    if path[0] not in known_keys(schema):
        raise ConfigError(f"unknown key {prefix}.{path[0]} (known: {', '.join(known_keys(schema))})")
    if path[0] in TARGET_KEYWORDS and len(path) > 1:
        check_target_keyword(path[0], path[1], prefix)
    if value is None or len(path) > 1:
        return
    try:
        override = OverridesParser.create().parse_override(f"{prefix}.{path[0]}={value}")
    except Exception:  # noqa: BLE001 - outside Hydra's grammar: Hydra's own error is the one to see
        return
    for each in override.sweep_iterator() if override.is_sweep_override() else [override.value()]:
        try:
            OmegaConf.merge(OmegaConf.structured(schema), {path[0]: each})
        except OmegaConfBaseException as error:
            raise config_error(error, schema, prefix, each) from None


def input_size(value: Any, key: str = "model.input_size") -> list[int]:
    """A model's [height, width] in pixels, or a ConfigError naming the key (int() on 'abc' named neither)."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_int(v) and v > 0 for v in value)
    ):
        raise ConfigError(f"{key} must be [height, width] in pixels, got {value!r}")
    return list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, key: str, allow_zero: bool = False) -> int:
    """A model's integer setting (a padding multiple, a rank), or a ConfigError naming the key."""
    if not _is_int(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value}: must be {'a non-negative' if allow_zero else 'a positive'} integer")
    return int(value)


def positive_ints(value: Any, key: str) -> list[int]:
    """A model's list of widths, or a ConfigError naming the key."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or not all(_is_int(v) and v > 0 for v in value)
    ):
        raise ConfigError(f"{key}={value}: must be a list of positive integers")
    return [int(v) for v in value]


def non_negative_number(value: Any, key: str) -> float:
    """A model's weight (a loss term's), or a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{key}={value}: must be a number >= 0")
    return float(value)


# Keywords of an optimizer or a schedule that no torch class takes below zero (last_epoch=-1 and the like may be)
NON_NEGATIVE = {
    "lr",
    "max_lr",
    "min_lr",
    "eta_min",
    "initial_lr",
    "weight_decay",
    "momentum",
    "dampening",
    "eps",
    "betas",
    "alpha",
    "rho",
    "lr_decay",
    "initial_accumulator_value",
    "gamma",
    "power",
    "min_lr_ratio",
    "warmup_epochs",
    "warmup_iters",
    "warmup_ratio",
    "step_size",
    "T_max",
    "T_0",
    "factor",
    "total_iters",
}


def check_numbers(node: Any, where: str) -> None:
    """Every number in an optimizer's or a schedule's block is finite, and the rates, decays and momenta are not
    negative: torch trains on with lr=nan (NaN weights, a metrics.json of them) or a negative rate (uphill)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if str(key) in NON_NEGATIVE:
                for each in value if isinstance(value, (list, tuple)) else [value]:
                    if _is_number(each) and each < 0:
                        raise ConfigError(f"{where}.{key} must be >= 0, got {value}")
            check_numbers(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            check_numbers(value, f"{where}[{index}]")
    elif _is_number(node) and not math.isfinite(node):
        raise ConfigError(f"{where} must be a finite number, got {node}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
