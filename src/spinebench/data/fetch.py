"""`spinebench data fetch`: the real download of the Kumar et al. releases (Google Drive, via gdown),
extraction, layout discovery and a manifest with checksums.

Offline, the download fails within seconds with instructions for a manual download; `--archive PATH`
extracts an archive the user already has. The archive is looked at before anything is extracted (no images,
links, more bytes than the disk has free: refused), and what it holds is compared with the release's published
facts (RELEASE_FACTS; the archive's SHA-256 when the user gives one). The manifest (`spinebench-manifest.json`)
records that comparison: a folder is labelled the real release only when it matched, and stays so only while
its files are unchanged (spinebench.data.source.describe_source).
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from spinebench.atomic import free_space, is_disk_fault, write_error
from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH
from spinebench.data.images import IMAGE_SUFFIXES, pil_open
from spinebench.data.layout import find_splits
from spinebench.data.source import MANIFEST, sha256
from spinebench.data.splits import split_images
from spinebench.errors import DataError

# Google Drive file ids of the two releases (manuscript.md; github.com/HEPIUSLAB/ultrasound_spinal_cord_dataset).
DRIVE_FILE_IDS = {
    "detection": "1r-r0dcXePMyXiXuVEUhtUgARw-Ktp_O1",
    "segmentation": "1JUKakYg10ZsHVDORsv9XvDkx86WVKaFO",
}
DRIVE_HOST = ("drive.google.com", 443)

# What the manuscript publishes of each release (benchmarks/manuscript.yaml `dataset`, tests/test_trust.py checks the
# two agree): images in all, per split where published, and every image's size in pixels (width, height).
RELEASE_FACTS: dict[str, dict[str, Any]] = {
    "detection": {"images": 2245, "split": None, "size": (IMAGE_WIDTH, IMAGE_HEIGHT)},
    "segmentation": {
        "images": 10223,
        "split": {"train": 8668, "val": 895, "test": 660},
        "size": (IMAGE_WIDTH, IMAGE_HEIGHT),
    },
}


class FetchError(DataError):
    """The download could not be done here; the message says how to do it by hand."""


def drive_url(task: str) -> str:
    return f"https://drive.google.com/uc?id={DRIVE_FILE_IDS[task]}"


def manual_instructions(task: str, out: Path) -> str:
    return (
        f"Download it by hand from https://drive.google.com/file/d/{DRIVE_FILE_IDS[task]}/view "
        f"(the {task} release of Kumar et al.), then run:\n"
        f"  spinebench data fetch --task {task} --out {out} --archive /path/to/the/downloaded/archive"
    )


def check_reachable(host: tuple[str, int], timeout: float = 5.0) -> None:
    """Fail fast when there is no route to Google Drive (gdown itself would retry for minutes)."""
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as error:
        raise FetchError(f"cannot reach {host[0]}:{host[1]} ({error})") from error


def _members(archive: Path) -> list[tuple[str, int, bool]]:
    """(name, size in bytes, is a link or device) of each member, read from the archive's directory only."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            return [
                (info.filename, info.file_size, stat.S_ISLNK(info.external_attr >> 16))
                for info in handle.infolist()
                if not info.is_dir()
            ]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            return [(m.name, m.size, not (m.isfile() or m.isdir())) for m in handle.getmembers() if not m.isdir()]
    raise DataError(f"{archive}: not a zip or tar archive")


def check_archive(archive: Path, out: Path) -> None:
    """Refuse, before a byte is extracted, an archive holding no image, one with links (a zip's symlink member
    stopped the extraction half-way), and one larger than the free space of `out`'s disk."""
    try:
        members = _members(archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DataError(f"{archive}: damaged archive ({error})") from error
    target = Path(out).resolve()
    for name, _, _ in members:
        if not (target / name).resolve().is_relative_to(target):
            raise DataError(f"{archive}: member {name!r} would be written outside {out}")
    links = [name for name, _, link in members if link]
    if links:
        raise DataError(f"{archive}: member {links[0]!r} is a link, which no release holds; not extracted")
    if not any(Path(name).suffix.lower() in IMAGE_SUFFIXES for name, _, _ in members):
        raise DataError(f"{archive}: holds no image ({len(members)} other files); not a release, not extracted")
    needed = sum(size for _, size, _ in members)
    free = shutil.disk_usage(_existing(out)).free
    if needed > free:
        raise DataError(
            f"{archive}: needs {needed / 1e6:.1f} MB to extract into {out}, which has {free_space(out)}; "
            "free some space or give another --out"
        )


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def extract(archive: Path, out: Path) -> None:
    """Unpack a zip or tar archive into `out`, refusing members that would land outside it."""
    check_archive(archive, out)
    target = out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                for name in handle.namelist():
                    if not (target / name).resolve().is_relative_to(target):
                        raise DataError(f"{archive}: member {name!r} would be written outside {out}")
                handle.extractall(out)
        else:
            with tarfile.open(archive) as handle:
                handle.extractall(out, filter="data")  # the data filter rejects absolute paths and '..'
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DataError(f"{archive}: damaged archive ({error})") from error
    except OSError as error:
        if is_disk_fault(error):
            raise write_error(out, error) from error
        raise


def release_check(task: str, out: Path) -> list[str]:
    """How the extracted folder differs from the release the manuscript describes (RELEASE_FACTS): images in all
    and per split, and image size. [] when it matches."""
    facts, reasons = RELEASE_FACTS[task], []
    counts: dict[str, int] = {}
    for split in find_splits(out, task):
        images = split_images(out, task, split)  # the release's own split: what a run without data.splits reads
        counts[split] = len(images)
        for path in images[:1]:
            try:
                with pil_open(path) as image:
                    size = image.size
            except (OSError, SyntaxError, ValueError):
                reasons.append(f"{path.relative_to(out)} is unreadable")
                continue
            if tuple(size) != tuple(facts["size"]):
                reasons.append(
                    f"{split} images are {size[0]}x{size[1]}, the release's {facts['size'][0]}x{facts['size'][1]}"
                )
    if sum(counts.values()) != facts["images"]:
        reasons.append(f"{sum(counts.values())} images, the release has {facts['images']}")
    for split, expected in (facts["split"] or {}).items():
        if counts.get(split) != expected:
            reasons.append(f"{counts.get(split, 0)} {split} images, the release has {expected}")
    return reasons


def write_manifest(task: str, out: Path, archive: Path | None, expected_sha256: str | None = None) -> dict[str, Any]:
    """Checksums of every extracted file plus the split folders found: the record of what was used."""
    splits = find_splits(out, task)
    written = out / f"{MANIFEST}.writing"  # renamed when whole: a stopped fetch leaves no manifest cut short
    skip = {(out / MANIFEST).resolve(), written.resolve(), archive.resolve() if archive else None}
    files = {
        str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*")) if p.is_file() and p.resolve() not in skip
    }
    reasons = release_check(task, out)
    archive_sha = sha256(archive) if archive else None
    manifest = {
        "task": task,
        "drive_file_id": DRIVE_FILE_IDS[task],
        "archive": str(archive) if archive else None,
        "archive_sha256": archive_sha,
        "archive_sha256_given": expected_sha256,  # checked before extraction: equal when given
        "release": {"matches": not reasons, "differences": reasons},
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {split: str(folder.relative_to(out)) for split, folder in splits.items()},
        "n_files": len(files),
        "files": files,
    }
    try:
        written.write_text(json.dumps(manifest, indent=1) + "\n")
        written.replace(out / MANIFEST)
    except OSError as error:
        written.unlink(missing_ok=True)
        if is_disk_fault(error):
            raise write_error(written, error) from error
        raise
    return manifest


def fetch(
    task: str,
    out: Path,
    archive: Path | None = None,
    host: tuple[str, int] | None = None,
    force: bool = False,
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Download (unless `archive` is given), check, extract, compare with the release and write the manifest.
    A non-empty `out` is refused unless `force` (two archives fetched into one folder were merged under one
    manifest); `expected_sha256`: the archive's known hash, a mismatch refused before extraction."""
    if task not in DRIVE_FILE_IDS:
        raise DataError(f"unknown task {task!r}: expected one of {', '.join(DRIVE_FILE_IDS)}")
    out = Path(out)
    if not force and out.is_dir() and any(out.iterdir()):
        raise DataError(
            f"{out}: not empty; fetch into a new folder (--out), or add --force to extract into it anyway (its "
            "files are then listed in the manifest as the release's)"
        )
    if archive is None:
        try:
            check_reachable(host or DRIVE_HOST)
        except FetchError as error:
            raise FetchError(
                f"download of the {task} release failed: {error}.\n{manual_instructions(task, out)}"
            ) from error
        import gdown  # only needed online

        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{task}_release.zip"
        if gdown.download(drive_url(task), str(archive), quiet=False) is None:
            raise FetchError(f"gdown could not download {drive_url(task)}.\n{manual_instructions(task, out)}")
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    if expected_sha256:
        actual = sha256(archive)
        if actual.lower() != expected_sha256.strip().lower():
            raise DataError(f"{archive}: SHA-256 {actual} is not the {expected_sha256} given; not extracted")
    extract(archive, out)
    return write_manifest(task, out, archive, expected_sha256)
