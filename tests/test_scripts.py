"""The learning-run script checks every model name before it starts a run (a typo must not cost an hour)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_learning_script_refuses_an_unknown_model_before_running_any(tmp_path):
    logs = tmp_path / "logs"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "learn_detection_cpu.sh"), "retinanet", "retinanett"],
                            env={**os.environ, "LOG_DIR": str(logs)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "unknown model retinanett (yolov8n faster_rcnn retinanet ssd300 ssd512)"
    assert list(logs.iterdir()) == []  # retinanet, named first, did not start
