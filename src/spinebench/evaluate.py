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

from spinebench.pipeline import (CONFIG_DIR, UserError, check_overrides, checkpoint_run_folder, evaluate,
                                 exit_if_a_job_failed, run_guarded)


def run_id(ckpt: str) -> str:
    """"<run name>@<its data name>" of the run a ckpt= names: the name of an evaluation's own folder."""
    try:
        run = checkpoint_run_folder(ckpt).resolve()
    except UserError:  # evaluate() refuses it with this message; the folder name must still resolve
        run = Path(str(ckpt)).expanduser().resolve()
    return f"{run.name}@{run.parent.name}"


if not OmegaConf.has_resolver("spinebench.run_id"):
    OmegaConf.register_new_resolver("spinebench.run_id", run_id)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def app(cfg: DictConfig) -> float | None:
    doc = run_guarded(evaluate, cfg, "spinebench-eval")
    return None if doc is None else next(iter(doc["metrics"].values()), None)


INFO_FLAGS = ("-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-sc", "--shell-completion", "--version")


def refuse_without_ckpt(argv: list[str], program: str) -> None:
    """`ckpt=` is mandatory, and Hydra resolves the run folder's name from it before the task starts: without it
    the user got OmegaConf's 185-line InterpolationToMissingValueError instead of this line."""
    if any(arg.split("=")[0] in INFO_FLAGS for arg in argv):
        return
    if not any(arg.partition("=")[0].lstrip("+") == "ckpt" for arg in argv):
        print(f"{program}: error: ckpt= is not set: add ckpt=<training run folder> (e.g. "
              f"ckpt=outputs/detection_phantom/faster_rcnn-default-s0)", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    check_overrides(sys.argv[1:], "spinebench-eval")
    refuse_without_ckpt(sys.argv[1:], "spinebench-eval")
    app()
    exit_if_a_job_failed("spinebench-eval")


if __name__ == "__main__":
    main()
