"""`spinebench data fetch`: the real download of the Kumar et al. releases (Google Drive, via gdown),
extraction, layout discovery and a manifest with checksums.

Offline, the download fails within seconds with instructions for a manual download; `--archive PATH`
extracts an archive the user already has. The manifest (`spinebench-manifest.json`) marks the folder as the
real release for every result made from it.
"""

from __future__ import annotations

import json
import socket
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from spinebench.data.layout import find_splits
from spinebench.data.source import MANIFEST, sha256
from spinebench.errors import DataError

# Google Drive file ids of the two releases (manuscript.md; github.com/HEPIUSLAB/ultrasound_spinal_cord_dataset).
DRIVE_FILE_IDS = {
    "detection": "1r-r0dcXePMyXiXuVEUhtUgARw-Ktp_O1",
    "segmentation": "1JUKakYg10ZsHVDORsv9XvDkx86WVKaFO",
}
DRIVE_HOST = ("drive.google.com", 443)


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


def extract(archive: Path, out: Path) -> None:
    """Unpack a zip or tar archive into `out`, refusing members that would land outside it."""
    out.mkdir(parents=True, exist_ok=True)
    target = out.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                for name in handle.namelist():
                    if not (target / name).resolve().is_relative_to(target):
                        raise DataError(f"{archive}: member {name!r} would be written outside {out}")
                handle.extractall(out)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                handle.extractall(out, filter="data")  # the data filter rejects absolute paths and '..'
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DataError(f"{archive}: damaged archive ({error})") from error


def write_manifest(task: str, out: Path, archive: Path | None) -> dict[str, Any]:
    """Checksums of every extracted file plus the split folders found: the record of what was used."""
    splits = find_splits(out, task)
    written = out / f"{MANIFEST}.writing"  # renamed when whole: a stopped fetch leaves no manifest cut short
    skip = {(out / MANIFEST).resolve(), written.resolve(), archive.resolve() if archive else None}
    files = {
        str(p.relative_to(out)): sha256(p) for p in sorted(out.rglob("*")) if p.is_file() and p.resolve() not in skip
    }
    manifest = {
        "task": task,
        "drive_file_id": DRIVE_FILE_IDS[task],
        "archive": str(archive) if archive else None,
        "archive_sha256": sha256(archive) if archive else None,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {split: str(folder.relative_to(out)) for split, folder in splits.items()},
        "n_files": len(files),
        "files": files,
    }
    written.write_text(json.dumps(manifest, indent=1) + "\n")
    written.replace(out / MANIFEST)
    return manifest


def fetch(task: str, out: Path, archive: Path | None = None, host: tuple[str, int] | None = None) -> dict[str, Any]:
    """Download (unless `archive` is given), extract, discover the layout and write the manifest."""
    if task not in DRIVE_FILE_IDS:
        raise DataError(f"unknown task {task!r}: expected one of {', '.join(DRIVE_FILE_IDS)}")
    out = Path(out)
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
    extract(archive, out)
    return write_manifest(task, out, archive)
