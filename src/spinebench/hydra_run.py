"""What spinebench asks of Hydra about the running command: its config folder, its choices and overrides (for the
record's recipe label), its output folder, and whether it is one job of a sweep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import spinebench.engine.config  # noqa: F401 - registers trainer/base, the schema configs/trainer/*.yaml extend

# The repository's configs/ (src/spinebench/../../configs). Absolute because Hydra resolves a relative
# config_path of an installed entry point against the package (pkg://), which cannot reach the repo root.
CONFIG_DIR = str(Path(os.environ.get("SPINEBENCH_CONFIGS", Path(__file__).resolve().parents[2] / "configs")))
if not OmegaConf.has_resolver("spinebench.cwd"):  # configs/paths/default.yaml's root_dir
    OmegaConf.register_new_resolver("spinebench.cwd", os.getcwd)
if not OmegaConf.has_resolver("spinebench.sha256"):  # configs/data/*.yaml's splits_sha256: the split file's content
    from spinebench.data.splits import content_sha256

    OmegaConf.register_new_resolver("spinebench.sha256", content_sha256)
if not OmegaConf.has_resolver("spinebench.rank_zero"):  # configs/hydra/default.yaml: under torchrun only rank 0
    OmegaConf.register_new_resolver(  # writes the run folder's .hydra/ (the other ranks compose the same config)
        "spinebench.rank_zero", lambda value: value if os.environ.get("RANK", "0") == "0" else None
    )

# Overrides that say where files go or which config files were chosen (the label names those already).
NOT_RECIPE = (
    "paths.",
    "run_name=",
    "skip_finished=",
    "hydra.",
    "data=",
    "data.root=",
    "data.name=",
    "model=",
    "trainer=",
    "experiment=",
    "debug=",
    "gpus=",
    "resources.",
    "hydra/",
)


def hydra_config() -> Any:
    """Hydra's own config of this run, or None outside a Hydra app (the Python API, tests)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def output_dir() -> Path | None:
    """The run's folder; None outside a Hydra app, or where Hydra composed without running (tests)."""
    hydra = hydra_config()
    folder = OmegaConf.select(hydra, "runtime.output_dir", throw_on_missing=False) if hydra else None
    return Path(folder) if folder else None


def is_multirun() -> bool:
    from hydra.types import RunMode

    hydra = hydra_config()
    return bool(hydra) and hydra.mode == RunMode.MULTIRUN


def config_label(choices: dict[str, Any] | None = None, overrides: list[str] | None = None) -> str | None:
    """The recipe of the run, for the results' traceability table: the experiment file when one was used, else
    model + trainer, then a debug preset, then the command-line overrides that change training."""
    hydra = hydra_config()
    choices = (dict(hydra.runtime.choices) if hydra else {}) if choices is None else choices
    overrides = (list(hydra.overrides.task) if hydra else []) if overrides is None else overrides
    if choices.get("experiment"):
        label = f"experiment/{choices['experiment']}.yaml"
        if any(o.lstrip("+").startswith("model=") for o in overrides):  # another network under the recipe
            label += f" + model/{choices.get('model')}.yaml"
        if choices.get("trainer") not in (None, "default"):
            label += f" + trainer/{choices['trainer']}.yaml"
    elif choices.get("model"):
        label = f"model/{choices['model']}.yaml + trainer/{choices.get('trainer', 'default')}.yaml"
    else:
        return None
    if choices.get("debug"):
        label += f" + debug/{choices['debug']}.yaml"
    recipe = [o for o in overrides if not o.lstrip("+~").startswith(NOT_RECIPE)]
    return label + (" " + " ".join(recipe) if recipe else "")


def refuse_smoke_preset_under_an_experiment() -> None:
    """`experiment=<e> trainer=smoke` trained the paper's epochs and batch size (an experiment's trainer keys win
    over a preset's) in the real row's folder: a smoke budget on a recipe is `debug=smoke`."""
    hydra = hydra_config()
    choices = dict(hydra.runtime.choices) if hydra else {}
    if choices.get("experiment") and choices.get("trainer") == "smoke" and not choices.get("debug"):
        from spinebench.errors import ConfigError

        raise ConfigError(
            f"experiment={choices['experiment']} sets its own trainer (epochs, batch size, run folder), which wins "
            "over trainer=smoke: for the smoke budget on a recipe give debug=smoke instead"
        )
