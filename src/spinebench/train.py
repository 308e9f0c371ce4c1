"""`spinebench-train`: train and test one model on one dataset (Hydra; see configs/train.yaml).

    spinebench-train model=faster_rcnn data=detection_phantom trainer=smoke
    spinebench-train experiment=paper/yolov8m data=detection_real
    spinebench-train -m model=faster_rcnn,retinanet seed=0,1,2      # a sweep; a failed job does not stop it

The work is in spinebench.pipeline.train; the run folder is outputs/<data.name>/<run_name> (resumes there).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from spinebench.pipeline import CONFIG_DIR, check_overrides, exit_if_a_job_failed, run_guarded, train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def app(cfg: DictConfig) -> float | None:
    doc = run_guarded(train, cfg, "spinebench-train")
    return None if doc is None else next(iter(doc["metrics"].values()), None)  # a sweeper's objective


def main() -> None:
    check_overrides(sys.argv[1:], "spinebench-train")
    app()
    exit_if_a_job_failed("spinebench-train")


if __name__ == "__main__":
    main()
