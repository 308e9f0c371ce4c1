"""The paper rows are the experiment files: every configs/experiment/paper/*.yaml is smoke-run here with `debug=smoke`
on the tiny phantom of its task (lightning-hydra-template's glob over the experiment configs), so a new row is
tested in CI without editing a test; each is a row of benchmarks/manuscript.yaml, which gives its paper numbers.
The Makefile and scripts/demo.sh find the rows the same way (tests/test_make.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

import spinebench.evaluate  # noqa: F401  (registers the spinebench.run_id resolver eval.yaml uses)
from spinebench.pipeline import train

from helpers.records import check_metrics_keys_documented

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENT_FILES = sorted((CONFIGS / "experiment" / "paper").glob("*.yaml"))
MANUSCRIPT = yaml.safe_load((ROOT / "benchmarks" / "manuscript.yaml").read_text())
# Manuscript rows we have no experiment file for yet (no adapter for the model)
NOT_YET_RUN: set[str] = set()
# Rows whose package is an optional extra (its license): {model: (module, install command)}
OPTIONAL_EXTRAS = {"yolov7": ("sas_yolov7", "pip install -e '.[yolov7]'")}
DEBUG_SMOKE = yaml.safe_load((CONFIGS / "debug" / "smoke.yaml").read_text())

# Segmentation smoke runs are shrunk further (64 px, one timed image) so the four models, SegFormer-B5 and SAMed
# ViT-B included, finish in seconds each; the SegFormer row is checked with the B0 encoder (B5 alone costs ~1-2 min
# on a shared 2-core CPU). Extras for a task or a model: a new row of either task needs none.
TASK_EXTRAS = {"segmentation": ["trainer.max_input_size=64", "trainer.fps_images=1", "trainer.fps_warmup=0"]}
MODEL_EXTRAS = {"segformer": ["model.network.encoder_name=mit_b0", "model.network.decoder_channels=256"]}


def compose_train(overrides: list[str], root: Path | None = None, cache_dir: Path | None = None) -> DictConfig:
    """configs/train.yaml composed as `spinebench-train <overrides>` would, Hydra's own config included."""
    paths = [f"paths.root_dir={root}", f"paths.cache_dir={cache_dir}"] if root else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*paths, *overrides], return_hydra_config=True)


EXPERIMENTS = [path.stem for path in EXPERIMENT_FILES]


@functools.cache
def row_of(experiment: str) -> dict:
    """What an experiment file is, from its composed config: its task (its data default's), model and trainer."""
    cfg = compose_train([f"experiment=paper/{experiment}"])
    return {
        "task": cfg.data.task,
        "model": cfg.model.name,
        "row": cfg.model.get("row") or cfg.model.name,
        "trainer": OmegaConf.to_container(cfg.trainer),
        "run_name": cfg.run_name,
    }


def rows_of(task: str) -> list[str]:
    """The rows of a task, as the Makefile and scripts/demo.sh should find them."""
    return [experiment for experiment in EXPERIMENTS if row_of(experiment)["task"] == task]


def _budget(trainer) -> dict:
    """The trainer keys debug=smoke sets, as composed (typed by the trainer's schema)."""
    return {k: trainer[k] for k in DEBUG_SMOKE["trainer"]}


def test_the_experiment_files_are_the_manuscript_s_rows():
    """Each experiment file is a row of its task's manuscript table (named as the record's `model` names it), and
    each manuscript row has an experiment file or is one we do not run yet."""
    assert EXPERIMENTS, "no configs/experiment/paper/*.yaml"
    tables = {task: set(MANUSCRIPT["tasks"][task]["rows"]) for task in ("detection", "segmentation")}
    for stem in EXPERIMENTS:
        row = row_of(stem)
        assert row["row"] == stem, f"experiment/paper/{stem}.yaml runs model.row={row['row']}"
        assert stem in tables[row["task"]], (
            f"experiment/paper/{stem}.yaml: no {row['task']} row {stem} in manuscript.yaml"
        )
    manuscript_rows = tables["detection"] | tables["segmentation"]
    assert NOT_YET_RUN <= manuscript_rows, sorted(NOT_YET_RUN - manuscript_rows)
    missing = manuscript_rows - set(EXPERIMENTS) - NOT_YET_RUN
    assert not missing, f"manuscript rows with no configs/experiment/paper/<row>.yaml: {sorted(missing)}"


def test_trainer_smoke_is_the_same_budget_as_debug_smoke():
    """`model=<m> trainer=smoke` (no experiment) keeps working with the values debug=smoke sets."""
    preset = yaml.safe_load((CONFIGS / "trainer" / "smoke.yaml").read_text())
    assert {k: v for k, v in preset.items() if k not in ("defaults", "name")} == DEBUG_SMOKE["trainer"]
    trainer = compose_train(["model=faster_rcnn", "trainer=smoke"]).trainer
    assert _budget(trainer) == _budget(compose_train(["model=faster_rcnn", "debug=smoke"]).trainer)
    assert trainer.name == "smoke"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_smoke_wins_over_the_experiment_s_budget_and_keeps_the_rest_of_its_recipe(experiment):
    """debug is composed after experiment: its trainer keys win, the recipe's other keys (optimizer, schedule, the
    trainer's name) stay, and the run gets its own folder, neither the real row's nor trainer=smoke's."""
    cfg = compose_train([f"experiment=paper/{experiment}", "debug=smoke"])
    trainer, paper = OmegaConf.to_container(cfg.trainer), row_of(experiment)["trainer"]
    assert _budget(trainer) == _budget(compose_train(["model=faster_rcnn", "trainer=smoke"]).trainer)
    assert {k: v for k, v in trainer.items() if k not in DEBUG_SMOKE["trainer"]} == {
        k: v for k, v in paper.items() if k not in DEBUG_SMOKE["trainer"]
    }
    assert cfg.run_name == f"{experiment}-{paper['name']}-s0-smoke" != row_of(experiment)["run_name"]
    assert cfg.run_name != compose_train([f"model={cfg.model.name}", "trainer=smoke"]).run_name


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_smoke(experiment, tmp_path, cache_dir):
    """`spinebench-train experiment=paper/<row> debug=smoke data=<task>_phantom_tiny`, in-process: the run lands in
    outputs/<data>/<row>-paper-s0-smoke, every file of its folder is there and metrics.json says what ran."""
    task, model = row_of(experiment)["task"], row_of(experiment)["model"]
    if model in OPTIONAL_EXTRAS:  # a row whose package is an optional extra: skipped, with the command, without it
        package, command = OPTIONAL_EXTRAS[model]
        pytest.importorskip(package, reason=f"{package} is not installed: {command}")
    extras = [*TASK_EXTRAS.get(task, []), *MODEL_EXTRAS.get(model, [])]
    cfg = compose_train(
        [f"experiment=paper/{experiment}", "debug=smoke", f"data={task}_phantom_tiny", *extras], tmp_path, cache_dir
    )
    HydraConfig.instance().set_config(cfg)
    run = Path(cfg.hydra.run.dir)
    assert run == tmp_path / "outputs" / f"{task}_phantom_tiny" / f"{experiment}-{cfg.trainer.name}-s0-smoke"
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        del cfg["hydra"]
    doc = train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(doc, default=str))
    check_metrics_keys_documented(metrics)
    assert metrics["task"] == task and metrics["model"] == experiment and metrics["epochs"] == 1
    assert metrics["config"] == " ".join([f"experiment/paper/{experiment}.yaml + debug/smoke.yaml", *extras])
    assert metrics["data"]["kind"] == "phantom" and metrics["pretrained"] is False
    assert metrics["data"]["domain"] == "porcine"  # from the phantom's stamp: the side of the table it goes to
    assert metrics["test_precision"] == "float32"  # the test split, whatever trainer.amp
    assert metrics["params"] > 1e6 and metrics["fps_batch1"] > 0
    # a CPU run times the CPU only: the speed block is the run's own figures (a GPU run adds the CPU's)
    assert metrics["speed"] == {
        "cpu": {"fps": metrics["fps_batch1"], "load": metrics["load"]["cpu"], "device": metrics["device"]}
    }
    for name in ("config.yaml", "env.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "env.json").read_text())["data"]["kind"] == "phantom"
    CHECKS[task](run, metrics)
    if model == "samed":  # SAM's frozen encoder is not in the checkpoints: only its LoRA layers are
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
        assert all(not k.split("net.", 1)[-1].startswith("image_encoder.") or ".lora_" in k for k in state)


def _check_detection_run(run: Path, metrics: dict) -> None:
    for name in ("ground_truth.json", "predictions.json", "pr_curve.png"):
        assert (run / name).is_file(), name
    for key in ("mAP50", "mAP50_95", "AR100", "precision", "recall"):
        assert 0.0 <= metrics["metrics"][key] <= 1.0, key
    ground_truth = json.loads((run / "ground_truth.json").read_text())
    assert len(ground_truth["images"]) == 2  # debug=smoke scores 2 test images, negatives included


def _check_segmentation_run(run: Path, metrics: dict) -> None:
    assert (run / "summary.json").is_file()
    predictions = sorted((run / "predictions").glob("*.png"))
    assert len(predictions) == 2 and sorted((run / "overlays").glob("*.png"))  # debug=smoke: 2 test images
    with Image.open(predictions[0]) as image:
        assert image.size == (690, 275) and image.mode == "L"
    scores = metrics["metrics"]
    assert set(scores["dice_per_class"]) == set(scores["iou_per_class"]) and len(scores["dice_per_class"]) == 10
    for key in ("mIoU", "mean_dice", "cord_iou", "cord_dice"):
        assert scores[key] is None or 0.0 <= scores[key] <= 1.0, key
    for value in list(scores["dice_per_class"].values()) + list(scores["iou_per_class"].values()):
        assert value is None or 0.0 <= value <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == len(predictions) and {"mean", "foreground_mean"} <= set(summary)


CHECKS = {"detection": _check_detection_run, "segmentation": _check_segmentation_run}
