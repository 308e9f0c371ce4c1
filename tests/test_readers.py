"""Readers of both releases on hand-made folders with known content."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from spinebench.classes import IGNORE_INDEX, SEGMENTATION_PALETTE
from spinebench.data.detection import clip_box, parse_voc_xml, read_detection_split
from spinebench.data.images import read_gray
from spinebench.data.layout import find_splits
from spinebench.data.segmentation import decode_mask, encode_mask, read_mask, read_segmentation_split
from spinebench.errors import DataError

from helpers.files import voc_xml, write_png


def test_detection_reader_keeps_negatives_and_accepts_valid_as_val(detection_release):
    assert set(find_splits(detection_release, "detection")) == {"train", "val", "test"}
    samples = read_detection_split(detection_release, "val")
    assert [s.image.name for s in samples] == ["valid_post_0.png", "valid_pre_1.png", "valid_pre_2.png"]
    assert [len(s.boxes) for s in samples] == [1, 0, 0]
    np.testing.assert_allclose(samples[0].boxes[0], [100.5, 60.2, 220.7, 130.1], rtol=1e-6)
    assert samples[0].labels.tolist() == [0]
    assert samples[1].annotation is None and samples[2].is_negative


def test_detection_reader_accepts_images_and_annotations_subfolders(detection_release, tmp_path):
    root = tmp_path / "nested" / "wrapper"
    for split in ("train", "valid", "test"):
        for file in (detection_release / split).iterdir():
            sub = "images" if file.suffix == ".png" else "annotations"
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(file, root / split / sub / file.name)
    samples = read_detection_split(tmp_path / "nested", "test")  # found one level down
    assert [len(s.boxes) for s in samples] == [1, 0, 0]


@pytest.mark.parametrize(
    "images_in, xml_in, suffix",
    [
        ("", "annotations", ".xml"),  # images in the split folder, XML in its annotations/
        ("images", "", ".xml"),  # images in <split>/images/, XML in the split folder
        ("", "", ".XML"),  # beside the image, upper-case suffix
    ],
)
def test_detection_reader_finds_the_xml_wherever_check_looks(detection_release, images_in, xml_in, suffix):
    split = detection_release / "test"
    for file in sorted(split.iterdir()):
        target = split / (images_in if file.suffix == ".png" else xml_in)
        target.mkdir(exist_ok=True)
        file.rename(target / (file.name if file.suffix == ".png" else file.stem + suffix))
    samples = read_detection_split(detection_release, "test")
    assert [len(s.boxes) for s in samples] == [1, 0, 0]  # the injured image keeps its box: not a silent negative


def test_two_annotations_of_one_image_are_refused(detection_release):
    (detection_release / "train" / "annotations").mkdir()
    shutil.copy(detection_release / "train" / "train_post_0.xml", detection_release / "train" / "annotations")
    with pytest.raises(DataError, match="train_post_0.png: more than one annotation"):
        read_detection_split(detection_release, "train")


def test_an_annotation_sized_for_another_image_is_warned_about(detection_release, caplog):
    (detection_release / "valid" / "valid_post_0.xml").write_text(
        voc_xml("valid_post_0.png", [(50, 30, 110, 65)], width=345, height=137)
    )
    with caplog.at_level(logging.WARNING):
        samples = read_detection_split(detection_release, "val")
    assert samples[0].boxes.tolist() == [[50, 30, 110, 65]]  # used as they are, and said so
    assert "1 of 3 annotations give a <size> other than their image's" in caplog.text
    assert "valid_post_0.xml (345x137, image 690x275)" in caplog.text


def test_boxes_are_clipped_and_degenerate_boxes_dropped_with_a_warning(detection_release, caplog):
    xml = detection_release / "train" / "train_post_0.xml"
    xml.write_text(voc_xml("train_post_0.png", [(-20, 10, 100, 300), (700, 10, 760, 50)]))
    with caplog.at_level(logging.WARNING):
        samples = read_detection_split(detection_release, "train")
    assert samples[0].boxes.tolist() == [[0.0, 10.0, 100.0, 275.0]]
    assert "degenerate" in caplog.text and "train_post_0.xml" in caplog.text
    assert clip_box((10, 10, 10.5, 50), 690, 275)[2] is True


@pytest.mark.parametrize(
    "content, message",
    [
        ("<annotation><object>", "malformed XML"),
        ("<annotation><object><name>hematoma</name></object></annotation>", "no <bndbox>"),
        (
            "<annotation><object><name>hematoma</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
            "non-numeric",
        ),
        (
            "<annotation><object><name>hematoma</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
            "</bndbox></object></annotation>",
            "non-numeric",
        ),
        ('<?xml version="1.0" encoding="bogus"?><annotation/>', "malformed XML"),
        ("<dataset><object><name>hematoma</name></object></dataset>", "not a Pascal-VOC file"),
    ],
)
def test_malformed_xml_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        parse_voc_xml(path)
    assert "bad.xml" in str(error.value)


def test_unknown_class_and_corrupt_png_name_the_file(detection_release):
    (detection_release / "test" / "test_post_0.xml").write_text(voc_xml("x.png", [(1, 1, 50, 50)], name="tumour"))
    with pytest.raises(DataError, match="unknown class 'tumour'"):
        read_detection_split(detection_release, "test")
    (detection_release / "train" / "train_pre_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="train_pre_1.png: unreadable"):
        read_detection_split(detection_release, "train")


def test_a_16_bit_image_is_refused_not_clipped_to_white(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((4, 6), 3000, dtype=np.uint16)).save(path)  # 12-bit data in a 16-bit PNG
    with pytest.raises(DataError, match="wide.png: I;16 image"):
        read_gray(path)


def test_missing_split_and_missing_folder(detection_release, tmp_path):
    shutil.rmtree(detection_release / "test")
    with pytest.raises(DataError, match="split 'test' is missing"):
        read_detection_split(detection_release, "test")
    with pytest.raises(DataError, match="does not exist"):
        find_splits(tmp_path / "nowhere", "detection")
    with pytest.raises(DataError, match="no segmentation release found"):
        find_splits(detection_release, "segmentation")


def test_mask_decoding_round_trips_and_sends_unknown_colours_to_ignore():
    labels = np.arange(10, dtype=np.uint8).repeat(4).reshape(5, 8)
    rgb = encode_mask(labels)
    rgb[0, 0] = (12, 200, 7)  # an anti-aliased pixel
    decoded, unknown = decode_mask(rgb)
    assert unknown == 1 and decoded[0, 0] == IGNORE_INDEX
    assert (decoded.ravel()[1:] == labels.ravel()[1:]).all()
    assert tuple(SEGMENTATION_PALETTE[4]) == (0, 0, 128)  # spinal cord


def test_segmentation_reader_pairs_by_name_and_names_the_orphan(segmentation_release):
    samples = read_segmentation_split(segmentation_release, "train")
    assert [(s.image.name, s.mask.name) for s in samples] == [
        ("train_0.png", "train_0.png"),
        ("train_1.png", "train_1.png"),
    ]
    assert read_mask(samples[0].mask)[0, 0] == 0 and read_mask(samples[0].mask)[-1, 0] == 9
    (segmentation_release / "val_masks" / "val_1.png").unlink()
    with pytest.raises(DataError, match="val_1.png: no mask"):
        read_segmentation_split(segmentation_release, "val")
    write_png(segmentation_release / "test_masks" / "extra.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="extra.png: mask without an image"):
        read_segmentation_split(segmentation_release, "test")


def test_a_corrupt_png_is_a_dataset_error_after_ultralytics_is_imported(tmp_path):
    """ultralytics replaces PIL's Image.open on import; the readers keep Pillow's own."""
    import ultralytics  # noqa: F401  (its import applies the replacement)

    from spinebench.data.images import image_size, read_gray

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    for read in (image_size, read_gray):
        with pytest.raises(DataError, match="bad.png: unreadable"):
            read(bad)
