"""A segmentation split served from the uint8 memmap cache (images and decoded class-index masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spinebench.data.cache import decoded_cache
from spinebench.data.errors import DatasetError
from spinebench.data.segmentation import read_mask, read_segmentation_split

MASK_TAG = "segmentation-mask-v1"  # bump when read_mask's decoding changes


class SegmentationSplit(Dataset):
    """Item i = (grey image H x W uint8 tensor, class-index mask H x W uint8 tensor, i).

    Every image must have the size of its mask, and all images of a split one size (the release's 690 x 275):
    a mismatch raises DatasetError naming the file.
    """

    def __init__(self, root: Path | str, split: str, cache_dir: Path | str, limit: int | None = None):
        samples = read_segmentation_split(Path(root), split)
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
                raise DatasetError(f"{self.mask_paths[i]}: mask is {mask_shape[1]}x{mask_shape[0]} but its image "
                                   f"{self.image_paths[i].name} is {image_shape[1]}x{image_shape[0]} (W x H)")
            if image_shape != first:
                raise DatasetError(f"{self.image_paths[i]}: {image_shape[1]}x{image_shape[0]} (W x H), but the split's "
                                   f"first image is {first[1]}x{first[0]}: all images of a split must have one size")
        self.size = tuple(first)  # (H, W)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.images[i])), torch.from_numpy(np.array(self.masks[i])), i
