"""`make reproduce` builds the right Hydra multiruns from DATA / MODELS / OVERRIDES (dry run: nothing trains), over
the rows it finds in configs/experiment/paper/ as tests/test_experiments.py does; so does `make demo`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_experiments import EXPERIMENTS, rows_of

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", "reproduce", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_subset_on_real_data_with_overrides(tmp_path):
    data = tmp_path / "spinal"
    data.mkdir()
    result = dry_run("MODELS=yolov8m,deeplabv3", f"DATA={data}", "OVERRIDES=trainer.num_workers=16")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        f"spinebench-train -m experiment=paper/yolov8m data=detection_real data.root={data}/detection "
        "trainer=gpu skip_finished=true seed=0 trainer.num_workers=16" in line
        for line in lines
    )
    assert any(
        f"experiment=paper/deeplabv3 data=segmentation_real data.root={data}/segmentation" in line for line in lines
    )
    assert not any("paper/unet" in line or "paper/faster_rcnn" in line for line in lines)
    assert any(
        "spinebench report outputs/detection_real/yolov8m-paper-s0 outputs/segmentation_real/deeplabv3-paper-s0" in line
        for line in lines
    )


def experiments(task: str) -> str:
    return ",".join(f"paper/{row}" for row in rows_of(task))


def test_without_data_every_row_runs_on_the_phantom_and_says_so():
    """Every experiment file is a row, run with its task's data: the rows are those of the composed configs."""
    result = dry_run()
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC PHANTOM" in result.stdout
    assert sorted(rows_of("detection") + rows_of("segmentation")) == EXPERIMENTS
    assert f"-m experiment={experiments('detection')} data=detection_phantom " in result.stdout
    assert f"-m experiment={experiments('segmentation')} data=segmentation_phantom " in result.stdout


def test_a_new_experiment_file_is_a_row_and_one_without_a_task_is_refused(tmp_path):
    """The rows are the files (EXPERIMENT_FILES, configs/experiment/paper/*.yaml), each a detector or a segmenter by
    its data default; a file whose task cannot be told stops reproduce before anything runs, naming it."""
    new, untasked = tmp_path / "detr.yaml", tmp_path / "notask.yaml"
    new.write_text("# @package _global_\ndefaults:\n  - override /data: detection_phantom\n  - override /model: detr\n")
    untasked.write_text("# @package _global_\ndefaults:\n  - override /model: unet\n")
    files = " ".join(str(path) for path in (ROOT / "configs" / "experiment" / "paper").glob("*.yaml"))
    result = dry_run(f"EXPERIMENT_FILES={files} {new}", "MODELS=detr,unet")
    assert result.returncode == 0, result.stderr
    assert "-m experiment=paper/detr data=detection_phantom " in result.stdout
    assert "-m experiment=paper/unet data=segmentation_phantom " in result.stdout
    result = dry_run(f"EXPERIMENT_FILES={files} {untasked}")
    assert (
        result.returncode != 0 and f"{untasked}: no task" in result.stderr and "spinebench-train" not in result.stdout
    )


def test_a_seed_that_is_not_a_whole_number_is_refused():
    result = dry_run("SEED=one")
    assert result.returncode != 0 and "SEED=one is not a whole number" in result.stderr


def test_unknown_model_is_refused():
    result = dry_run("MODELS=yolov8m,detr9000")
    assert result.returncode != 0 and "unknown MODELS: detr9000" in result.stderr
    assert f"(rows, one per configs/experiment/paper/<row>.yaml: {' '.join(EXPERIMENTS)})" in result.stderr


def test_a_weights_folder_reaches_every_training_run(tmp_path):
    """WEIGHTS=/w: every row's `auto` weights key looks there (SPINEBENCH_WEIGHTS), detectors and segmenters."""
    weights = tmp_path / "weights"
    weights.mkdir()
    result = dry_run(f"WEIGHTS={weights}")
    assert result.returncode == 0, result.stderr
    training = [line for line in result.stdout.splitlines() if "spinebench-train" in line]
    assert len(training) == 2 and all(line.startswith(f"SPINEBENCH_WEIGHTS={weights} ") for line in training)
    assert "does not exist" in dry_run(f"WEIGHTS={tmp_path / 'nowhere'}").stderr


def test_missing_data_folder_is_refused_before_anything_runs(tmp_path):
    result = dry_run(f"DATA={tmp_path / 'nowhere'}")
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_a_seed_names_the_runs_every_step_reads_and_a_failed_step_fails_make_after_the_report():
    result = dry_run("MODELS=unet", "SEED=2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        "spinebench-train -m experiment=paper/unet data=segmentation_phantom trainer=gpu skip_finished=true "
        "seed=2  || touch outputs/.reproduce-failed" in line
        for line in lines
    )
    assert any(
        "spinebench report outputs/segmentation_phantom/unet-paper-s2 "
        "outputs/segmentation_human_phantom/eval-unet-paper-s2@segmentation_phantom" in line
        for line in lines
    )
    assert lines[-2].startswith("if [ -f outputs/.reproduce-failed ]; then") and "exit 1" in lines[-1]


def test_a_failed_row_is_named_at_the_end_after_the_report(tmp_path):
    """The Makefile's own control flow, with stand-ins for spinebench's programs: the yolov8m row finishes, the
    unet row fails; the report is still written, then make fails and lists the runs that did not finish."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    stand_ins = {
        "spinebench-train": 'case "$*" in *paper/yolov8m*) d="$SPINEBENCH_ROOT/outputs/detection_phantom/yolov8m-paper-s0"; '
        'mkdir -p "$d"; echo "{}" > "$d/metrics.json";; *) echo "spinebench-train: error: boom" >&2; '
        "exit 2;; esac",
        "spinebench-eval": "exit 0",
        "spinebench": 'echo "report of: $*"',
        "python": "exit 1",  # no optional extra installed: its rows are named and skipped
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    result = subprocess.run(
        ["make", "--no-print-directory", "reproduce", "MODELS=yolov8m,unet", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        env={**os.environ, "SPINEBENCH_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "report of: " in result.stdout and "spinebench-train: error: boom" in result.stderr
    outputs = tmp_path / "outputs"
    unfinished = result.stdout[result.stdout.index("reproduce: these runs did not finish") :].splitlines()[1:]
    assert unfinished == [
        f"  {outputs}/segmentation_phantom/unet-paper-s0",
        f"  {outputs}/segmentation_human_phantom/eval-unet-paper-s0@segmentation_phantom",
    ]
    assert not (outputs / ".reproduce-failed").exists()


def test_clean_keeps_the_pretrained_files():
    result = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and ".cache/weights" not in result.stdout and " .cache " not in result.stdout


def demo_rows(task: str) -> tuple[list[str], list[str]]:
    """The demo's learned recipes of a task (configs/experiment/demo/<row>.yaml) and the paper rows it smoke-runs."""
    learned = sorted(
        p.stem for p in (ROOT / "configs" / "experiment" / "demo").glob("*.yaml") if p.stem in rows_of(task)
    )
    return learned, [row for row in rows_of(task) if row not in learned]


def test_the_demo_learns_some_rows_and_smoke_runs_the_others():
    """Each demo recipe stands in for a paper row (its file is named after the row, its model files under it);
    the demo has at least one detector and two segmenters that learn."""
    from hydra import compose, initialize_config_dir

    learned = {task: demo_rows(task)[0] for task in ("detection", "segmentation")}
    assert len(learned["detection"]) >= 1 and len(learned["segmentation"]) >= 2
    for row in learned["detection"] + learned["segmentation"]:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment=demo/{row}"])
        assert (cfg.model.row or cfg.model.name) == row and cfg.trainer.device == "cpu"
        assert cfg.trainer.limit_train_batches is None  # trained for real, not a smoke run


def test_the_demo_goes_on_past_a_failed_job_and_still_writes_its_report(tmp_path):
    """scripts/demo.sh's control flow with stand-ins: one segmenter finishes, one leaves a folder without
    metrics.json (its job failed). The eval gets only the finished run, the report is written, the demo exits 2.
    It stopped at the first failure (set -e) with no report, and passed the unfinished folder to the eval.
    The demo recipes train for real; every other paper row runs with debug=smoke and no trainer overrides."""
    bin_dir, out = tmp_path / "bin", tmp_path / "demo"
    bin_dir.mkdir()
    stand_ins = {
        "spinebench-train": f'echo "train of: $*"; case "$*" in *demo/unet*) for m in unet_light deeplabv3_light; do '
        f'mkdir -p "{out}/segmentation_phantom/$m-demo-s0"; done; '
        f'echo "{{}}" > "{out}/segmentation_phantom/unet_light-demo-s0/metrics.json"; '
        f'echo "spinebench-train: error: boom" >&2; exit 2;; *) exit 0;; esac',
        "spinebench-eval": 'echo "eval of: $*"',
        "spinebench": 'echo "report of: $*"',
        "python": "exit 1",  # no optional extra installed: its rows are named and skipped
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    result = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "BIN": str(bin_dir), "DEMO_OUT": str(out), "DEMO_RESULTS": str(tmp_path / "results")},
    )
    assert result.returncode == 2 and "spinebench-train: error: boom" in result.stderr
    evals = [line for line in result.stdout.splitlines() if line.startswith("eval of: ")]
    assert len(evals) == 1 and f"ckpt={out}/segmentation_phantom/unet_light-demo-s0 " in evals[0]
    trains = [line for line in result.stdout.splitlines() if line.startswith("train of: ")]
    common = f"paths.log_dir={out} skip_finished=true"
    expected = []
    for group, smoke in (("demo", ""), ("paper", "debug=smoke ")):
        for task in ("detection", "segmentation"):
            rows = [r for r in demo_rows(task)[0 if group == "demo" else 1] if r != "yolov7"]
            if rows:
                expected.append(f"train of: -m experiment={','.join(f'{group}/{r}' for r in rows)} {smoke}{common}")
    assert trains == expected
    assert "report of: " in result.stdout and "some jobs failed" in result.stderr
    assert "demo: the yolov7 row needs an optional extra (pip install -e '.[yolov7]'); skipped" in result.stderr


def test_seeds_and_gpus_make_one_sweep_per_task_with_the_gpu_launcher_and_a_plan_first():
    result = dry_run("MODELS=unet,yolov8m", "SEEDS=0,1,2", "GPUS=4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    plan = next(i for i, line in enumerate(lines) if "spinebench plan" in line)
    train = [i for i, line in enumerate(lines) if "spinebench-train -m" in line]
    assert "--rows yolov8m,unet --seeds 0,1,2 --gpus 4" in lines[plan] and plan < train[0]
    assert all("seed=0,1,2 hydra/launcher=gpus gpus=4" in lines[i] for i in train) and len(train) == 2
    report = next(line for line in lines if "spinebench report" in line)
    for seed in (0, 1, 2):  # every seed's runs reach the report
        assert f"outputs/segmentation_phantom/unet-paper-s{seed} " in report
        assert f"outputs/detection_phantom/yolov8m-paper-s{seed} " in report


@pytest.mark.parametrize(
    "args, message",
    [
        (["GPUS=0"], "GPUS=0: the number of GPUs to run jobs on, a whole number >= 1"),
        (["SEEDS=0,x"], "SEED=x is not a whole number"),
    ],
)
def test_bad_gpus_or_seeds_are_refused(args, message):
    result = dry_run(*args)
    assert result.returncode != 0 and message in result.stderr


def test_reproduce_slurm_submits_every_row_at_once_and_needs_a_partition(tmp_path):
    def slurm(*args):
        return subprocess.run(
            ["make", "-n", "--no-print-directory", "reproduce-slurm", *args], cwd=ROOT, capture_output=True, text=True
        )

    refused = slurm()
    assert refused.returncode != 0 and "PARTITION=<the cluster's partition> is required" in refused.stderr
    result = slurm("MODELS=samed,yolov8m", "PARTITION=gpu", "ACCOUNT=lab", "SEEDS=0,1")
    assert result.returncode == 0, result.stderr
    assert "for row in yolov8m; do" in result.stdout and "for row in samed; do" in result.stdout
    assert "seed=0,1 hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.account=lab" in result.stdout
    assert "& pids=" in result.stdout and "wait $pid" in result.stdout  # every row submitted at once, then waited
