"""`spinebench data phantom` writes a release that the project's own `data check` accepts as clean."""

from __future__ import annotations

import json

import pytest

from spinebench.cli import main
from spinebench.data.source import describe_source


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_phantom_passes_data_check_and_is_stamped(task, tmp_path):
    out = tmp_path / task
    assert (
        main(["data", "phantom", "--task", task, "--out", str(out), "--n-train", "4", "--n-val", "2", "--n-test", "2"])
        == 0
    )
    assert main(["data", "check", str(out), "--task", task, "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split_counts"] == {"train": 4, "val": 2, "test": 2}
    assert describe_source(out)["kind"] == "phantom"


def test_phantom_refuses_to_overwrite_other_data_and_bad_arguments(detection_release, tmp_path, capsys):
    assert main(["data", "phantom", "--task", "detection", "--out", str(detection_release)]) == 2
    assert "error:" in capsys.readouterr().err
    assert (detection_release / "train" / "train_post_0.xml").exists()  # nothing lost
    assert main(["data", "phantom", "--task", "detection", "--out", str(tmp_path / "p"), "--n-test", "-1"]) == 2
    with pytest.raises(SystemExit):
        main(["data", "phantom", "--task", "tracking", "--out", str(tmp_path / "p")])
