"""Shared fixtures: everything runs on the CPU, offline, with caches inside pytest's tmp folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """One cache for the whole session so each tiny phantom is generated once."""
    return tmp_path_factory.mktemp("cache")
