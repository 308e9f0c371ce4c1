"""`data.splits=FILE`: a run trains, validates and tests on the images a split file lists (`spinebench data resplit`
writes one), records which file, and refuses a bad file in one line before any training."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from spinebench.build import build
from spinebench.cli import main
from spinebench.data.check import refuse_unreadable
from spinebench.data.detection import read_detection_split
from spinebench.data.resplit import FORMAT
from spinebench.data.segmentation import read_segmentation_split
from spinebench.data.source import DatasetSpec, prepare_dataset
from spinebench.errors import ConfigError, DataError
from spinebench.pipeline import evaluate, train

from helpers.hydra import compose_cfg


def _release_split(root: Path, task: str) -> dict:
    """A split file listing the release's own split (what resplit's format holds), to be spoilt by each case."""
    pattern = "{}/*.png" if task == "detection" else "{}_images/*.png"
    folders = {"train": "train", "val": "valid" if task == "detection" else "val", "test": "test"}
    lists = {
        s: sorted(p.relative_to(root).as_posix() for p in root.glob(pattern.format(f))) for s, f in folders.items()
    }
    return {"format": FORMAT, "task": task, "root": str(root), **lists}


def _write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


SPLITS = ("train", "val", "test")


def _moved(content: dict, name: str, to: str) -> dict:
    """`name` taken out of its split and put last in split `to`."""
    return {**content, **{s: [n for n in content[s] if n != name] + ([name] if s == to else []) for s in SPLITS}}


SEG_TRAIN_0 = "train_images/train_0.png"

BAD_FILES = [  # (id, task, how the file is spoilt: content -> file text or JSON, what the one line says)
    ("not JSON", "segmentation", lambda c: "{train: [", "not JSON ("),
    ("not an object", "segmentation", lambda c: [c["train"]], "not a spinebench split file (format 'a JSON list'"),
    ("other format", "segmentation", lambda c: {**c, "format": "nnunet"}, "format 'nnunet', expected 'spinebench-"),
    ("no format", "segmentation", lambda c: {k: v for k, v in c.items() if k != "format"}, "format None, expected"),
    ("other task", "segmentation", lambda c: {**c, "task": "detection"}, "a split file of a detection release"),
    ("split not a list", "segmentation", lambda c: {**c, "val": "val_images"}, "'val' must be a list of image paths"),
    ("no split", "segmentation", lambda c: {k: v for k, v in c.items() if k != "test"}, "'test' must be a list"),
    (
        "missing image",
        "segmentation",
        lambda c: {**c, "train": [*c["train"], "train_images/gone.png"]},
        "lists train_images/gone.png, which does not exist under ",
    ),
    (
        "missing images counted",
        "detection",
        lambda c: {**c, "test": ["test/gone.png", "test/gone2.png", *c["test"]]},
        "lists test/gone.png, which does not exist under ",
    ),
    (
        "image in two splits",
        "segmentation",
        lambda c: {**c, "test": [*c["test"], SEG_TRAIN_0]},
        f"{SEG_TRAIN_0} is listed in both 'train' and 'test'; an image belongs to one split",
    ),
    (
        "image twice in a split",
        "detection",
        lambda c: {**c, "val": [*c["val"], c["val"][0]]},
        "valid/valid_post_0.png is listed twice in 'val'; an image belongs to one split",
    ),
    ("empty split", "segmentation", lambda c: {**c, "val": []}, "split 'val' is empty, but the release has val images"),
    (
        "a mask listed as an image",
        "segmentation",
        lambda c: {**c, "train": [*c["train"], "train_masks/train_0.png"]},
        "'train_masks/train_0.png' (train) is not in an image folder of the release",
    ),
    (
        "outside the release",
        "detection",
        lambda c: {**c, "train": [*c["train"], "../elsewhere/x.png"]},
        "'../elsewhere/x.png' (train) is not in an image folder of the release",
    ),
    (
        "not an image",
        "detection",
        lambda c: {**c, "train": [*c["train"], "train/train_post_0.xml"]},
        "'train/train_post_0.xml' (train) is not an image",
    ),
]


@pytest.mark.parametrize("task, spoil, says", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_bad_split_file_is_refused_in_one_line(task, spoil, says, detection_release, segmentation_release, tmp_path):
    root = detection_release if task == "detection" else segmentation_release
    path = _write(tmp_path / "splits.json", spoil(_release_split(root, task)))
    with pytest.raises(DataError) as refused:
        prepare_dataset("x", task, root, splits=str(path))
    message = str(refused.value)
    assert says in message and "\n" not in message and message.startswith(str(path)), message


def test_the_other_bad_inputs_name_what_to_do(segmentation_release, tmp_path):
    with pytest.raises(DataError, match=r"nope.json: split file not found \(write one with `spinebench data resplit "):
        prepare_dataset("x", "segmentation", segmentation_release, splits=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"data.splits must be the path of a split file \(or null\), got 3"):
        prepare_dataset("x", "segmentation", segmentation_release, splits=3)
    content = _release_split(segmentation_release, "segmentation")
    path = _write(tmp_path / "splits.json", content)
    with pytest.raises(DataError, match=r"splits.json: its content \(sha256 [0-9a-f]{12}...\) is not the one data"):
        prepare_dataset("x", "segmentation", segmentation_release, splits=str(path), splits_sha256="0" * 64)
    (segmentation_release / "train_masks" / "train_1.png").unlink()  # a listed image whose mask is gone
    with pytest.raises(DataError, match=r"train_1.png: listed in .*splits.json, but has no mask .*train_1.png$"):
        prepare_dataset("x", "segmentation", segmentation_release, splits=str(path))


def test_two_images_of_one_name_in_a_split_are_refused(segmentation_release, tmp_path):
    """Predictions and per-image scores are kept by file name: two release folders' `a.png` in one split collide."""
    for kind in ("images", "masks"):
        shutil.copy(segmentation_release / f"train_{kind}" / "train_0.png", segmentation_release / f"val_{kind}")
    content = _release_split(segmentation_release, "segmentation")
    path = _write(tmp_path / "splits.json", _moved(content, "val_images/train_0.png", "train"))
    with pytest.raises(DataError, match=r"split 'train' lists two images named train_0.png \(from two release"):
        prepare_dataset("x", "segmentation", segmentation_release, splits=str(path))


def test_the_readers_take_each_split_from_the_file_with_its_masks_and_annotations(
    detection_release, segmentation_release, tmp_path
):
    """An image moved to another split by the file is read there, with its own mask or XML from its folder; the
    record names the file, its sha256 and the sizes; without a file nothing changes."""
    seg = _moved(_release_split(segmentation_release, "segmentation"), SEG_TRAIN_0, "test")
    path = _write(tmp_path / "seg.json", seg)
    spec = prepare_dataset("x", "segmentation", segmentation_release, splits=str(path))
    test = read_segmentation_split(spec, "test")
    assert [s.image for s in test] == [segmentation_release / n for n in seg["test"]]
    assert test[-1].mask == segmentation_release / "train_masks" / "train_0.png"
    assert SEG_TRAIN_0 not in {
        s.image.relative_to(segmentation_release).as_posix() for s in read_segmentation_split(spec, "train")
    }
    sizes = {"train": 1, "val": 2, "test": 3}
    assert spec.describe()["splits"] == {
        "file": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "sizes": sizes,
    }
    assert spec.split_size("test") == 3
    plain = prepare_dataset("x", "segmentation", segmentation_release)
    assert "splits" not in plain.describe() and plain.split_size("test") == 2

    det = _moved(_release_split(detection_release, "detection"), "train/train_post_0.png", "val")
    spec = prepare_dataset("x", "detection", detection_release, splits=str(_write(tmp_path / "det.json", det)))
    val = {s.image.name: s for s in read_detection_split(spec, "val")}
    assert set(val) == {"valid_post_0.png", "valid_pre_1.png", "valid_pre_2.png", "train_post_0.png"}
    assert val["train_post_0.png"].annotation == detection_release / "train" / "train_post_0.xml"
    assert len(val["train_post_0.png"].boxes) == 1 and val["valid_pre_1.png"].is_negative
    assert [s.image.name for s in read_detection_split(spec, "train")] == ["train_pre_1.png", "train_pre_2.png"]


def test_a_broken_image_the_file_moves_into_test_is_refused_before_training(segmentation_release, tmp_path):
    """The release's test folder is whole; the file's test split takes a truncated train image: the check every run
    makes before training (spinebench.pipeline) refuses it."""
    broken = segmentation_release / "train_images" / "train_1.png"
    broken.write_bytes(broken.read_bytes()[:100])
    content = _moved(_release_split(segmentation_release, "segmentation"), "train_images/train_1.png", "test")
    path = _write(tmp_path / "splits.json", content)
    spec = prepare_dataset("x", "segmentation", segmentation_release, splits=str(path))
    with pytest.raises(DataError, match=r"train_1.png: unreadable or truncated image"):
        refuse_unreadable(spec, "segmentation", ("test",))


def test_a_moved_split_file_resumes_but_an_edited_one_does_not():
    """The resolved config carries data.splits_sha256: the rule lets the path change while the content is the
    same; other content is a changed setting (check_same_settings compares it)."""
    saved = {"data.splits": "/a/splits.json", "data.splits_sha256": "ab"}
    assert "data.splits" in DatasetSpec.resume_rule(saved, {"data.splits": "/b/s.json", "data.splits_sha256": "ab"})
    assert "data.splits" not in DatasetSpec.resume_rule(saved, {"data.splits": "/a/s.json", "data.splits_sha256": "cd"})
    assert "data.splits" not in DatasetSpec.resume_rule({"data.splits": None}, {"data.splits": "/a/s.json"})


# ------------------------------------------------------------------------------------------------ whole runs
def _resplit_with_a_moved_image(cfg, tmp_path: Path) -> tuple[Path, Path, dict]:
    """The phantom the run will read, its subject-disjoint split from `spinebench data resplit`, and one image of
    the release's train folder moved by hand into the file's test split (the first listed: limit_test_images)."""
    spec = build(cfg.data, "data")  # generates the tiny phantom, as the run would
    task, out = spec.task, tmp_path / "splits.json"
    assert main(["data", "resplit", str(spec.root), "--task", task, "--by", "subject", "--out", str(out)]) == 0
    content = json.loads(out.read_text())
    train_folder = "train/" if task == "detection" else "train_images/"
    moved = next(name for name in content["train"] if name.startswith(train_folder))
    content["train"].remove(moved)
    content["test"].insert(0, moved)
    out.write_text(json.dumps(content, indent=2))
    return spec.root, out, content


def _decoded_lists(cache_dir: Path) -> list[list[str]]:
    """The file lists of the decoded-image caches: what the runs' loaders read."""
    return [json.loads(p.read_text())["files"] for p in (cache_dir / "decoded").glob("*.json")]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=ssd300", "data=detection_phantom_tiny"],
        ["model=unet_light", "data=segmentation_phantom_tiny", "trainer.max_input_size=64"],
    ],
    ids=["detection", "segmentation"],
)
def test_a_run_trains_and_tests_on_the_split_file_and_records_it(overrides, tmp_path, cache_dir):
    smoke = ["debug=smoke", "trainer.fps_images=1", "trainer.fps_warmup=0", *overrides]
    root, splits, content = _resplit_with_a_moved_image(compose_cfg("train", smoke, tmp_path, cache_dir), tmp_path)
    cfg = compose_cfg("train", [*smoke, f"data.splits={splits}"], tmp_path, cache_dir)
    doc = train(cfg)
    sizes = {split: len(content[split]) for split in ("train", "val", "test")}
    digest = hashlib.sha256(splits.read_bytes()).hexdigest()
    assert doc["data"]["splits"] == {"file": str(splits.resolve()), "sha256": digest, "sizes": sizes}
    assert doc["test_split_images"] == sizes["test"] and doc["test_images"] == 2  # debug=smoke scores 2 of them
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["data"]["splits"]["file"] == str(splits.resolve())
    # the training loader read exactly the file's train list (the decoded cache keeps the list it was built from)
    assert [str(root / name) for name in content["train"]] in _decoded_lists(cache_dir)
    assert f"splits_sha256: {digest}" in (tmp_path / "run" / "config.yaml").read_text()
    moved = content["test"][0]  # from the release's train folder, scored as a test image
    if overrides[0] == "model=ssd300":
        truth = json.loads((tmp_path / "run" / "ground_truth.json").read_text())
        assert [image["file_name"] for image in truth["images"]] == [Path(n).name for n in content["test"][:2]]
    else:
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        tested = [case["reference_file"] for case in summary["metric_per_case"]]
        assert tested[0] == str(root / "train_masks" / Path(moved).name)  # with its own mask, from its folder
        # spinebench-eval scores the file's whole test split, and records the file too
        scoring = [f"ckpt={tmp_path / 'run'}", overrides[1], f"data.splits={splits}", "trainer.fps_images=1"]
        evaluation = evaluate(compose_cfg("eval", scoring, tmp_path, cache_dir, run_dir=tmp_path / "eval"))
        assert evaluation["data"]["splits"]["sha256"] == digest and evaluation["test_images"] == sizes["test"]

    # the file edited in place (same path): the finished run is not resumed nor passed off as this one
    content["val"].append(content["train"].pop())
    splits.write_text(json.dumps(content, indent=2))
    again = compose_cfg("train", [*smoke, f"data.splits={splits}"], tmp_path, cache_dir)
    with pytest.raises(ConfigError, match=r"trained with other settings: data.splits_sha256 \(was '" + digest):
        train(again)
