"""How the programs end: a user's mistake is one line and exit 2; a bug keeps its traceback (Hydra
prints it, exit 1); the run
folder records which (status.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from spinebench.entry import Entry, check_overrides, one_line, user_error
from spinebench.errors import ConfigError, DataError, RunStateError, SpinebenchError, WeightsError

BOOM = textwrap.dedent("""
    import sys, torch
    def forward(self, *args, **kwargs):
        raise ValueError("boom inside a model's forward")
    torch.nn.Conv2d.forward = forward
    from spinebench.train import main
    sys.argv = ["spinebench-train", *sys.argv[1:]]
    main()
""")


def test_a_bug_inside_a_model_keeps_its_traceback_and_exits_1(tmp_path, cache_dir):
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path), SPINEBENCH_CACHE=str(cache_dir))
    proc = subprocess.run(
        [sys.executable, "-c", BOOM, "model=unet_light", "data=segmentation_phantom_tiny", "trainer=smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in proc.stderr and "in forward" in proc.stderr
    assert "ValueError: boom inside a model's forward" in proc.stderr
    (status,) = (tmp_path / "outputs").rglob("status.json")  # the folder stays, saying what failed
    assert json.loads(status.read_text())["state"] == "failed"
    assert json.loads(status.read_text())["error"] == "ValueError: boom inside a model's forward"
    assert "in forward" in json.loads(status.read_text())["traceback"]


def test_a_user_error_is_one_line_exit_2_and_leaves_no_folder(tmp_path):
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinebench.train",
            "model=faster_rcnn",
            "data=detection_real",
            f"data.root={tmp_path / 'nowhere'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("spinebench-train: error: ") and "dataset folder does not exist" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("kind", [ConfigError, DataError, WeightsError, RunStateError])
def test_each_kind_of_user_error_is_found_behind_hydras_wrapper(kind):
    from hydra.errors import InstantiationException

    try:
        try:
            raise kind("the file x.png is unreadable")
        except SpinebenchError as inner:
            raise InstantiationException("Error in call to target 'spinebench.X':\n...") from inner
    except InstantiationException as wrapped:
        assert isinstance(user_error(wrapped), kind)
        assert one_line(user_error(wrapped)) == "the file x.png is unreadable"


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        FileNotFoundError("a bug"),
        KeyError("a bug"),
        TypeError("f() got an unexpected keyword argument 'x'"),
    ],
)
def test_builtin_errors_are_never_taken_for_user_errors(error):
    assert user_error(error) is None


def test_entry_run_ends_a_user_error_in_one_line_and_reraises_nothing_else(capsys):
    entry = Entry("spinebench-train")

    def refused(cfg):
        raise RunStateError("ckpt=x: the run is unfinished")

    with pytest.raises(SystemExit) as ended:
        entry.run(refused, None)
    assert ended.value.code == 2
    assert capsys.readouterr().err == "spinebench-train: error: ckpt=x: the run is unfinished\n"

    def buggy(cfg):
        raise ValueError("an internal invariant broke")

    with pytest.raises(ValueError, match="an internal invariant broke"):  # Hydra prints it, exit 1
        entry.run(buggy, None)


def test_an_override_naming_no_config_file_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model=yolov99: no such config \(configs/model/ has "):
        check_overrides(["model=yolov99"])
    check_overrides(["model=faster_rcnn,retinanet", "model=glob(ssd*)", "data=null"])


def test_a_non_ascii_value_unquoted_is_one_line_saying_how_to_quote_it(tmp_path):
    """Hydra's override lexer refused `data.root=/data/dätä` in twenty lines; quoted, Hydra takes it."""
    with pytest.raises(ConfigError, match=r"^data.root=/data/dätä: Hydra reads a value with non-ASCII characters"):
        check_overrides(["data=detection_real", "data.root=/data/dätä"])
    check_overrides(["data=detection_real", "data.root='/data/dätä'"])
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench.train", "data=detection_real", "data.root=/data/dätä"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data.root='/data/dätä'" in proc.stderr
