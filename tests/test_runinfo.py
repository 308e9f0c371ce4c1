"""Provenance of a run: the git commit of the code, also where the tree was copied without git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from spinebench.runinfo import git_commit

REPO = Path(__file__).resolve().parents[1]


def test_commit_of_this_checkout(monkeypatch):
    monkeypatch.delenv("SPINEBENCH_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:
        assert git_commit(REPO)["commit"] == head.stdout.strip()


def test_copy_without_git_names_its_commit(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINEBENCH_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}  # no repository here: unknown, not invented
    monkeypatch.setenv("SPINEBENCH_GIT_COMMIT", "1a37f29")
    assert git_commit(tmp_path) == {"commit": "1a37f29", "dirty": None}
