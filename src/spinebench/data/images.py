"""Decoding PNGs with errors that name the file (truncated uploads and corrupt files occur in real releases)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spinebench.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WIDE_MODES = ("I", "F")  # Pillow's 16/32-bit modes ("I;16", "I;16B", ...): its convert clips them to 8-bit white


def _pillow_open():
    """Pillow's own Image.open. ultralytics replaces it on import with one that meets an unidentified file by
    installing and importing pi-heif: a corrupt PNG became a ModuleNotFoundError, and online a pip install."""
    opener = Image.open
    if opener.__module__ != Image.__name__:  # replaced before this module was imported: the original it kept
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener


pil_open = _pillow_open()


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name so every run sees the same order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _decode(path: Path, mode: str) -> np.ndarray:
    try:
        with pil_open(path) as image:
            image.load()  # forces a full decode: a truncated PNG fails here, not later in a worker
            if image.mode.startswith(WIDE_MODES):  # a DataError: not one of the errors caught below
                raise DataError(
                    f"{path}: {image.mode} image (16 or 32 bits a pixel); the releases are 8-bit, and "
                    "its scale (12 or 16 bits used?) is not known here: save it as 8-bit"
                )
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: unreadable or truncated image ({error}); `spinebench data check <release folder>` "
            "lists every such file"
        ) from error


def read_gray(path: Path) -> np.ndarray:
    """B-mode image as H x W uint8 (the releases store grey ultrasound, sometimes saved as RGB)."""
    return _decode(Path(path), "L")


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8, used for the colour masks."""
    return _decode(Path(path), "RGB")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; cheap enough to call on every image of a split."""
    try:
        with pil_open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: unreadable image ({error}); `spinebench data check <release folder>` lists every such file"
        ) from error
