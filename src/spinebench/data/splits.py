"""Which images make up each split: the release's own folders, or a split file that lists them (`data.splits=FILE`).

A split file is what `spinebench data resplit` writes (FORMAT; nnU-Net's `splits_final.json` in spirit): one list
of image paths per split, relative to the release root, editable by hand. The images stay in their release
folders and a split may take them from any of them (a test split from the release's train folder, ...); each
image's mask or XML annotation is found beside it, where the readers always look. Every reader lists a split
through `split_images`, so a run trains, validates and tests on exactly what the file lists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinebench.data.images import IMAGE_SUFFIXES, list_images
from spinebench.data.layout import SPLITS, image_folders, mask_folder, split_image_folder
from spinebench.errors import ConfigError, DataError

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

FORMAT = "spinebench-splits/1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitFile:
    """A checked split file: where it is (absolute), the SHA-256 of its bytes, and each split's images (absolute,
    in the file's order)."""

    path: Path
    sha256: str
    images: dict[str, tuple[Path, ...]]

    def describe(self) -> dict[str, Any]:
        """What a run's record says of its split (metrics.json data.splits)."""
        return {
            "file": str(self.path),
            "sha256": self.sha256,
            "sizes": {split: len(self.images[split]) for split in SPLITS},
        }


def content_sha256(path: Any) -> str | None:
    """Hex SHA-256 of a file's bytes; None for no path or an unreadable file (`load_splits` then says why).

    The data configs' `splits_sha256: ${spinebench.sha256:${.splits}}`: the resolved config (config.yaml and every
    checkpoint's) carries the file's content, so a resume under a split file edited in place, which keeps its
    path, is refused as a changed setting."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        return None
    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    except OSError:
        return None


def release_root(data: Path | str | DatasetSpec) -> Path:
    """The release folder of `data`: a root given as a path, or a DatasetSpec's."""
    return Path(data) if isinstance(data, (str, os.PathLike)) else data.root


def split_file(data: Path | str | DatasetSpec) -> SplitFile | None:
    """The split file `data` reads its splits from: a DatasetSpec's (data.splits), None for a bare root."""
    return None if isinstance(data, (str, os.PathLike)) else data.splits


def uses_split_file(data: Path | str | DatasetSpec) -> bool:
    return split_file(data) is not None


def split_images(data: Path | str | DatasetSpec, task: str, split: str) -> list[Path]:
    """The images of one split: those the split file of `data` (a DatasetSpec made with data.splits) lists, in its
    order; else the release folder's, sorted by name. `data` may be a release root. Every reader lists here."""
    chosen = split_file(data)
    if chosen is not None:
        return list(chosen.images[split])
    return list_images(split_image_folder(release_root(data), task, split))


def split_origin(data: Path | str | DatasetSpec, task: str, split: str) -> Path:
    """What messages name as where a split's list came from: the split file, or the release's split folder."""
    chosen = split_file(data)
    return chosen.path if chosen is not None else split_image_folder(release_root(data), task, split)


def _read(path: Path, root: Path, task: str) -> tuple[dict[str, Any], str]:
    """The file's content and the SHA-256 of the very bytes parsed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{path}: split file not found (write one with `spinebench data resplit {root} --task {task} --out {path}`)"
        ) from None
    except OSError as error:
        raise DataError(f"{path}: split file unreadable ({error})") from None
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: not JSON ({error}); a split file is what `spinebench data resplit` writes") from None
    found = content.get("format") if isinstance(content, dict) else f"a JSON {type(content).__name__}"
    if found != FORMAT:
        raise DataError(
            f"{path}: not a spinebench split file (format {found!r}, expected {FORMAT!r}); "
            "`spinebench data resplit` writes one"
        )
    return content, hashlib.sha256(raw).hexdigest()


def _listed(path: Path, root: Path, content: dict[str, Any], folders: dict[str, Path]) -> dict[str, list[Path]]:
    """Each split's images as paths under `root`, refused in one line: not a list of paths, a path outside the
    release's image folders, a file that is not there, an image in two splits."""
    allowed = {folder.resolve() for folder in folders.values()}
    inside: dict[Path, bool] = {}  # per parent folder: resolved once
    images: dict[str, list[Path]] = {}
    seen: dict[Path, str] = {}
    missing: list[str] = []
    for split in SPLITS:
        names = content.get(split)
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise DataError(
                f"{path}: {split!r} must be a list of image paths relative to the release root, got "
                f"{type(names).__name__ if not isinstance(names, list) else 'a list with a non-path entry'}"
            )
        images[split] = []
        for name in names:
            image = Path(os.path.normpath(root / name))  # normpath: a `..` is seen, a symlinked file kept as named
            if image.parent not in inside:
                inside[image.parent] = image.parent.resolve() in allowed
            if Path(name).is_absolute() or not inside[image.parent]:
                raise DataError(
                    f"{path}: {name!r} ({split}) is not in an image folder of the release at {root} "
                    f"({', '.join(sorted(f.relative_to(root).as_posix() or '.' for f in folders.values()))})"
                )
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{path}: {name!r} ({split}) is not an image ({', '.join(IMAGE_SUFFIXES)})")
            if image in seen:
                where = "twice in" if seen[image] == split else f"in both {seen[image]!r} and"
                raise DataError(f"{path}: {name} is listed {where} {split!r}; an image belongs to one split")
            seen[image] = split
            if not image.is_file():
                missing.append(name)
            images[split].append(image)
    if missing:
        more = f" ({len(missing) - 1} more listed images are missing too)" if len(missing) > 1 else ""
        raise DataError(f"{path}: lists {missing[0]}, which does not exist under {root}{more}")
    return images


def load_splits(path: Any, root: Path, task: str, expected_sha256: str | None = None) -> SplitFile:
    """The split file at `path` for the release at `root`, checked before any training: DataError in one line for a
    file that is missing, not JSON or not of FORMAT, of the other task, listing an image that is not there or not in
    a release image folder, listing an image twice, with an empty split the release has images for, with two
    images of one name in a split (their predictions would share a file), or a segmentation image without its mask.
    `expected_sha256`: the hash the resolved config recorded (data.splits_sha256); other bytes are refused."""
    if isinstance(path, bool) or not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError(f"data.splits must be the path of a split file (or null), got {path!r}")
    path, root = Path(path).expanduser().resolve(), Path(root).resolve()
    content, digest = _read(path, root, task)
    if expected_sha256 is not None and digest != expected_sha256:
        raise DataError(
            f"{path}: its content (sha256 {digest[:12]}...) is not the one data.splits_sha256 names "
            f"({str(expected_sha256)[:12]}...): the file changed as the run started, or data.splits_sha256 pins another"
        )
    if content.get("task") not in (None, task):
        raise DataError(f"{path}: a split file of a {content['task']} release; this data is a {task} release")
    if content.get("root") and Path(str(content["root"])) != root:
        log.warning("%s was written for the release at %s; its paths are read under %s", path, content["root"], root)
    folders = image_folders(root, task)
    images = _listed(path, root, content, folders)
    for split in SPLITS:
        if not images[split] and split in folders and list_images(folders[split]):
            raise DataError(
                f"{path}: split {split!r} is empty, but the release has {split} images: a run needs each split "
                "it trains, validates or tests on (move some images into it)"
            )
        names = Counter(image.name for image in images[split])
        if twice := sorted(name for name, n in names.items() if n > 1):
            raise DataError(
                f"{path}: split {split!r} lists two images named {twice[0]} (from two release folders); their "
                "predictions and per-image scores are kept by file name: keep one"
            )
    if task == "segmentation":
        lacking = [image for split in SPLITS for image in images[split] if not mask_of(image).is_file()]
        if lacking:
            more = f" ({len(lacking) - 1} more listed images lack one)" if len(lacking) > 1 else ""
            raise DataError(f"{lacking[0]}: listed in {path}, but has no mask {mask_of(lacking[0])}{more}")
    return SplitFile(path=path, sha256=digest, images={split: tuple(images[split]) for split in SPLITS})


def mask_of(image: Path) -> Path:
    """A segmentation image's mask: the file of the same name in `<split>_masks/` beside its `<split>_images/`."""
    return mask_folder(image.parent) / image.name
