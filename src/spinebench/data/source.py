"""Which data a run used: the real release or the phantom (with its stamp). Every result carries this label.

`prepare_dataset` is the `_target_` of the Hydra data configs: it generates a phantom into the cache on
first use, or checks that a real release folder is there, and returns a `DatasetSpec` the runners read from.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinebench.data.errors import DatasetError
from spinebench.data.layout import find_splits

log = logging.getLogger(__name__)

PHANTOM_STAMP = "PHANTOM.json"
MANIFEST = "spinebench-manifest.json"  # written by `spinebench data fetch`
PHANTOM_IMAGES_PER_WORKER = 100  # below this a process pool costs more to start than it saves (same bytes either way)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset folder of one task and where it came from."""

    name: str
    task: str
    root: Path
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def is_phantom(self) -> bool:
        return self.source.get("kind") == "phantom"

    @property
    def label(self) -> str:
        """Short human label used in logs, tables and plot titles."""
        if self.is_phantom:
            stamp = self.source.get("stamp", {})
            return f"PHANTOM ({stamp.get('domain', '?')}, seed {stamp.get('seed', '?')}) - synthetic, not the Kumar et al. release"
        return f"real release ({self.root})" if self.source.get("verified") else f"unverified folder ({self.root})"


def _read_json(path: Path) -> dict[str, Any]:
    """A provenance file decides every result's label: one cut short is refused, naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable ({error}); it labels every result, so write it again: `spinebench "
                           "data fetch` for the release, `spinebench data phantom` for a phantom") from error


def describe_source(root: Path) -> dict[str, Any]:
    """Provenance of a dataset folder: phantom stamp, fetch manifest (real, verified) or neither."""
    root = Path(root).resolve()
    for folder in (root, *root.parents[:2]):
        if (folder / PHANTOM_STAMP).is_file():
            return {"kind": "phantom", "root": str(root), "stamp": _read_json(folder / PHANTOM_STAMP)}
    for folder in (root, *root.parents[:2]):
        if (folder / MANIFEST).is_file():
            manifest = _read_json(folder / MANIFEST)
            return {"kind": "real", "root": str(root), "verified": True,
                    "archive_sha256": manifest.get("archive_sha256"), "files": manifest.get("n_files")}
    return {"kind": "real", "root": str(root), "verified": False,
            "note": "no PHANTOM.json and no spinebench manifest: assumed to be the real release, not verified"}


def prepare_dataset(name: str, task: str, root: str | Path, phantom: dict[str, Any] | None = None) -> DatasetSpec:
    """Return the dataset at `root`, generating a phantom there first when `phantom` parameters are given."""
    root = Path(root).expanduser()
    if phantom is not None:
        from spinebench.data.phantom.writer import is_complete_phantom, write_phantom  # real-data runs never need it

        if not is_complete_phantom(root):  # first use, or a generation that was killed half-way
            params = dict(phantom)
            n_images = sum(int(params.get(f"n_{split}", 0)) for split in ("train", "val", "test"))
            params.setdefault("workers", max(1, min(os.cpu_count() or 1, n_images // PHANTOM_IMAGES_PER_WORKER)))
            log.info("generating a %s phantom of %d images into %s (%d processes)", task, n_images, root, params["workers"])
            write_phantom(task=task, out=root, **params)
    find_splits(root, task)  # fails early with a clear message when the folder is not a release of this task
    spec = DatasetSpec(name=name, task=task, root=root.resolve(), source=describe_source(root))
    if phantom is None and spec.is_phantom:
        log.warning("%s is a phantom: results will be labelled as synthetic", root)
    return spec
