"""The real configs composed as a command line would, for tests that call the runner in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import spinebench.evaluate  # noqa: F401 - registers the spinebench.run_id resolver eval.yaml uses
from spinebench.hydra_run import CONFIG_DIR


def compose_cfg(
    config_name: str, overrides: list[str], out: Path, cache_dir: Path, run_dir: Path | None = None
) -> DictConfig:
    """`config_name` (train or eval) with `overrides`, its run folder `run_dir` (default out/run); Hydra's own
    config is set as a running command's would be."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"paths.root_dir={out}", f"paths.cache_dir={cache_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir or out / "run")
        del cfg["hydra"]
    return cfg
