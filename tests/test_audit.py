"""`spinebench data audit` and `data resplit` on phantoms with and without planted leakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spinebench.cli import main
from spinebench.data.audit import SIMILARITY, audit_dataset
from spinebench.data.images import read_gray
from spinebench.data.phantom import render_sample, write_phantom
from spinebench.data.phantom.writer import LEAK_KINDS, derive_frame
from spinebench.data.resplit import resplit


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    """Sweeps of 4 frames; half of val and test are altered copies of train frames (8 planted pairs)."""
    root = tmp_path_factory.mktemp("leaky") / "phantom"
    return write_phantom("segmentation", root, n_train=24, n_val=8, n_test=8, sweep_frames=4, leak_share=0.5)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return write_phantom("segmentation", tmp_path_factory.mktemp("clean") / "phantom", n_train=40, n_val=12, n_test=12)


def _planted(root: Path) -> list[dict]:
    return json.loads((root / "PHANTOM.json").read_text())["planted"]


def _relative(pair: dict, root: Path) -> tuple[str, str]:
    return Path(pair["a"]).relative_to(root).as_posix(), Path(pair["b"]).relative_to(root).as_posix()


def test_every_planted_pair_is_found(leaky):
    planted = _planted(leaky)
    assert len(planted) == 8 and {p["kind"] for p in planted} == set(LEAK_KINDS)
    report = audit_dataset(leaky, "segmentation")
    found = {_relative(p, leaky): p for p in report.pairs}
    missed = [p for p in planted if (p["a"], p["b"]) not in found]
    assert not missed
    for p in planted:
        assert found[(p["a"], p["b"])]["similarity"] >= SIMILARITY
    assert report.found
    # the leaked copies carry the train animal's id: subjects shared across splits
    assert {Path(p["b"]).name.split("_")[0] for p in planted} <= set(report.subjects["shared"])
    test_affected = {p["b"] for p in planted if p["b"].startswith("test")}
    assert report.split_pairs["train-test"]["test_images_affected"] >= len(test_affected)


def test_sweeps_are_within_split_clusters(leaky):
    report = audit_dataset(leaky, "segmentation")
    train = report.clusters["train"]
    # 24 train images written as 6 sweeps of 4 frames, none leaked into train
    assert train == {"clusters": 6, "images_in_clusters": 24, "largest": 4, "images": 24}


def test_clean_phantom_reports_nothing(clean, tmp_path):
    out = tmp_path / "audit.json"
    assert main(["data", "audit", str(clean), "--task", "segmentation", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["found"] is False and report["pairs"] == [] and report["subjects"]["shared"] == {}
    assert report["subjects"]["available"] and report["subjects"]["unmatched"] == 0
    assert all(entry["clusters"] == 0 for entry in report["within_split_clusters"].values())
    # hash candidates exist (different frames of one animal look alike) and the correlation turns them down
    assert report["hash_candidates"] > 0 and report["closest_rejected_similarity"] is not None


def test_cli_exit_1_json_and_png(leaky, tmp_path, capsys):
    out, png = tmp_path / "audit.json", tmp_path / "pairs.png"
    code = main(["data", "audit", str(leaky), "--task", "segmentation", "--json", str(out), "--png", str(png)])
    assert code == 1
    report = json.loads(out.read_text())
    assert len(report["pairs"]) >= 8
    for pair in report["pairs"]:
        assert {"a", "b", "split_a", "split_b", "hash_distance", "similarity"} <= set(pair)
        assert pair["split_a"] != pair["split_b"] and Path(pair["a"]).is_file() and Path(pair["b"]).is_file()
    image = read_gray(png)
    assert image.shape[0] > 8 * 150 and image.shape[1] > 900  # 8 rows of two 460-px tiles
    err = capsys.readouterr().err
    assert "train-test" in err and "leakage found" in err


def test_shared_subject_alone_gives_exit_1(clean, tmp_path):
    root = tmp_path / "phantom"
    shutil.copytree(clean, root)
    victim = sorted((root / "test_images").glob("*.png"))[0]
    renamed = "pig01_" + victim.name.split("_", 1)[1]  # pig01 is a train animal
    victim.rename(victim.with_name(renamed))
    (root / "test_masks" / victim.name).rename(root / "test_masks" / renamed)
    report = audit_dataset(root, "segmentation")
    assert report.pairs == [] and report.subjects["shared"] == {"pig01": ["train", "test"]}
    assert main(["data", "audit", str(root), "--task", "segmentation"]) == 1


def test_detection_release(tmp_path):
    root = write_phantom("detection", tmp_path / "det", n_train=8, n_val=4, n_test=4, sweep_frames=2, leak_share=0.5)
    report = audit_dataset(root, "detection")
    found = {_relative(p, root) for p in report.pairs}
    assert all((p["a"], p["b"]) in found for p in _planted(root)) and _planted(root)


def test_unusable_input_exits_2(clean, tmp_path, capsys):
    assert main(["data", "audit", str(tmp_path / "missing"), "--task", "segmentation"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "audit", str(clean), "--task", "detection"]) == 2
    assert "no detection release" in capsys.readouterr().err
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    bad = sorted((root / "val_images").glob("*.png"))[2]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    assert main(["data", "audit", str(root), "--task", "segmentation"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad.name) in err and len(err.splitlines()) == 1
    assert main(["data", "audit", str(clean), "--task", "segmentation", "--subject-pattern", "pig"]) == 2


def test_derived_frames_move_labels_with_the_image():
    sample = render_sample(3, "porcine", injured=True, animal=2)
    rng = np.random.default_rng(0)
    shifted = derive_frame(sample, "shift", rng)
    dx, dy = shifted.params["derived"]["shift"]
    assert 1 <= abs(dx) <= 3 and 1 <= abs(dy) <= 3
    inner = (slice(4, -4), slice(4, -4))
    moved = np.roll(sample.labels, (dy, dx), axis=(0, 1))
    assert np.array_equal(shifted.labels[inner], moved[inner])
    assert np.array_equal(shifted.image[inner], np.roll(sample.image, (dy, dx), axis=(0, 1))[inner])
    assert shifted.box == tuple(v + d for v, d in zip(sample.box, (dx, dy, dx, dy)))


def test_resplit_by_subject_keeps_each_subject_whole(leaky, tmp_path):
    content = resplit(leaky, "segmentation", by="subject", seed=0)
    every = [name for split in ("train", "val", "test") for name in content[split]]
    release = sorted(p.relative_to(leaky).as_posix() for p in leaky.glob("*_images/*.png"))
    assert sorted(every) == release  # every image once
    where: dict[str, set] = {}
    for split in ("train", "val", "test"):
        for name in content[split]:
            where.setdefault(Path(name).name.split("_")[0], set()).add(split)
    assert all(len(splits) == 1 for splits in where.values())
    assert all(content["counts"][s] > 0 for s in ("train", "val", "test"))
    assert content["counts"]["train"] > content["counts"]["val"]
    assert resplit(leaky, "segmentation", by="subject", seed=0) == content  # seeded: the same file again
    out = tmp_path / "splits.json"
    assert main(["data", "resplit", str(leaky), "--task", "segmentation", "--by", "subject", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["train"] == content["train"]


def test_resplit_by_cluster_keeps_planted_pairs_together(leaky):
    content = resplit(leaky, "segmentation", by="cluster", seed=1)
    split_of = {name: split for split in ("train", "val", "test") for name in content[split]}
    assert len(split_of) == 40
    for pair in _planted(leaky):
        assert split_of[pair["a"]] == split_of[pair["b"]]


def test_resplit_by_subject_needs_subject_ids(clean, tmp_path):
    code = main(
        ["data", "resplit", str(clean), "--task", "segmentation", "--out", str(tmp_path / "s.json"),
         "--subject-pattern", r"^(nomatch\d+)_"]
    )  # fmt: skip
    assert code == 2 and not (tmp_path / "s.json").exists()
