"""Minimal hand-made release files with exactly known content, for reader and bad-input tests (the phantom tests
use the phantom itself; these stay tiny so each bad-input case is easy to build)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH


def write_png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def voc_xml(filename: str, boxes, name: str = "hematoma", width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> str:
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>1</depth></size>{objects}</annotation>"
    )
