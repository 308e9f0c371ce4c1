"""Batches gathered from a split held whole in device memory (`trainer.data_on_device`).

Why: through loader workers every batch crosses from a worker process by shared memory and is then copied to the
device, and the main thread, the one that launches the model's kernels, pays for receiving it (2.4-2.8 ms a batch
of 16 on a 2-core CPU; README, Speed). The release is small next to a GPU's memory (detection 0.4 GB and
segmentation 3.9 GB decoded), so a split is uploaded once from the uint8 cache and each step costs one gather on
the device.

The order comes from the same EpochSampler as the DataLoader's, so both paths give the same batches, bit for bit
(tests/test_resident.py), and resume stays exact.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from spinebench.data.cache import DecodedCache
from spinebench.engine.config import ConfigError

log = logging.getLogger(__name__)

MAX_MEMORY_SHARE = 0.2  # `auto` holds a split on a GPU when it takes at most this share of the GPU's memory
UPLOAD_CHUNK = 256  # images per host-to-device copy while uploading (bounds the host memory used)


def wants_resident(setting: str, caches: Sequence[DecodedCache], device: torch.device) -> bool:
    """Whether to hold these caches on `device`: `true`, `false`, or `auto` (a CUDA device they fit on)."""
    uniform = all(cache.uniform_shape is not None for cache in caches)
    if setting == "true" and not uniform:
        raise ConfigError(
            "trainer.data_on_device=true needs every image of a split to have one size "
            "(set trainer.data_on_device=false)"
        )
    if setting != "auto":
        return setting == "true"
    if device.type != "cuda" or not uniform:
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return sum(cache.nbytes for cache in caches) <= MAX_MEMORY_SHARE * total


def upload(cache: DecodedCache, device: torch.device) -> torch.Tensor:
    """The whole cache as one N x H x W uint8 tensor on `device` (its arrays lie back to back in the file)."""
    shape = cache.uniform_shape
    if shape is None:
        raise ValueError(f"{cache.data_path}: arrays of several shapes cannot be stacked")
    size = int(np.prod(shape))
    stored = np.memmap(cache.data_path, dtype=np.uint8, mode="r")
    log.info(
        "holding %d arrays of %s (%.2f GB) in %s memory",
        len(cache),
        "x".join(map(str, shape)),
        cache.nbytes / 1e9,
        device,
    )
    out = torch.empty((len(cache), *shape), dtype=torch.uint8, device=device)
    for start in range(0, len(cache), UPLOAD_CHUNK):
        stop = min(start + UPLOAD_CHUNK, len(cache))
        if cache.offsets[start:stop] != list(range(start * size, stop * size, size)):
            raise ValueError(f"{cache.data_path}: arrays are not back to back")
        chunk = np.array(stored[start * size : stop * size]).reshape(stop - start, *shape)
        out[start:stop].copy_(torch.from_numpy(chunk))
    return out


class ResidentBatches:
    """A loader over tensors on the device: batch b = assemble([t[rows] for t in tensors], indices), where the
    rows are the sampler's order, `batch_size` at a time (DataLoader's drop_last semantics)."""

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        sampler,
        drop_last: bool,
        assemble: Callable[[list[torch.Tensor], list[int]], Any],
    ):
        self.tensors, self.batch_size, self.sampler = list(tensors), batch_size, sampler
        self.drop_last, self.assemble = drop_last, assemble

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        # The order crosses to the device here, at iter(), in the epoch's one synchronizing copy, so that getting
        # a batch never waits for the device.
        order = list(self.sampler)
        rows_on_device = torch.tensor(order, dtype=torch.long).to(self.tensors[0].device)
        return self._batches(order, rows_on_device)

    def _batches(self, order: list[int], rows_on_device: torch.Tensor):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = rows_on_device[start : start + self.batch_size]
            yield self.assemble([t.index_select(0, rows) for t in self.tensors], order[start : start + self.batch_size])
