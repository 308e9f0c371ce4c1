"""Reader for the segmentation release: `<split>_images/` + `<split>_masks/`, RGB masks in the VOC palette.

Mask colours are decoded to class indices 0-9; a colour outside the palette (anti-aliasing at label edges)
becomes IGNORE_INDEX and is counted, never mapped silently to the nearest class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spinebench.classes import IGNORE_INDEX, SEGMENTATION_PALETTE
from spinebench.data.images import list_images, read_rgb
from spinebench.data.layout import mask_folder
from spinebench.data.splits import mask_of, split_images, split_origin, uses_split_file
from spinebench.errors import DataError

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

# A 24-bit RGB key per palette colour gives a vectorised lookup with one np.searchsorted.
_KEYS = SEGMENTATION_PALETTE.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int64)
_ORDER = np.argsort(_KEYS)
_SORTED_KEYS = _KEYS[_ORDER]


@dataclass(frozen=True)
class SegmentationSample:
    image: Path
    mask: Path


def decode_mask(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """RGB (H x W x 3 uint8) -> (class indices H x W uint8 with IGNORE_INDEX for unknown colours, unknown count)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 mask, got shape {rgb.shape}")
    keys = rgb.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int64)
    position = np.clip(np.searchsorted(_SORTED_KEYS, keys), 0, len(_SORTED_KEYS) - 1)
    known = _SORTED_KEYS[position] == keys
    labels = np.where(known, _ORDER[position], IGNORE_INDEX).astype(np.uint8)
    return labels, int((~known).sum())


def encode_mask(labels: np.ndarray) -> np.ndarray:
    """Class indices -> RGB in the release's palette (what the phantom writes and what overlays show)."""
    if labels.max(initial=0) >= len(SEGMENTATION_PALETTE):
        raise ValueError(f"class index {int(labels.max())} has no palette colour")
    return SEGMENTATION_PALETTE[labels]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey image (H x W uint8) with class colours blended in; IGNORE_INDEX pixels stay grey."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    known = labels < len(SEGMENTATION_PALETTE)
    colours = SEGMENTATION_PALETTE[np.where(known, labels, 0)].astype(np.float32)
    rgb[known] = (1 - alpha) * rgb[known] + alpha * colours[known]
    return rgb.clip(0, 255).astype(np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """Class-index mask of one file (unknown colours -> IGNORE_INDEX)."""
    return decode_mask(read_rgb(path))[0]


def read_segmentation_split(data: Path | DatasetSpec, split: str) -> list[SegmentationSample]:
    """Image/mask pairs of one split (`data` a release root, or a DatasetSpec whose split file lists the images);
    DataError naming the first image without mask, or, for a release folder, the first mask without image."""
    images = split_images(data, "segmentation", split)
    if not images:
        raise DataError(f"{split_origin(data, 'segmentation', split)}: split {split!r} holds no images")
    for folder in dict.fromkeys(image.parent for image in images):  # one for a release folder; a split file's
        masks_dir = mask_folder(folder)
        if not masks_dir.is_dir():
            raise DataError(f"{masks_dir}: mask folder for split {split!r} is missing")
        masks = {p.name for p in list_images(masks_dir)}
        names = {image.name for image in images if image.parent == folder}
        if missing := sorted(names - masks):
            raise DataError(
                f"{folder / missing[0]}: no mask of the same name in {masks_dir} ({len(missing)} images lack one)"
            )
        if (orphans := sorted(masks - names)) and not uses_split_file(data):  # a file may leave masks unused
            raise DataError(f"{masks_dir / orphans[0]}: mask without an image in {folder} ({len(orphans)} such masks)")
    return [SegmentationSample(image=image, mask=mask_of(image)) for image in images]
