"""Provenance of a run: the git commit of the code (also where the tree was copied without git) and its recipe."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from spinebench.runinfo import cpu_model, device_name, git_commit

REPO = Path(__file__).resolve().parents[1]


def test_commit_of_this_checkout(monkeypatch):
    monkeypatch.delenv("SPINEBENCH_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert git_commit(REPO)["commit"] == head.stdout.strip()


def test_a_report_written_into_results_does_not_make_the_code_dirty(tmp_path, monkeypatch):
    """Runs made after a report rewrote the tracked results/ were labelled -dirty, as if the code had changed."""
    monkeypatch.delenv("SPINEBENCH_GIT_COMMIT", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "README.md").write_text("old report\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "c"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    (tmp_path / "results" / "README.md").write_text("new report\n")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path)["dirty"] is True


def test_copy_without_git_names_its_commit(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINEBENCH_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}  # no repository here: unknown, not invented
    monkeypatch.setenv("SPINEBENCH_GIT_COMMIT", "1a37f29")
    assert git_commit(tmp_path) == {"commit": "1a37f29", "dirty": None}


def test_config_label_is_the_recipe_not_the_file_locations():
    from spinebench.hydra_run import config_label

    overrides = [
        "model=faster_rcnn",
        "trainer=gpu",
        "trainer.epochs=24",
        "trainer.optimizer.lr=0.01",
        "data=detection_phantom",
        "run_name=x",
        "paths.log_dir=/tmp/o",
        "data.phantom.n_train=64",
        "data.name=my_copy",
    ]
    assert config_label({"model": "faster_rcnn", "trainer": "gpu"}, overrides) == (
        "model/faster_rcnn.yaml + trainer/gpu.yaml trainer.epochs=24 trainer.optimizer.lr=0.01 data.phantom.n_train=64"
    )
    assert (
        config_label({"experiment": "paper/ssd300", "model": "ssd300"}, ["experiment=paper/ssd300"])
        == "experiment/paper/ssd300.yaml"
    )
    assert (
        config_label(
            {"experiment": "paper/ssd300", "trainer": "smoke"},
            ["experiment=paper/ssd300", "trainer=smoke", "trainer.name=smoke"],
        )
        == "experiment/paper/ssd300.yaml + trainer/smoke.yaml trainer.name=smoke"
    )
    assert (  # a light variant trained under a paper recipe says so
        config_label(
            {"experiment": "paper/yolov7", "model": "yolov7_tiny"}, ["experiment=paper/yolov7", "model=yolov7_tiny"]
        )
        == "experiment/paper/yolov7.yaml + model/yolov7_tiny.yaml"
    )
    assert config_label({}, []) is None


def test_a_cpu_label_names_the_cpu_model(monkeypatch):
    """Two 16-thread x86_64 CPUs of different models must not share one FPS_best in the report."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    label = device_name("cpu")
    assert label == f"cpu ({cpu_model()}, {platform.machine()}, 16 threads)" and cpu_model()
    if Path("/proc/cpuinfo").is_file():
        assert cpu_model() in Path("/proc/cpuinfo").read_text()
