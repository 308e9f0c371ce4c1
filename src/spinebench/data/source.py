"""Which data a run used: the real release or the phantom (with its stamp). Every result carries this label.

`prepare_dataset` is the `_target_` of the Hydra data configs: it generates a phantom into the cache on
first use, or checks that a real release folder is there, and returns a `DatasetSpec` the runners read from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinebench.data.images import IMAGE_SUFFIXES, pil_open
from spinebench.data.layout import find_splits
from spinebench.data.splits import SplitFile, load_splits, split_images
from spinebench.errors import DataError

log = logging.getLogger(__name__)

PHANTOM_STAMP = "PHANTOM.json"
MANIFEST = "spinebench-manifest.json"  # written by `spinebench data fetch`
DATA_SUFFIXES = (*IMAGE_SUFFIXES, ".xml")  # what the readers take in: one added after a fetch changes the data
PHANTOM_IMAGES_PER_WORKER = 100  # below this a process pool costs more to start than it saves (same bytes either way)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset folder of one task and where it came from; `splits`: the split file (data.splits) whose lists
    replace the release's split folders, None for the release's own split."""

    name: str
    task: str
    root: Path
    source: dict[str, Any] = field(default_factory=dict)
    splits: SplitFile | None = None

    @property
    def is_phantom(self) -> bool:
        return self.source.get("kind") == "phantom"

    @property
    def label(self) -> str:
        """Short human label used in logs, tables and plot titles."""
        if self.is_phantom:
            stamp = self.source.get("stamp") or {}
            what = f"{stamp.get('domain', '?')}, seed {stamp.get('seed', '?')}" if stamp else f"no {PHANTOM_STAMP}"
            return f"PHANTOM ({what}) - synthetic, not the Kumar et al. release"
        return f"real release ({self.root})" if self.source.get("verified") else f"unverified folder ({self.root})"

    def describe(self) -> dict[str, Any]:
        """The data block every record carries: name, task, label and the provenance (kind, domain, stamp, ...);
        `splits` (file, sha256, sizes) only for a run on a split file."""
        about = {"name": self.name, "task": self.task, "label": self.label, **self.source}
        if self.splits is not None:
            about["splits"] = self.splits.describe()
        return about

    def images(self, split: str) -> list[Path]:
        """The image files of one split: the split file's list, or the release folder's."""
        return split_images(self, self.task, split)

    def split_size(self, split: str) -> int:
        """Images in one split (the record's test_split_images: a score of fewer is partial)."""
        return len(self.images(split))

    @staticmethod
    def resume_rule(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
        """Data keys a resume may change: the domain label, a phantom's folder (a phantom is named by
        data.phantom.*; its folder follows the cache's), and the split file's path while its content
        (data.splits_sha256, which is compared) is the same."""
        phantom = all(any(key.startswith("data.phantom.") for key in flat) for flat in (saved, current))
        same_split = saved.get("data.splits_sha256") is not None and all(
            flat.get("data.splits_sha256") == saved.get("data.splits_sha256") for flat in (saved, current)
        )
        return ["data.domain", *(["data.root"] if phantom else []), *(["data.splits"] if same_split else [])]


def _read_json(path: Path) -> dict[str, Any]:
    """A provenance file decides every result's label: one cut short is refused, naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(
            f"{path}: unreadable ({error}); it labels every result, so write it again: `spinebench "
            "data fetch` for the release, `spinebench data phantom` for a phantom"
        ) from error


def provenance_file(root: Path, name: str) -> Path | None:
    """`name` (PHANTOM_STAMP or MANIFEST) in `root` or up to two folders above it (an archive's wrapper folder)."""
    root = Path(root).resolve()
    return next((folder / name for folder in (root, *root.parents[:2]) if (folder / name).is_file()), None)


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def changed_since_fetch(manifest_path: Path, manifest: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """The files a fetch manifest lists whose bytes differ now ("changed") or that are gone ("missing"), and the
    images and XML files the readers would take in that it does not list ("added"), as paths relative to the
    manifest's folder (`manifest`: its contents when the caller has read them already). Hashed in threads
    (hashlib releases the GIL on large blocks)."""
    listed = (manifest if manifest is not None else _read_json(manifest_path)).get("files")
    if not isinstance(listed, dict) or not listed:
        raise DataError(f"{manifest_path}: lists no files to verify; write it again with `spinebench data fetch`")

    def state(name: str) -> str | None:
        path = manifest_path.parent / name
        if not path.is_file():
            return "missing"
        return None if sha256(path) == listed[name] else "changed"

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        states = list(pool.map(state, listed))
    found: dict[str, list[str]] = {"changed": [], "missing": [], "added": []}
    for name, what in zip(listed, states):
        if what:
            found[what].append(name)
    found["added"] = sorted(
        name
        for path in manifest_path.parent.rglob("*")
        if path.suffix.lower() in DATA_SUFFIXES
        and path.is_file()
        and (name := path.relative_to(manifest_path.parent).as_posix()) not in listed
    )
    return found


def _phantom_pngs(root: Path, n: int = 5) -> bool:
    """Whether the first PNGs of a folder carry the phantom writer's Software chunk: a phantom copied without its
    PHANTOM.json must not be labelled real. Reads the chunks before the pixels only."""
    from spinebench.data.phantom.writer import GENERATOR  # real-data runs otherwise never import the writer

    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() == ".png")[:n]:
        try:
            with pil_open(path) as image:
                if image.info.get("Software") == GENERATOR:
                    return True
        except (OSError, SyntaxError, ValueError):  # unreadable: the readers name it later
            continue
    return False


def describe_source(root: Path) -> dict[str, Any]:
    """Provenance of a dataset folder: phantom stamp, fetch manifest (real; verified while every file it lists is
    unchanged, which each run checks) or neither."""
    root = Path(root).resolve()
    stamp = provenance_file(root, PHANTOM_STAMP)
    if stamp:
        return {"kind": "phantom", "root": str(root), "stamp": _read_json(stamp)}
    if _phantom_pngs(root):  # whatever manifest sits beside them: a phantom zipped and fetched is still one
        note = f"no {PHANTOM_STAMP}, but its PNGs are the phantom generator's (their text chunk says so)"
        log.warning("%s: %s: results are labelled PHANTOM", root, note)
        return {"kind": "phantom", "root": str(root), "stamp": {}, "note": note}
    manifest = provenance_file(root, MANIFEST)
    if manifest is None:
        return {
            "kind": "real",
            "root": str(root),
            "verified": False,
            "note": "no PHANTOM.json and no spinebench manifest: assumed to be the real release, not verified",
        }
    facts = _read_json(manifest)
    started = time.perf_counter()
    found = changed_since_fetch(manifest, facts)
    log.info(
        "%s: %s files checked against %s in %.1f s", root, facts.get("n_files"), manifest, time.perf_counter() - started
    )
    differences = found["changed"] + found["missing"] + found["added"]
    release = facts.get("release") if isinstance(facts.get("release"), dict) else {}
    source = {
        "kind": "real",
        "root": str(root),
        "verified": not differences and release.get("matches") is True,
        "archive_sha256": facts.get("archive_sha256"),
        "files": facts.get("n_files"),
    }
    if not differences and not source["verified"]:  # whole since the fetch, but not what the manuscript describes
        said = release.get("differences") or ["the manifest predates the comparison with the release: fetch again"]
        source["note"] = f"not the release the manuscript describes: {'; '.join(map(str, said[:3]))}"
        log.warning("%s: %s: results are labelled unverified", root, source["note"])
    elif not source["verified"]:
        source.update(
            changed_since_fetch=len(found["changed"]),
            missing_since_fetch=len(found["missing"]),
            added_since_fetch=len(found["added"]),
            note=f"{len(found['changed'])} files changed, {len(found['missing'])} gone and "
            f"{len(found['added'])} added since {manifest} was written, e.g. {differences[0]}",
        )
        log.warning("%s: %s: results are labelled unverified", root, source["note"])
    return source


# the report would show such a run in no table
HUMAN_DETECTION = (
    "a human detection set has no place in the paper's tables (its zero-shot evaluation is segmentation only)"
)


def prepare_dataset(
    name: str,
    task: str,
    root: str | Path,
    phantom: dict[str, Any] | None = None,
    domain: str = "porcine",
    splits: str | Path | None = None,
    splits_sha256: str | None = None,
) -> DatasetSpec:
    """Return the dataset at `root`, generating a phantom there first when `phantom` parameters are given.

    `domain` ("porcine" or "human") decides which side of the segmentation table its scores go to (human: the
    zero-shot columns); a phantom's own stamp says it instead. `splits`: a split file (`spinebench data resplit`)
    whose train/val/test lists replace the release's folders, checked here, before any training (its test images
    are decoded too, as the release's test split is); `splits_sha256`: the content the resolved config recorded."""
    if domain not in ("porcine", "human"):
        raise DataError(f"data.domain must be porcine or human, got {domain!r}")
    if phantom is not None and phantom.get("domain", "porcine") != domain:  # the stamp would win, unsaid
        raise DataError(
            f"data.domain={domain} but the phantom asked for is {phantom.get('domain', 'porcine')}: "
            "set data.phantom.domain (the phantom's own), which data.domain follows"
        )
    if task == "detection" and domain == "human":
        raise DataError(
            f"{HUMAN_DETECTION}: use data.domain=porcine"
            + (" and data.phantom.domain=porcine" if phantom is not None else "")
        )
    root = Path(root).expanduser()
    if phantom is not None:
        from spinebench.data.phantom.writer import phantom_differences, write_phantom  # real-data runs never need it

        differences = phantom_differences(root, task, **phantom)  # one read of PHANTOM.json; [] when it is usable
        if differences and (root / PHANTOM_STAMP).is_file():  # a data.root= of another phantom, one from an older
            # generator, or a generation killed half-way: never used as the one asked for
            log.warning(
                "%s holds another phantom (%s): writing the one asked for over it", root, "; ".join(differences)
            )
        if differences:
            params = dict(phantom)
            n_images = sum(int(params.get(f"n_{split}", 0)) for split in ("train", "val", "test"))
            params.setdefault("workers", max(1, min(os.cpu_count() or 1, n_images // PHANTOM_IMAGES_PER_WORKER)))
            log.info(
                "generating a %s phantom of %d images into %s (%d processes)", task, n_images, root, params["workers"]
            )
            write_phantom(task=task, out=root, **params)
    find_splits(root, task)  # fails early with a clear message when the folder is not a release of this task
    source = describe_source(root)
    source["domain"] = (source.get("stamp") or {}).get("domain") or domain
    if task == "detection" and source["domain"] == "human":  # a folder whose phantom stamp says so
        raise DataError(f"{root}: its PHANTOM.json says human, and {HUMAN_DETECTION}")
    chosen = load_splits(splits, root, task, splits_sha256) if splits is not None else None
    spec = DatasetSpec(name=name, task=task, root=root.resolve(), source=source, splits=chosen)
    if phantom is None and spec.is_phantom:
        log.warning("%s is a phantom: results will be labelled as synthetic", root)
    if chosen is not None:
        sizes = ", ".join(f"{split} {n}" for split, n in chosen.describe()["sizes"].items())
        log.info("splits from %s (%s; sha256 %s...)", chosen.path, sizes, chosen.sha256[:12])
    return spec
