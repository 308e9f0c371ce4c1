"""`spinebench data check`: each bad-input kind is reported with its file and the right exit code."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from spinebench.cli import main
from spinebench.data.check import check_dataset
from spinebench.data.segmentation import encode_mask

from helpers.files import voc_xml, write_png


def _run(*argv, tmp_path):
    out = tmp_path / "report.json"
    code = main(["data", "check", *map(str, argv), "--json", str(out)])
    return code, json.loads(out.read_text()) if out.exists() else None


def test_clean_releases_exit_zero(detection_release, segmentation_release, tmp_path):
    code, report = _run(detection_release, "--task", "detection", tmp_path=tmp_path)
    assert code == 0 and report["clean"] and report["split_counts"] == {"train": 3, "val": 3, "test": 3}
    assert report["stats"]["negative_images"] == {"train": 2, "val": 2, "test": 2}
    code, report = _run(segmentation_release, "--task", "segmentation", tmp_path=tmp_path)
    assert code == 0
    shares = report["stats"]["class_pixel_shares"]["train"]
    assert shares["spinal cord"] == pytest.approx(28 / 275, abs=1e-3)  # band 4 of the fixture: rows 112-139


def _corrupt_detection(root):
    write_png(root / "train" / "small.png", np.zeros((100, 200)))  # wrong size
    (root / "train" / "trunc.png").write_bytes((root / "train" / "train_pre_1.png").read_bytes()[:300])  # truncated
    (root / "valid" / "valid_pre_2.xml").write_text("<annotation><object>")  # malformed XML
    (root / "test" / "test_post_0.xml").write_text(voc_xml("t.png", [(600, 200, 720, 300), (700, 10, 800, 20)]))
    (root / "test" / "orphan.xml").write_text(voc_xml("orphan.png", []))  # XML without image
    (root / "valid" / "valid_pre_1.xml").write_text(voc_xml("x.png", [(1, 1, 9, 9)], name="tumour"))
    shutil.copy(root / "train" / "train_post_0.png", root / "test" / "leak.png")  # duplicate across splits
    (root / "train" / "annotations").mkdir()  # a second XML
    shutil.copy(root / "train" / "train_post_0.xml", root / "train" / "annotations" / "train_post_0.XML")
    (root / "valid" / "valid_post_0.xml").write_text(voc_xml("v.png", [(50, 30, 110, 65)], width=345, height=137))


def test_every_detection_problem_kind_is_reported(detection_release, tmp_path):
    _corrupt_detection(detection_release)
    code, report = _run(detection_release, "--task", "detection", tmp_path=tmp_path)
    assert code == 1
    problems = report["problems"]
    assert set(problems) == {
        "wrong_size",
        "unreadable_image",
        "malformed_xml",
        "box_outside_image",
        "degenerate_box",
        "annotation_without_image",
        "unknown_class",
        "duplicate_across_splits",
        "duplicate_annotation",
        "annotation_size_mismatch",
    }
    assert "small.png" in problems["wrong_size"]["examples"][0] and "200x100" in problems["wrong_size"]["examples"][0]
    assert "trunc.png" in problems["unreadable_image"]["examples"][0]
    assert "valid_pre_2.xml" in problems["malformed_xml"]["examples"][0]
    assert problems["box_outside_image"]["count"] == 1 and problems["degenerate_box"]["count"] == 1
    assert "leak.png" in problems["duplicate_across_splits"]["examples"][0]
    assert "annotations/train_post_0.XML" in problems["duplicate_annotation"]["examples"][0]
    assert problems["annotation_size_mismatch"]["examples"] == [
        f"{detection_release / 'valid' / 'valid_post_0.xml'}: <size> 345x137, image 690x275"
    ]


def test_every_segmentation_problem_kind_is_reported(segmentation_release, tmp_path):
    root = segmentation_release
    (root / "train_masks" / "train_1.png").unlink()  # image without mask
    write_png(root / "val_masks" / "lonely.png", np.zeros((275, 690, 3)))  # mask without image
    mask = encode_mask(np.full((275, 690), 4, dtype=np.uint8))
    mask[:2, :5] = (10, 20, 30)  # unknown colour, 10 px
    write_png(root / "test_masks" / "test_0.png", mask)
    write_png(root / "test_masks" / "test_1.png", np.zeros((100, 690, 3)))  # size mismatch
    code, report = _run(root, "--task", "segmentation", tmp_path=tmp_path)
    assert code == 1
    problems = report["problems"]
    assert set(problems) == {"image_without_mask", "mask_without_image", "unknown_mask_colour", "mask_size_mismatch"}
    assert "10 pixels" in problems["unknown_mask_colour"]["examples"][0]
    assert "train_1.png" in problems["image_without_mask"]["examples"][0]


def test_missing_split_is_a_problem_and_parallel_check_agrees(detection_release, tmp_path):
    shutil.rmtree(detection_release / "test")
    write_png(detection_release / "train" / "small.png", np.zeros((10, 10)))
    serial = check_dataset(detection_release, "detection").to_dict()
    parallel = check_dataset(detection_release, "detection", workers=2).to_dict()
    assert serial == parallel
    assert serial["problems"]["missing_split"]["examples"] == [f"{detection_release}: test"]
    assert serial["problems"]["wrong_size"]["count"] == 1


@pytest.mark.parametrize("case", ["missing_folder", "wrong_task"])
def test_unusable_input_exits_two(case, detection_release, tmp_path, capsys):
    root = tmp_path / "nope" if case == "missing_folder" else detection_release
    code = main(["data", "check", str(root), "--task", "segmentation"])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("does not exist" in err or "no segmentation release" in err)


def test_a_zero_shot_set_is_checked_for_its_test_split_only(segmentation_release, tmp_path, capsys):
    """The human set has only test_images/ and test_masks/: `--splits test` checks it as clean."""
    for split in ("train", "val"):
        shutil.rmtree(segmentation_release / f"{split}_images")
        shutil.rmtree(segmentation_release / f"{split}_masks")
    code, report = _run(segmentation_release, "--task", "segmentation", tmp_path=tmp_path)
    assert code == 1 and report["problems"]["missing_split"]["count"] == 2
    code, report = _run(segmentation_release, "--task", "segmentation", "--splits", "test", tmp_path=tmp_path)
    assert code == 0 and report["split_counts"] == {"test": 2}
    with pytest.raises(SystemExit):
        main(["data", "check", str(segmentation_release), "--task", "segmentation", "--splits", "tset"])
    assert "'tset': splits are among train, val, test" in capsys.readouterr().err


def test_the_files_a_problem_names_are_printed_whole_at_a_narrow_terminal(segmentation_release, capsys, monkeypatch):
    """A table cell cut a long path to `.../val_i…` at 80 columns: the examples are printed whole below it."""
    monkeypatch.setenv("COLUMNS", "80")
    deep = segmentation_release.parent / ("a_folder_name_long_enough_to_fill_a_narrow_terminal_" * 2) / "release"
    deep.parent.mkdir()
    segmentation_release.rename(deep)
    (deep / "train_masks" / "train_1.png").unlink()
    assert main(["data", "check", str(deep), "--task", "segmentation"]) == 1
    lines = capsys.readouterr().err.splitlines()
    image, mask = deep / "train_images" / "train_1.png", deep / "train_masks" / "train_1.png"
    assert f"image_without_mask: {image}: no {mask}" in lines
