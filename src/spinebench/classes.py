"""Label definitions shared by every module: class names, the Pascal-VOC palette, the ignore index.

The segmentation release does not document its palette order; manuscript.md recovered it by matching pixel
totals against the paper's Table 1 (palette index = class index).
"""

from __future__ import annotations

import numpy as np

IMAGE_HEIGHT, IMAGE_WIDTH = 275, 690  # every image of both releases

DETECTION_CLASSES: tuple[str, ...] = ("hematoma",)

SEGMENTATION_CLASSES: tuple[str, ...] = (
    "background",
    "dura",
    "pia",
    "CSF",
    "spinal cord",
    "dorsal space",
    "hematoma",
    "ventral space",
    "dura/pia complex",
    "dura/ventral complex",
)
NUM_SEGMENTATION_CLASSES = len(SEGMENTATION_CLASSES)
CORD = SEGMENTATION_CLASSES.index("spinal cord")
HEMATOMA = SEGMENTATION_CLASSES.index("hematoma")

# Pixels whose colour is not in the palette (anti-aliasing) get this index; losses and metrics skip it.
IGNORE_INDEX = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal-VOC colour map (n x 3 uint8): bit-interleaved index -> RGB, as VOC's devkit defines it."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        code, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette[index] = (r, g, b)
    return palette


SEGMENTATION_PALETTE: np.ndarray = voc_palette(NUM_SEGMENTATION_CLASSES)
