"""Config node -> object, through Hydra's `_target_`, with the user's mistakes named as such.

A key the target does not take (`+model.foo=1`, a misspelt key in a config file) is a ConfigError naming it,
found from the target's signature before anything is built; an error the target raises for a bad value is
already a SpinebenchError; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from spinebench.errors import ConfigError, SpinebenchError

HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def check_keys(node: Any, where: str) -> None:
    """Every `_target_` node below `node` names only keywords its callable takes (or it takes **kwargs)."""
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        node_keys = [str(key) for key, _ in items]
        if "_target_" in node_keys:
            target = node["_target_"]
            try:
                function = get_object(target)
            except Exception as error:  # Hydra says which import failed
                raise ConfigError(f"{where}._target_={target}: cannot be imported ({error})") from error
            parameters = inspect.signature(function).parameters.values()
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                takes = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
                unknown = [key for key in node_keys if key not in takes and key not in HYDRA_KEYS]
                if unknown:
                    raise ConfigError(
                        f"unknown key {where}.{unknown[0]}: {target} takes "
                        f"{', '.join(sorted(takes - {'self'})) or 'no settings'} (added with +, or "
                        "misspelt in its config?)"
                    )
        for key, value in items:
            check_keys(value, f"{where}.{key}")
    elif isinstance(node, (ListConfig, list)):
        for index, value in enumerate(node):
            check_keys(value, f"{where}[{index}]")


def build(node: DictConfig | None, what: str) -> Any:
    """Instantiate the `what` config group's node (`data`, `model`), or say how to select one."""
    if node is None or "_target_" not in node:
        raise ConfigError(f"no {what} selected: add {what}=<name> (see configs/{what}/)")
    check_keys(node, what)
    try:
        return instantiate(node, _convert_="all")
    except MissingMandatoryValue as error:  # `???`, also as an unset environment variable's default
        raise unset(error) from None
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, SpinebenchError):
            raise cause from None
        raise


def unset(error: MissingMandatoryValue) -> ConfigError:
    key = error.full_key
    hint = (
        (
            " (the folder of the release; or set the environment variable its configs/data file reads, and "
            "`spinebench data fetch` gets a release)"
        )
        if key == "data.root"
        else ""
    )
    return ConfigError(f"{key} is not set: add {key}=<value> to the command{hint}")


def to_container(node: Any) -> Any:
    """The node resolved to plain Python; an unset mandatory value (`???`) is a ConfigError naming the key."""
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        raise unset(error) from None


def suite_targets(config_dir: Path | str) -> set[str]:
    """Every `_target_` the suite's own config files name (configs/**/*.yaml): what its models are built from."""
    found: set[str] = set()
    for path in Path(config_dir).rglob("*.yaml"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("#")[0].strip().partition(":")
            if key.strip("- ") == "_target_" and value.strip():
                found.add(value.strip().strip("'\""))
    return found


def _builds_a_model(target: str) -> bool:
    """A spinebench class that is a Benchmark or a network, or a spinebench function declared to return one.
    Only spinebench's own modules are imported to find out: importing is running code."""
    if not target.startswith("spinebench."):
        return False
    from torch import nn

    from spinebench.contract import Benchmark

    try:
        thing = get_object(target)
    except Exception:  # noqa: BLE001 - not importable: not one of the suite's
        return False
    if isinstance(thing, type):
        return issubclass(thing, (Benchmark, nn.Module))
    try:
        returned = typing.get_type_hints(thing).get("return") if inspect.isfunction(thing) else None
    except Exception:  # noqa: BLE001 - an annotation that does not resolve says nothing
        return False
    return isinstance(returned, type) and issubclass(returned, (Benchmark, nn.Module))


def check_saved_targets(node: Any, where: str, known: set[str]) -> None:
    """A config read from a run folder (spinebench-eval's ckpt=) is data, not code: each `_target_` in it must be
    one the suite's configs name (`known`) or a model of the suite (_builds_a_model), else it is refused before
    anything is imported or built (any importable callable would otherwise run with the file's arguments)."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and (not isinstance(target, str) or not (target in known or _builds_a_model(target))):
            raise ConfigError(
                f"{where}._target_={target!r}: not a model of this suite; spinebench-eval builds a run folder's "
                "model only from the suite's own classes (was its config.yaml edited?)"
            )
        for key, value in node.items():
            check_saved_targets(value, f"{where}.{key}", known)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            check_saved_targets(value, f"{where}[{index}]", known)
