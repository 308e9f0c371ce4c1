"""Files a killed run must never leave half-written (metrics.json, status.json, checkpoints' sidecars), and a write
that fails for want of space or permission said in one line: which path, and how much room is left there."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from spinebench.errors import SpinebenchError

# the errnos of a disk that will not take the file: full, read-only, over quota, not permitted
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(SpinebenchError):
    """A file could not be written where it must go: a full or read-only disk, a folder without permission."""


def free_space(path: Path | str) -> str:
    """The free space of the disk `path` is (or would be) on, e.g. '12.3 MB free'; 'free space unknown'."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    for unit in ("B", "kB", "MB", "GB"):
        if free < 1000 or unit == "GB":
            return f"{free:.1f} {unit} free" if unit != "B" else f"{free} B free"
        free /= 1000
    return "free space unknown"  # pragma: no cover


def is_disk_fault(error: BaseException) -> bool:
    """An OSError of a disk that will not take a write (or torch's writer's RuntimeError for one)."""
    if isinstance(error, OSError):
        return error.errno in DISK_ERRNOS
    text = str(error)
    return isinstance(error, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text)


def write_error(path: Path | str, error: BaseException) -> WriteError:
    """`error` (met writing `path`) as one line naming the path, the reason and the free space there."""
    where = getattr(error, "filename", None) or path
    reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else "the write stopped short"
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        reason = "the write stopped short (a full disk?)"
    return WriteError(
        f"{where}: cannot write it ({reason}; {free_space(where)}); free some space or write elsewhere "
        "(paths.output_dir=..., paths.cache_dir=...), and run the command again"
    )


def write_json(path: Path, payload: Any) -> Path:
    """Write atomically (temp file + rename); a failed write leaves the old file and no temp file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp.replace(path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if is_disk_fault(error):
            raise write_error(path, error) from error
        raise
    return path
