"""Detection runs on the tiny phantom (the real configs composed in-process): resume, evaluation on another
dataset, precision, and bad input in one clear line. The paper rows' smoke runs are tests/test_experiments.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import open_dict

from spinebench.detection.torchvision_benchmark import DetectorModule
from spinebench.entry import Entry, check_overrides
from spinebench.errors import ConfigError, RunStateError
from spinebench.evaluate import run_id  # (importing it registers the eval config's resolver)
from spinebench.pipeline import evaluate, train
from spinebench.report import collect_runs
from spinebench.run_folder import RunFolder

from helpers.hydra import compose_cfg


@pytest.mark.gpu
def test_a_gpu_run_fills_both_implantability_columns(tmp_path, cache_dir):
    """On a GPU with trainer.cpu_fps_images set (trainer=gpu sets it), batch-1 inference is timed on the GPU and
    then on the CPU, so the report has the paper's CPU and GPU figures from the one run."""
    cfg = compose_cfg(
        "train",
        [
            "model=faster_rcnn",
            "trainer=smoke",
            "data=detection_phantom_tiny",
            "trainer.device=cuda",
            "trainer.cpu_fps_images=2",
            "trainer.cpu_fps_warmup=0",
        ],
        tmp_path,
        cache_dir,
    )
    metrics = train(cfg)
    speed = metrics["speed"]
    assert speed["gpu"]["fps"] == metrics["fps_batch1"] and speed["gpu"]["device"] == metrics["device"]
    assert speed["cpu"]["fps"] > 0 and speed["cpu"]["device"].startswith("cpu (") and 0 <= speed["cpu"]["load"] <= 1
    (run,) = collect_runs([tmp_path / "run"]).runs
    assert set(run.speeds) == {"cpu", "gpu"}


@pytest.mark.slow
def test_resume_then_evaluate_on_another_dataset(tmp_path, cache_dir):
    """A finished run started again trains nothing; spinebench-eval scores its best checkpoint elsewhere. A
    metrics.json cut short costs neither a retraining (the run is tested again) nor the evaluation."""
    cfg = compose_cfg(
        "train", ["model=faster_rcnn", "trainer=smoke", "data=detection_phantom_tiny"], tmp_path, cache_dir
    )
    first = train(cfg)
    second = train(cfg)  # same command: resumes from last.pt (already complete) and re-tests
    assert second["metrics"] == first["metrics"]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    other = compose_cfg(
        "train",
        ["model=faster_rcnn", "trainer=smoke", "data=detection_phantom_tiny", "trainer.optimizer.lr=0.5"],
        tmp_path,
        cache_dir,
    )  # lands in the same folder
    with pytest.raises(ConfigError, match=r"config.yaml: this run was trained with other settings: trainer.optimizer"):
        train(other)
    with open_dict(other):
        other.skip_finished = True  # nor is the finished run kept as this command's result
    with pytest.raises(ConfigError, match=r"config.yaml: this run was trained with other settings: trainer.optimizer"):
        train(other)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved  # the run keeps its own config and metrics
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"] == first["metrics"]
    finished = tmp_path / "run" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    with open_dict(cfg):
        cfg.skip_finished = True  # what `make reproduce` passes: a finished row is not redone
    assert train(cfg) == json.loads(finished.read_text()) and finished.stat().st_mtime_ns == stamp
    finished.write_text(finished.read_text()[:40])  # cut short (a disk that filled up, a hand edit gone wrong)
    assert train(cfg)["metrics"] == first["metrics"]  # tested again from its checkpoint, not trained again
    assert json.loads(finished.read_text())["metrics"] == first["metrics"]
    limited = ["data=detection_phantom_tiny", "trainer.limit_test_images=2"]  # the smoke run scored 2 test images
    eval_cfg = compose_cfg("eval", [f"ckpt={tmp_path / 'run'}", *limited], tmp_path / "e", cache_dir)
    doc = evaluate(eval_cfg)
    assert doc["checkpoint_run"] == str((tmp_path / "run").resolve())
    assert doc["metrics"] == first["metrics"] and doc["epochs"] == first["epochs"]
    assert doc["test_images"] == first["test_images"] == 2
    assert (tmp_path / "e" / "run" / "predictions.json").is_file()
    # unless this command limits it, the whole split is scored: the smoke run's limit is not inherited
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    whole = evaluate(compose_cfg("eval", [f"ckpt={best}", "data=detection_phantom_tiny"], tmp_path / "e3", cache_dir))
    assert whole["test_images"] == 4 and whole["checkpoint_run"] == str((tmp_path / "run").resolve())
    assert run_id(str(best)) == run_id(str(tmp_path / "run")) == f"run@{tmp_path.name}"  # its folder: eval-run@...
    with pytest.raises(ConfigError, match="scores a run's checkpoints/best.pt"):
        evaluate(compose_cfg("eval", [f"ckpt={best.with_name('last.pt')}", *limited], tmp_path / "e4", cache_dir))
    finished.write_text("{")  # the training run's facts are lost; its checkpoint still scores
    eval_cfg = compose_cfg("eval", [f"ckpt={tmp_path / 'run'}", *limited], tmp_path / "e2", cache_dir)
    doc = evaluate(eval_cfg)
    assert doc["metrics"] == first["metrics"] and doc["epochs"] is None


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_detection_run_resumes_to_the_uninterrupted_result(tmp_path, cache_dir, monkeypatch):
    """RetinaNet on the tiny phantom, killed in its second epoch and started again with the same command: it
    continues from last.pt and ends with the weights and test metrics of a run that was never interrupted.
    The killed run reads its batches from the split held on the device (trainer.data_on_device=true, here the
    CPU), the uninterrupted one through the DataLoader: the two paths give the same training."""
    overrides = [
        "model=retinanet",
        "trainer=smoke",
        "data=detection_phantom_tiny",
        "trainer.epochs=2",
        "trainer.limit_train_batches=2",
    ]
    full = train(compose_cfg("train", overrides, tmp_path / "full", cache_dir))
    killed_cfg = compose_cfg("train", [*overrides, "trainer.data_on_device=true"], tmp_path / "killed", cache_dir)
    real_step, steps = DetectorModule.training_step, []

    def dies_in_epoch_two(self, batch, device):
        steps.append(1)
        if len(steps) == 4:  # the second (last) step of epoch 2 (2 steps per epoch)
            raise Killed
        return real_step(self, batch, device)

    monkeypatch.setattr(DetectorModule, "training_step", dies_in_epoch_two)
    with pytest.raises(Killed):
        train(killed_cfg)
    checkpoints = tmp_path / "killed" / "run" / "checkpoints"
    assert torch.load(checkpoints / "last.pt", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(DetectorModule, "training_step", real_step)
    resumed = train(killed_cfg)
    assert resumed["metrics"] == full["metrics"] and resumed["best_epoch"] == full["best_epoch"]
    finished = torch.load(checkpoints / "last.pt", weights_only=False)
    uninterrupted = torch.load(tmp_path / "full" / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert finished["epoch"] == 2 and finished["model"].keys() == uninterrupted["model"].keys()
    assert all(torch.equal(finished["model"][k], uninterrupted["model"][k]) for k in finished["model"])


@pytest.mark.slow
@pytest.mark.parametrize("test_split_amp", [False, True])
def test_validation_runs_under_trainer_amp_and_the_test_split_as_test_split_amp_says(
    test_split_amp, tmp_path, cache_dir, monkeypatch, bf16_autocast_on_cpu
):
    """trainer.amp (bf16 autocast on a GPU) covers training and validation; the test split is scored in float32
    (TEST_SPLIT_AMP), so that the reported numbers do not depend on a speed setting, and metrics.json says so
    whichever way the test split ran. The CPU's bf16 autocast stands in for a GPU's (spinebench turns it on only
    on CUDA): each scoring pass records whether autocast was on in the model."""
    from spinebench.detection import torchvision_benchmark

    monkeypatch.setattr(torchvision_benchmark, "TEST_SPLIT_AMP", test_split_amp)

    real_predict, passes = torchvision_benchmark.predict, []

    def recording(model, *args, **kwargs):
        passes.append([])
        hook = model.register_forward_pre_hook(lambda *_: passes[-1].append(torch.is_autocast_enabled("cpu")))
        try:
            return real_predict(model, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(torchvision_benchmark, "predict", recording)
    smoke = ["model=faster_rcnn", "trainer=smoke", "data=detection_phantom_tiny"]
    doc = train(compose_cfg("train", smoke, tmp_path, cache_dir))
    validation, test = passes  # trainer=smoke: one epoch, so one validation pass, then the test split
    assert validation and all(validation)
    assert test and all(on == test_split_amp for on in test)
    assert doc["test_precision"] == ("bfloat16 autocast" if test_split_amp else "float32")


def _guarded_error(cfg, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        Entry("spinebench-train").run(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "module, override, says",
    [
        (
            "spinebench.train",
            "model=yolov99",
            "spinebench-train: error: model=yolov99: no such config (configs/model/ has "
            "deeplabv3, deeplabv3_light, detr, detr_light, faster_rcnn, ",
        ),
        (
            "spinebench.train",
            "experiment=paper/yolov8m,paper/yolov9",
            "spinebench-train: error: experiment=paper/yolov9: no such config (configs/experiment/ has demo/",
        ),
        ("spinebench.evaluate", "data=human", "spinebench-eval: error: data=human: no such config (configs/data/ has "),
        (
            "spinebench.train",
            "trainer.epoch=3",
            "spinebench-train: error: unknown key trainer.epoch (known: amp, augment, ",
        ),
        (
            "spinebench.train",
            "trainer.optimizer.learning_rate=1",
            "spinebench-train: error: unknown key "
            "trainer.optimizer.learning_rate: no torch optimizer "
            "takes it (e.g. lr, ",
        ),
    ],
)
def test_a_config_name_that_does_not_exist_is_one_line(tmp_path, module, override, says):
    """Hydra's own message is twenty lines with its search path; the entry points check the names first."""
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", module, "-m", override, "ckpt=/nowhere"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith(says) and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_config_names_that_exist_or_are_hydras_to_resolve_pass_the_check():
    check_overrides(
        [
            "-m",
            "model=faster_rcnn,retinanet",
            "experiment=paper/yolov8m",
            "data=null",
            "model.weights=/w.pt",
            "trainer.epochs=3",
            "trainer.optimizer.lr=0.1",
            "trainer=gpu",
            "+trainer=gpu",
            "model=glob(ssd*)",
            "~paths",
        ]
    )  # returns: nothing to refuse
    check_overrides(["--config-dir=/mine", "model=my_detector"])  # a folder of its own


def test_a_command_stopped_by_a_user_error_leaves_no_empty_run_folder(tmp_path):
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench.evaluate", f"ckpt={tmp_path}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no data selected: add data=<name>" in proc.stderr, proc.stderr[-500:]
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")]
    assert not any(name.startswith("outputs") for name in left), left


def test_only_an_untouched_run_folder_is_dropped(tmp_path):
    """Untouched: only what a run writes before its work. A checkpoint or a result keeps the folder."""
    untouched, resumable, scored = (tmp_path / "outputs/data" / name for name in ("a", "b", "c"))
    for run in (untouched, resumable, scored):
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra/config.yaml").write_text("x: 1\n")
        (run / "train.log").write_text("error\n")
        (run / "config.yaml").write_text("x: 1\n")
        (run / "env.json").write_text("{}\n")
    (resumable / "checkpoints").mkdir()
    (resumable / "checkpoints/last.pt").write_bytes(b"0")
    (scored / "predictions.json").write_text("[]\n")
    assert RunFolder(untouched).drop_if_untouched() and not untouched.exists()
    assert not RunFolder(resumable).drop_if_untouched() and (resumable / "checkpoints/last.pt").is_file()
    assert not RunFolder(scored).drop_if_untouched() and (scored / "predictions.json").is_file()
    assert (tmp_path / "outputs/data").is_dir()  # still holds the resumable run


@pytest.mark.parametrize(
    "damage, says",
    [
        ("corrupt_png", "test_post_0.png: unreadable or truncated image"),
        ("malformed_xml", "test_post_0.xml: malformed XML"),
        ("empty_split", "det/test (a split folder holds no images)"),
    ],
)
def test_a_broken_test_split_is_refused_before_any_training(
    damage, says, detection_release, tmp_path, cache_dir, capsys
):
    """It was found after the whole training, when the test split was first read."""
    test = detection_release / "test"
    if damage == "corrupt_png":
        (test / "test_post_0.png").write_bytes(b"not a png")
    elif damage == "malformed_xml":
        (test / "test_post_0.xml").write_text("<annotation><object>")
    else:
        for path in test.iterdir():
            path.unlink()
    cfg = compose_cfg(
        "train",
        ["model=faster_rcnn", "data=detection_real", f"data.root={detection_release}", "trainer=smoke"],
        tmp_path,
        cache_dir,
    )
    assert says in _guarded_error(cfg, capsys)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _spinebench_train(tmp_path, *overrides):
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "spinebench.train", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_yolo_refuses_a_corrupt_training_png_in_one_line(detection_release, tmp_path):
    """ultralytics' Image.open answered it with a ModuleNotFoundError (pi_heif) and a traceback, and skips with a
    warning an image that does open but not decode; nothing of the run is left."""
    (detection_release / "train" / "train_pre_1.png").write_bytes(b"garbage")
    proc = _spinebench_train(
        tmp_path, "model=yolov8n", "data=detection_real", f"data.root={detection_release}", "trainer=smoke"
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-800:]
    assert "train_pre_1.png: unreadable or truncated image" in proc.stderr and "pi_heif" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "model, file, says",
    [
        ("faster_rcnn", "garbage.pth", "cannot read it as a PyTorch checkpoint (UnpicklingError: "),
        ("yolov8n", "garbage.pt", "ultralytics cannot load it"),
    ],
)
def test_weights_that_cannot_be_loaded_are_one_line_and_leave_no_run_folder(
    model, file, says, detection_release, tmp_path
):
    """torch's own error named neither the file nor model.weights; YOLO's export to yolo_data/ and yolo/ came
    before the weights were loaded, and stayed."""
    garbage = tmp_path / file
    garbage.write_text("garbage\n")
    proc = _spinebench_train(
        tmp_path,
        f"model={model}",
        "data=detection_real",
        f"data.root={detection_release}",
        "trainer=smoke",
        f"model.weights={garbage}",
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-800:]
    assert f"model.weights={garbage}: {says}" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_killed_yolo_run_resumes_through_ultralytics_and_says_so(tmp_path, cache_dir, monkeypatch):
    """ultralytics' resume continues from its last.pt; it does not restore its data order and augmentation
    randomness, so the run records where it resumed (metrics.json `resumed_from`)."""
    from spinebench.detection import yolo

    load = yolo._load_yolo

    def killed_after_the_first_epoch(*args):
        model = load(*args)

        def kill(trainer):
            if trainer.epoch == 0:
                raise KeyboardInterrupt("killed")

        model.add_callback("on_fit_epoch_end", kill)
        return model

    cfg = compose_cfg(
        "train",
        ["model=yolov8n", "trainer=smoke", "data=detection_phantom_tiny", "trainer.epochs=2"],
        tmp_path,
        cache_dir,
    )
    monkeypatch.setattr(yolo, "_load_yolo", killed_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert (tmp_path / "run" / "yolo" / "weights" / "last.pt").is_file()
    monkeypatch.setattr(yolo, "_load_yolo", load)
    doc = train(cfg)
    assert doc["resumed_from"] == 1 and doc["epochs"] == 2
    assert len((tmp_path / "run" / "yolo" / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


@pytest.mark.slow
def test_redoing_a_finished_run_keeps_its_result_when_a_training_image_is_broken(
    detection_release, tmp_path, cache_dir, capsys
):
    """The finished run's metrics.json was removed before fit() met the corrupt training PNG: its result was lost
    to a data error. A redo that fails before it trains gives the folder back its result and the files describing
    it; one that completes leaves nothing aside."""
    cfg = compose_cfg(
        "train",
        ["model=faster_rcnn", "data=detection_real", f"data.root={detection_release}", "trainer=smoke"],
        tmp_path,
        cache_dir,
    )
    run = tmp_path / "run"
    finished = run / "metrics.json"
    first = train(cfg)
    env = (run / "env.json").read_text()
    train(cfg)  # redone: resumed (nothing left to train) and tested again
    assert not list(run.glob("*.previous"))
    (detection_release / "train" / "train_pre_1.png").write_bytes(b"garbage")
    (run / "env.json").write_text(env.replace('"command"', '"command_of_the_first_run"'))
    env = (run / "env.json").read_text()
    assert "train_pre_1.png: unreadable image" in _guarded_error(cfg, capsys)
    assert json.loads(finished.read_text())["metrics"] == first["metrics"]
    assert (run / "env.json").read_text() == env and not list(run.glob("*.previous"))
    # a redo killed after it set the result aside leaves *.previous files: the next start gives them back while no
    # checkpoint is newer than the result, and drops them once one is (they would describe the wrong weights)
    finished.replace(run / "metrics.json.previous")
    assert "train_pre_1.png: unreadable image" in _guarded_error(cfg, capsys)
    assert json.loads(finished.read_text())["metrics"] == first["metrics"] and not list(run.glob("*.previous"))
    finished.replace(run / "metrics.json.previous")
    later = finished.with_suffix(".json.previous").stat().st_mtime + 60
    os.utime(run / "checkpoints" / "last.pt", (later, later))  # a redo that trained, then was killed
    assert "train_pre_1.png: unreadable image" in _guarded_error(cfg, capsys)
    assert not finished.exists() and not list(run.glob("*.previous"))
    # spinebench-eval refuses a run without metrics.json (killed or still training): its best.pt is not final
    eval_cfg = compose_cfg(
        "eval", [f"ckpt={tmp_path / 'run'}", "data=detection_phantom_tiny"], tmp_path / "e", cache_dir
    )
    with pytest.raises(
        RunStateError, match=r"the run is unfinished \(no metrics.json\); run its training command again"
    ):
        evaluate(eval_cfg)


def test_spinebench_eval_without_ckpt_is_one_line(tmp_path):
    """Hydra names the evaluation's folder after ckpt= before the task runs: it was a 185-line interpolation error."""
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench.evaluate", "data=detection_phantom_tiny"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-800:]
    assert proc.stderr.startswith("spinebench-eval: error: ckpt= is not set: add ckpt=<training run folder>")


@pytest.mark.parametrize(
    "model, data, override, says",
    [
        (
            "retinanet",
            "detection_phantom_tiny",
            "model.input_size=abc",
            "model.input_size must be [height, width] in pixels, got 'abc'",
        ),
        (
            "unet_light",
            "segmentation_phantom_tiny",
            "model.network.pad_multiple=abc",
            "model.network.pad_multiple=abc: must be a positive integer",
        ),  # its network is built in fit()
    ],
)
def test_a_mistyped_model_setting_in_a_trained_run_folder_names_the_type(
    model, data, override, says, tmp_path, cache_dir, capsys
):
    """Beside a trained run, a mistyped model setting was reported as a setting that differs from the run's."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"0")
    (tmp_path / "run" / "config.yaml").write_text("model:\n  input_size: [256, 256]\n")
    cfg = compose_cfg("train", [f"model={model}", f"data={data}", "trainer=smoke", override], tmp_path, cache_dir)
    assert says in _guarded_error(cfg, capsys)
