"""Finding the split folders of a release, wherever an archive put them.

Detection: `<split>/` with PNG + XML side by side, or `<split>/images/` + `<split>/annotations/`.
Segmentation: `<split>_images/` + `<split>_masks/`. Split names: train, val (also valid/validation), test.
"""

from __future__ import annotations

from pathlib import Path

from spinebench.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
TASKS = ("detection", "segmentation")
_MAX_DEPTH = 3  # archives add one or two wrapper folders


def _children(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}


def _splits_here(folder: Path, task: str) -> dict[str, Path]:
    children = _children(folder)
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            name = alias if task == "detection" else f"{alias}_images"
            if name in children:
                found[split] = children[name]
                break
    return found


def find_splits(root: Path, task: str) -> dict[str, Path]:
    """Map canonical split name -> its folder (detection: the split folder; segmentation: `<split>_images`).

    Raises DataError when the root is missing or holds no split of this task at any depth.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    frontier = [root]
    for _ in range(_MAX_DEPTH + 1):
        for folder in frontier:
            found = _splits_here(folder, task)
            if found:
                return found
        frontier = sorted(child for folder in frontier for child in _children(folder).values())
    expected = "train/ val/ test/ folders" if task == "detection" else "train_images/ val_images/ test_images/ folders"
    raise DataError(f"{root}: no {task} release found (expected {expected}, up to {_MAX_DEPTH} levels down)")


def split_folder(root: Path, task: str, split: str) -> Path:
    """The folder of one split, with a message naming what is there when it is missing."""
    splits = find_splits(root, task)
    if split not in splits:
        have = ", ".join(sorted(splits)) or "none"
        raise DataError(f"{root}: {task} split {split!r} is missing (found: {have})")
    return splits[split]


def image_folder(split_dir: Path) -> Path:
    """Detection: `<split>/images/` when the split uses sub-folders, else the split folder itself."""
    images = split_dir / "images"
    return images if images.is_dir() else split_dir


def mask_folder(image_folder: Path) -> Path:
    """Segmentation: `<split>_masks/` beside `<split>_images/`."""
    return image_folder.with_name(image_folder.name[: -len("_images")] + "_masks")


def image_folders(root: Path, task: str) -> dict[str, Path]:
    """Map split -> the folder holding its images (detection: `<split>/` or `<split>/images/`)."""
    found = find_splits(root, task)
    return {split: image_folder(folder) if task == "detection" else folder for split, folder in found.items()}


def split_image_folder(root: Path, task: str, split: str) -> Path:
    """The folder holding one split's images, with split_folder's message when the split is missing."""
    folder = split_folder(root, task, split)
    return image_folder(folder) if task == "detection" else folder
