"""Reader for the detection release: PNG images with Pascal-VOC XML boxes, one class (`hematoma`).

Pre-injury images have no XML, or an XML without objects: they are negatives and stay in the split.
Boxes may be floats and may spill over the image: they are clipped; boxes left degenerate are dropped
with a warning (never silently).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spinebench.classes import DETECTION_CLASSES
from spinebench.data.errors import DatasetError
from spinebench.data.images import image_size, list_images
from spinebench.data.layout import split_folder

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0  # pixels; thinner boxes after clipping carry no usable lesion


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels


@dataclass(frozen=True)
class DetectionSample:
    """One image and its boxes (N x 4 xyxy float32 pixels; labels index DETECTION_CLASSES)."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    annotation: Path | None = None

    @property
    def is_negative(self) -> bool:
        return len(self.boxes) == 0


def parse_voc_xml(path: Path) -> list[VocObject]:
    """Objects of a Pascal-VOC file; DatasetError naming the file when it is not valid VOC."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise DatasetError(f"{path}: malformed XML ({error})") from error
    objects = []
    for number, node in enumerate(root.iter("object"), start=1):
        name = (node.findtext("name") or "").strip()
        box = node.find("bndbox")
        if box is None:
            raise DatasetError(f"{path}: object {number} has no <bndbox>")
        try:
            coords = tuple(float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{path}: object {number} has a missing or non-numeric box coordinate") from error
        objects.append(VocObject(name=name, box=coords))
    return objects


def class_index(name: str, path: Path) -> int:
    """Index of a VOC object name in DETECTION_CLASSES (case-insensitive)."""
    lowered = [c.lower() for c in DETECTION_CLASSES]
    if name.lower() not in lowered:
        raise DatasetError(f"{path}: unknown class {name!r} (expected one of {', '.join(DETECTION_CLASSES)})")
    return lowered.index(name.lower())


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[tuple[float, ...], bool, bool]:
    """(clipped box, was outside the image, is degenerate after clipping)."""
    xmin, ymin, xmax, ymax = box
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
               min(max(xmax, 0.0), width), min(max(ymax, 0.0), height))
    outside = clipped != (xmin, ymin, xmax, ymax)
    degenerate = clipped[2] - clipped[0] < MIN_BOX_SIDE or clipped[3] - clipped[1] < MIN_BOX_SIDE
    return clipped, outside, degenerate


def annotation_for(image: Path) -> Path | None:
    """The XML beside an image, or in a sibling `annotations/` (`Annotations/`) folder; None for negatives."""
    candidates = [image.with_suffix(".xml")]
    if image.parent.name.lower() == "images":
        candidates += [image.parent.parent / sub / f"{image.stem}.xml" for sub in ("annotations", "Annotations")]
    return next((c for c in candidates if c.is_file()), None)


def image_folder(split_dir: Path) -> Path:
    """`<split>/images/` when the split uses sub-folders, else the split folder itself."""
    images = split_dir / "images"
    return images if images.is_dir() else split_dir


def read_sample(image: Path) -> DetectionSample:
    """One sample with clipped boxes; degenerate boxes are dropped with a warning naming the file."""
    width, height = image_size(image)
    xml = annotation_for(image)
    boxes, labels = [], []
    for obj in parse_voc_xml(xml) if xml else []:
        clipped, outside, degenerate = clip_box(obj.box, width, height)
        if degenerate:
            log.warning("%s: dropped degenerate box %s (image %dx%d)", xml, obj.box, width, height)
            continue
        if outside:
            log.debug("%s: clipped box %s to the image", xml, obj.box)
        boxes.append(clipped)
        labels.append(class_index(obj.name, xml))
    return DetectionSample(
        image=image,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        annotation=xml,
    )


def read_detection_split(root: Path, split: str) -> list[DetectionSample]:
    """All samples of one split, negatives included, in file-name order."""
    folder = image_folder(split_folder(root, "detection", split))
    images = list_images(folder)
    if not images:
        raise DatasetError(f"{folder}: split {split!r} holds no images")
    return [read_sample(image) for image in images]
