"""A segmentation split served from the uint8 memmap cache (images and decoded class-index masks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from spinebench.classes import IGNORE_INDEX
from spinebench.data.cache import decoded_cache
from spinebench.data.images import read_rgb
from spinebench.data.segmentation import decode_mask, read_mask, read_segmentation_split
from spinebench.errors import DataError

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

MASK_TAG = "segmentation-mask-v1"  # bump when read_mask's decoding changes
# Above this share of a split's labelled (non-background) mask pixels off the palette, its masks are not in the
# release's format. Anti-aliased edges stay far below; class-index masks are near 1.
STRAY_LIMIT = 0.5
log = logging.getLogger(__name__)


class SegmentationSplit(Dataset):
    """Item i = (grey image H x W uint8 tensor, class-index mask H x W uint8 tensor, i).

    Every image must have the size of its mask, and all images of a split one size (the release's 690 x 275):
    a mismatch raises DataError naming the file.
    """

    def __init__(self, data: Path | str | DatasetSpec, split: str, cache_dir: Path | str, limit: int | None = None):
        """`data`: a release root, or a DatasetSpec (whose split file, when it has one, lists the images)."""
        samples = read_segmentation_split(Path(data) if isinstance(data, str) else data, split)
        if limit:
            samples = samples[:limit]
        self.split = split
        self.image_paths = [s.image for s in samples]
        self.mask_paths = [s.mask for s in samples]
        self.names = [s.image.name for s in samples]
        self.images = decoded_cache(self.image_paths, cache_dir)
        self.masks = decoded_cache(self.mask_paths, cache_dir, decode=read_mask, tag=MASK_TAG)
        first = self.images.shapes[0]
        for i, (image_shape, mask_shape) in enumerate(zip(self.images.shapes, self.masks.shapes)):
            if image_shape != mask_shape:
                raise DataError(
                    f"{self.mask_paths[i]}: mask is {mask_shape[1]}x{mask_shape[0]} but its image "
                    f"{self.image_paths[i].name} is {image_shape[1]}x{image_shape[0]} (W x H)"
                )
            if image_shape != first:
                raise DataError(
                    f"{self.image_paths[i]}: {image_shape[1]}x{image_shape[0]} (W x H), but the split's "
                    f"first image is {first[1]}x{first[0]}: all images of a split must have one size"
                )
        self.size = tuple(first)  # (H, W)
        self._check_palette()

    def _check_palette(self) -> None:
        """Refuse masks that are not in the release's palette (e.g. saved as class indices, grey k for class k):
        nearly every labelled pixel would become ignore and a run would learn nothing. A few colours off the
        palette (anti-aliased edges) are the release's own: ignored, and reported here."""
        stray, labelled = np.zeros(len(self.masks), np.int64), np.zeros(len(self.masks), np.int64)
        for i in range(len(self.masks)):
            mask = self.masks[i]
            stray[i], labelled[i] = np.count_nonzero(mask == IGNORE_INDEX), mask.size - np.count_nonzero(mask == 0)
        if not stray.any():
            return
        if stray.sum() > STRAY_LIMIT * labelled.sum():
            worst = int(np.argmax(stray / np.maximum(labelled, 1)))
            rgb = read_rgb(self.mask_paths[worst])
            colours, counts = np.unique(rgb[decode_mask(rgb)[0] == IGNORE_INDEX], axis=0, return_counts=True)
            common = ", ".join(str(tuple(int(v) for v in colours[k])) for k in np.argsort(-counts)[:3])
            raise DataError(
                f"{self.mask_paths[worst]}: {stray[worst] / max(labelled[worst], 1):.0%} of its labelled "
                f"pixels are not colours of the VOC palette (most common: {common}); masks must be RGB in "
                "the release's palette, palette index = class (class-index masks: colour class k with "
                "spinebench.classes.SEGMENTATION_PALETTE[k])"
            )
        log.warning(
            "%s split: %d mask pixels in %d masks (%.3f%% of labelled pixels) are outside the VOC palette; they "
            "are ignored in loss and metrics (`spinebench data check` lists the masks)",
            self.split,
            int(stray.sum()),
            int(np.count_nonzero(stray)),
            100 * stray.sum() / max(labelled.sum(), 1),
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.images[i])), torch.from_numpy(np.array(self.masks[i])), i
