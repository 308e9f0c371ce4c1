"""Decode every PNG once into a uint8 memory-mapped file in the cache folder (shared by both tasks).

    cache = decoded_cache(paths, cache_dir)                    # grey images, H x W uint8
    masks = decoded_cache(mask_paths, cache_dir, decode=my_mask_decoder, tag="mask-v1")
    array = cache[i]                                           # np.ndarray view (read-only), no PNG decode

The key is a hash of (tag, every file's path, size and mtime): when a file changes, is added or removed, a new
cache file is built; old ones stay until the cache folder is cleaned. Files: `<cache_dir>/decoded/<key>.u8`
(all arrays back to back) + `<key>.json` (shapes and offsets). Built into a temporary name and renamed, so
concurrent runs never see half a cache; a build stopped by a bad file (the error names it) leaves nothing, and
the partial file of one killed outright is removed by the next build of the same files. A cache found damaged
(an index that cannot be read, a data file of another size) is built again.
Safe to pickle into DataLoader workers (each opens its own memmap). `decode` must return a uint8 array (any
shape) and be a module-level function (its qualified name is part of the key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from spinebench.data.images import read_gray

log = logging.getLogger(__name__)

CACHE_SUBDIR = "decoded"


def cache_key(paths: Sequence[Path], tag: str) -> str:
    digest = hashlib.sha256(tag.encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class DecodedCache:
    """Read-only random access to the decoded arrays of a list of files."""

    def __init__(self, data_path: Path, index: dict):
        self.data_path = Path(data_path)
        self.shapes = [tuple(s) for s in index["shapes"]]
        self.offsets = index["offsets"]
        self.files = index["files"]
        self._memmap: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.shapes)

    def _map(self) -> np.memmap:
        if self._memmap is None:
            self._memmap = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        return self._memmap

    def __getitem__(self, i: int) -> np.ndarray:
        shape = self.shapes[i]
        start = self.offsets[i]
        return self._map()[start : start + int(np.prod(shape))].reshape(shape)

    def __getstate__(self) -> dict:  # workers re-open the memmap themselves
        state = dict(self.__dict__)
        state["_memmap"] = None
        return state

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.shapes)

    @property
    def uniform_shape(self) -> tuple[int, ...] | None:
        return self.shapes[0] if self.shapes and all(s == self.shapes[0] for s in self.shapes) else None


def _writer() -> str:
    """Who writes a partial file: host and process (a cache folder may be shared by the nodes of a cluster)."""
    return f"{socket.gethostname()}.{os.getpid()}"


def _clear_killed_builds(folder: Path, key: str) -> None:
    """Remove the partial files of earlier builds of this cache by processes of this host that no longer run: a
    build killed outright (OOM, SIGKILL) cannot clean up, and each left a file the size of its split."""
    host = socket.gethostname()
    for path in folder.glob(f"{key}.*.tmp"):
        writer, _, pid = path.name.removesuffix(".tmp").rpartition(".")
        if writer.endswith(f".{host}") and pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_cache(data_path: Path, index_path: Path) -> DecodedCache | None:
    """The finished cache at these paths, or None when its index cannot be read or the data file does not hold
    exactly the bytes the index lists."""
    try:
        cache = DecodedCache(data_path, json.loads(index_path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    return cache if data_path.stat().st_size == cache.nbytes else None


def decoded_cache(
    paths: Sequence[Path | str],
    cache_dir: Path | str,
    decode: Callable[[Path], np.ndarray] = read_gray,
    tag: str | None = None,
    workers: int | None = None,
) -> DecodedCache:
    """The cache of `paths` decoded by `decode`, built on first use."""
    paths = [Path(p) for p in paths]
    tag = tag or f"{getattr(decode, '__module__', '')}.{getattr(decode, '__qualname__', repr(decode))}"
    key = cache_key(paths, tag)
    folder = Path(cache_dir) / CACHE_SUBDIR
    data_path, index_path = folder / f"{key}.u8", folder / f"{key}.json"
    if data_path.is_file() and index_path.is_file():
        cache = _read_cache(data_path, index_path)
        if cache is not None:
            return cache
        log.warning("%s is damaged (unreadable index or wrong size): decoding the files again", data_path)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("decoding %d files once into %s", len(paths), data_path)
    workers = workers or min(8, os.cpu_count() or 1)
    shapes, offsets, offset = [], [], 0
    _clear_killed_builds(folder, key)
    tmp = data_path.with_name(f"{data_path.name}.{_writer()}.tmp")
    try:
        with open(tmp, "wb") as handle, ThreadPoolExecutor(max_workers=workers) as pool:
            # chunks keep memory bounded on the 10k-image release while decoding in parallel (PIL releases the GIL)
            for start in range(0, len(paths), 256):
                for array in pool.map(decode, paths[start : start + 256]):
                    array = np.ascontiguousarray(array, dtype=np.uint8)
                    handle.write(array.tobytes())
                    shapes.append(list(array.shape))
                    offsets.append(offset)
                    offset += array.size
    except BaseException:  # a bad file or Ctrl-C: a partial file the size of the split must not stay behind
        tmp.unlink(missing_ok=True)
        raise
    index = {"files": [str(p) for p in paths], "shapes": shapes, "offsets": offsets, "tag": tag}
    index_tmp = index_path.with_name(f"{index_path.name}.{_writer()}.tmp")
    index_tmp.write_text(json.dumps(index))
    os.replace(tmp, data_path)
    os.replace(index_tmp, index_path)  # the index appears last: its presence means the data file is complete
    return DecodedCache(data_path, index)
