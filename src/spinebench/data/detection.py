"""Reader for the detection release: PNG images with Pascal-VOC XML boxes, one class (`hematoma`).

Pre-injury images have no XML, or an XML without objects: they are negatives and stay in the split.
Boxes may be floats and may spill over the image: they are clipped; boxes left degenerate are dropped
with a warning (never silently). An XML is found beside its image, in the split folder, or in the split's
`annotations/` (`Annotations/`) folder, its suffix in any case; `spinebench data check` looks in the same places.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spinebench.classes import DETECTION_CLASSES
from spinebench.data.images import image_size
from spinebench.data.splits import split_images, split_origin
from spinebench.errors import DataError

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0  # pixels; thinner boxes after clipping carry no usable lesion


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels


@dataclass(frozen=True)
class VocFile:
    objects: list[VocObject]
    size: tuple[int, int] | None  # (width, height) its <size> gives; None when absent or zero


@dataclass(frozen=True)
class DetectionSample:
    """One image and its boxes (N x 4 xyxy float32 pixels; labels index DETECTION_CLASSES)."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    annotation: Path | None = None
    annotation_size: tuple[int, int] | None = None  # (width, height) the XML's <size> gives, when it gives one

    @property
    def is_negative(self) -> bool:
        return len(self.boxes) == 0


def parse_voc_xml(path: Path) -> VocFile:
    """Objects and size of a Pascal-VOC file; DataError naming the file when it is not valid VOC."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError, LookupError, ValueError) as error:  # LookupError: unknown encoding
        raise DataError(f"{path}: malformed XML ({error})") from error
    if root.tag != "annotation":  # e.g. a COCO or CVAT export: its boxes would be read as none at all
        raise DataError(f"{path}: not a Pascal-VOC file (root element <{root.tag}>, expected <annotation>)")
    objects = []
    for number, node in enumerate(root.iter("object"), start=1):
        name = (node.findtext("name") or "").strip()
        box = node.find("bndbox")
        if box is None:
            raise DataError(f"{path}: object {number} has no <bndbox>")
        try:
            coords = tuple(float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as error:
            raise DataError(f"{path}: object {number} has a missing or non-numeric box coordinate") from error
        if any(math.isnan(c) for c in coords):  # NaN passes every clip and size test unchanged
            raise DataError(f"{path}: object {number} has a missing or non-numeric box coordinate (nan)")
        objects.append(VocObject(name=name, box=coords))
    return VocFile(objects=objects, size=_voc_size(root))


def _voc_size(root: ElementTree.Element) -> tuple[int, int] | None:
    try:
        size = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        return None
    return size if min(size) > 0 else None


def class_index(name: str, path: Path) -> int:
    """Index of a VOC object name in DETECTION_CLASSES (case-insensitive)."""
    lowered = [c.lower() for c in DETECTION_CLASSES]
    if name.lower() not in lowered:
        raise DataError(f"{path}: unknown class {name!r} (expected one of {', '.join(DETECTION_CLASSES)})")
    return lowered.index(name.lower())


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[tuple[float, ...], bool, bool]:
    """(clipped box, was outside the image, is degenerate after clipping)."""
    xmin, ymin, xmax, ymax = box
    clipped = (
        min(max(xmin, 0.0), width),
        min(max(ymin, 0.0), height),
        min(max(xmax, 0.0), width),
        min(max(ymax, 0.0), height),
    )
    outside = clipped != (xmin, ymin, xmax, ymax)
    degenerate = clipped[2] - clipped[0] < MIN_BOX_SIDE or clipped[3] - clipped[1] < MIN_BOX_SIDE
    return clipped, outside, degenerate


def split_annotations(images_dir: Path) -> dict[str, list[Path]]:
    """The XML files of a split by stem: beside the images, in the split folder (when the images sit in
    `<split>/images/`) and in `<split>/annotations/` or `Annotations/`; `.xml` in any case. One stem with
    more than one file is ambiguous: the reader refuses it, `check` reports it."""
    split_dir = images_dir.parent if images_dir.name.lower() == "images" else images_dir
    folders, seen = [], set()
    for folder in (images_dir, split_dir, split_dir / "annotations", split_dir / "Annotations"):
        if folder.is_dir() and (key := (os.stat(folder).st_dev, os.stat(folder).st_ino)) not in seen:
            seen.add(key)  # the same folder twice on a case-insensitive file system
            folders.append(folder)
    found: dict[str, list[Path]] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() == ".xml" and path.is_file():
                found.setdefault(path.stem, []).append(path)
    return found


def annotation_of(image: Path, annotations: dict[str, list[Path]]) -> Path | None:
    """The one XML of `image` in its split's `split_annotations`; None for a negative."""
    xmls = annotations.get(image.stem, [])
    if len(xmls) > 1:
        raise DataError(f"{image}: more than one annotation ({', '.join(map(str, xmls))}); keep one")
    return xmls[0] if xmls else None


def read_sample(image: Path, xml: Path | None) -> DetectionSample:
    """One sample with clipped boxes; degenerate boxes are dropped with a warning naming the file."""
    width, height = image_size(image)
    voc = parse_voc_xml(xml) if xml else VocFile(objects=[], size=None)
    boxes, labels = [], []
    for obj in voc.objects:
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
        annotation_size=voc.size,
    )


def read_detection_split(data: Path | DatasetSpec, split: str) -> list[DetectionSample]:
    """All samples of one split, negatives included: a release folder's (`data` a root) in file-name order, or
    those a DatasetSpec's split file lists, in its order; each image's XML is looked for beside it."""
    images = split_images(data, "detection", split)
    where = split_origin(data, "detection", split)
    if not images:
        raise DataError(f"{where}: split {split!r} holds no images")
    annotations: dict[Path, dict[str, list[Path]]] = {}  # per image folder: a split file may draw on several
    samples = []
    for image in images:
        if image.parent not in annotations:
            annotations[image.parent] = split_annotations(image.parent)
        samples.append(read_sample(image, annotation_of(image, annotations[image.parent])))
    other_size = [s for s in samples if s.annotation_size not in (None, (s.width, s.height))]
    if other_size:  # boxes drawn on a resized copy, or an XML that belongs to another image
        first = other_size[0]
        log.warning(
            "%s: %d of %d annotations give a <size> other than their image's, e.g. %s (%dx%d, image %dx%d); "
            "their boxes are used as they are (`spinebench data check` lists them)",
            where,
            len(other_size),
            len(samples),
            first.annotation,
            *first.annotation_size,
            first.width,
            first.height,
        )
    return samples
