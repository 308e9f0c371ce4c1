"""The README is the front door: small, without history, and every command of its quickstart parses and starts as
written (Hydra composes each training and evaluation command; make plans each target)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_block(after_heading: str) -> list[str]:
    section = README.split(f"## {after_heading}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


QUICKSTART = code_block("Quickstart")


def test_the_readme_is_short_and_holds_no_history():
    assert len(README.encode()) <= 8192
    assert not re.search(r"`[0-9a-f]{7,40}`", README), "a commit hash in the README: it belongs in CHANGELOG.md"
    assert code_block("Set up and test") == ["make setup", "make test"]


def test_every_row_of_the_readme_table_has_an_experiment_file_or_says_it_is_not_run():
    table = README.split("## The paper's rows", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.split("|")[2].strip()
        for line in table.splitlines()
        if line.startswith("| detection") or line.startswith("| segmentation")
    ]
    experiments = len(list((ROOT / "configs" / "experiment" / "paper").glob("*.yaml")))
    not_run = sum("not run yet" in line for line in table.splitlines())
    runnable = len(rows) - not_run + 1  # SSD300 and SSD512 share a line
    assert runnable == experiments, (rows, experiments)


@pytest.mark.parametrize("command", [c for c in QUICKSTART if c.startswith(".venv/bin/spinebench-")])
def test_a_quickstart_training_or_evaluation_command_composes(command, tmp_path):
    argv = shlex.split(command)
    program = argv[0].rsplit("/", 1)[1].removeprefix("spinebench-")
    module = {"train": "spinebench.train", "eval": "spinebench.evaluate"}[program]
    env = dict(os.environ, SPINEBENCH_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv[1:], "--cfg", "job"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model:" in proc.stdout or "ckpt:" in proc.stdout


def test_the_quickstart_report_command_starts():
    (command,) = [c for c in QUICKSTART if " report " in c]
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench.cli", *shlex.split(command)[1:], "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--out" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", [c for c in QUICKSTART if c.startswith("make ")])
def test_a_quickstart_make_target_plans(command, tmp_path):
    """`make -n`: the target's recipe as make would run it; a folder the command names is made here."""
    argv = shlex.split(command)
    for i, arg in enumerate(argv):
        if arg.startswith(("DATA=", "WEIGHTS=")):
            folder = tmp_path / arg.split("=", 1)[1].strip("/").replace("/", "_")
            folder.mkdir()
            argv[i] = f"{arg.split('=', 1)[0]}={folder}"
    proc = subprocess.run([argv[0], "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
