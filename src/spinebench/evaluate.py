"""`spinebench-eval`: score a finished run's best checkpoint on another dataset's test split, without training.

    spinebench-eval ckpt=outputs/detection_phantom/faster_rcnn-default-s0 data=detection_real
    spinebench-eval ckpt=outputs/segmentation_phantom/deeplabv3-default-s0 data=segmentation_human_phantom

Writes the same files as a training run (no checkpoints) into outputs/<data.name>/<run_name>, with
`checkpoint_run` in metrics.json naming the training run. The work is in spinebench.pipeline.evaluate.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from spinebench.entry import Entry, check_overrides
from spinebench.errors import ConfigError
from spinebench.hydra_run import CONFIG_DIR
from spinebench.pipeline import evaluate
from spinebench.run_folder import checkpoint_run_folder

INFO_FLAGS = ("-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-sc", "--shell-completion", "--version")


def run_id(ckpt: str) -> str:
    """ "<run name>@<its data name>" of the run a ckpt= names: the name of an evaluation's own folder."""
    try:
        run = checkpoint_run_folder(ckpt).resolve()
    except ConfigError:  # evaluate() refuses it with this message; the folder name must still resolve
        run = Path(str(ckpt)).expanduser().resolve()
    return f"{run.name}@{run.parent.name}"


if not OmegaConf.has_resolver("spinebench.run_id"):
    OmegaConf.register_new_resolver("spinebench.run_id", run_id)


def require_ckpt(argv: list[str]) -> None:
    """Hydra resolves the run folder's name from `ckpt=` before the task starts: without it the user got
    OmegaConf's 185-line InterpolationToMissingValueError instead of this line."""
    if any(arg.split("=")[0] in INFO_FLAGS for arg in argv):
        return
    if not any(arg.partition("=")[0].lstrip("+") == "ckpt" for arg in argv):
        raise ConfigError(
            "ckpt= is not set: add ckpt=<training run folder> (e.g. "
            "ckpt=outputs/detection_phantom/faster_rcnn-default-s0)"
        )


ENTRY = Entry("spinebench-eval", argv_checks=(check_overrides, require_ckpt))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def app(cfg: DictConfig) -> float | None:
    doc = ENTRY.run(evaluate, cfg)
    return None if doc is None else next(iter(doc["metrics"].values()), None)


def main() -> None:
    ENTRY.main(app)


if __name__ == "__main__":
    main()
