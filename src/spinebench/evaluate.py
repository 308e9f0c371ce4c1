"""`spinebench-eval`: score a finished run's best checkpoint on another dataset's test split, without training.

    spinebench-eval ckpt=outputs/detection_phantom/faster_rcnn-default-s0 data=detection_real
    spinebench-eval ckpt=outputs/segmentation_phantom/deeplabv3-default-s0 data=segmentation_human_phantom

Writes the same files as a training run (no checkpoints) into outputs/<data.name>/<run_name>, with
`checkpoint_run` in metrics.json naming the training run. The work is in spinebench.pipeline.evaluate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from spinebench.pipeline import CONFIG_DIR, check_overrides, evaluate, run_guarded

if not OmegaConf.has_resolver("spinebench.run_id"):
    # "<run name>@<its data name>" of a run folder given as ckpt=..., the name of an evaluation's own folder
    OmegaConf.register_new_resolver(
        "spinebench.run_id",
        lambda path: f"{Path(str(path)).expanduser().resolve().name}@{Path(str(path)).expanduser().resolve().parent.name}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def app(cfg: DictConfig) -> float | None:
    doc = run_guarded(evaluate, cfg, "spinebench-eval")
    return None if doc is None else next(iter(doc["metrics"].values()), None)


def main() -> None:
    check_overrides(sys.argv[1:], "spinebench-eval")
    app()


if __name__ == "__main__":
    main()
