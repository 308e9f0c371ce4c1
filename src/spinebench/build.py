"""Config node -> object, through Hydra's `_target_`, with the user's mistakes named as such.

A key the target does not take (`+model.foo=1`, a misspelt key in a config file) is a ConfigError naming it,
found from the target's signature before anything is built; an error the target raises for a bad value is
already a SpinebenchError; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import inspect
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
