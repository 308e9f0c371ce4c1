"""`spinebench-train`: train and test one model on one dataset (Hydra; see configs/train.yaml).

    spinebench-train model=faster_rcnn data=detection_phantom trainer=smoke
    spinebench-train experiment=paper/yolov8m data=detection_real
    spinebench-train experiment=paper/ssd300 debug=smoke         # the smoke budget, in its own run folder
    spinebench-train -m model=faster_rcnn,retinanet seed=0,1,2    # a sweep; a failed job does not stop it

The work is in spinebench.pipeline.train; the run folder is outputs/<data.name>/<run_name> (resumes there).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from spinebench.entry import Entry
from spinebench.hydra_run import CONFIG_DIR
from spinebench.pipeline import train

ENTRY = Entry("spinebench-train")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def app(cfg: DictConfig) -> float | None:
    doc = ENTRY.run(train, cfg)
    return None if doc is None else next(iter(doc["metrics"].values()), None)  # a sweeper's objective


def main() -> None:
    ENTRY.main(app)


if __name__ == "__main__":
    main()
