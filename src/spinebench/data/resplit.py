"""`spinebench data resplit`: a train/val/test split that keeps each subject (or near-duplicate cluster) whole.

The file it writes is plain, editable JSON in the spirit of nnU-Net's `splits_final.json`: one list of image
paths (relative to the release root) per split, plus the groups each split received, so a reader can move a
pig from one split to another by hand. Split sizes follow the release's own shares as closely as whole groups
allow: groups go largest first (ties in a seeded random order) to the split furthest below its target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.data.audit import (
    MAX_HASH_DISTANCE,
    SIMILARITY,
    SUBJECT_PATTERN,
    _components,
    compile_subject_pattern,
    fingerprint_all,
    list_split_images,
    near_duplicate_pairs,
    subject_of,
)
from spinebench.data.layout import SPLITS
from spinebench.data.splits import FORMAT  # what `data.splits=FILE` reads back
from spinebench.errors import ConfigError, DataError

BY = ("subject", "cluster")


def _groups_by_subject(paths: list[Path], pattern_text: str) -> dict[str, list[int]]:
    pattern = compile_subject_pattern(pattern_text)
    groups: dict[str, list[int]] = {}
    unmatched = []
    for index, path in enumerate(paths):
        subject = subject_of(str(path), pattern)
        if subject is None:
            unmatched.append(path.name)
        else:
            groups.setdefault(subject, []).append(index)
    if unmatched:
        raise DataError(
            f"{len(unmatched)} file name(s) carry no subject id for pattern {pattern_text!r} (e.g. {unmatched[0]}): "
            "pass --subject-pattern with the id in a group, or use --by cluster"
        )
    return groups


def _groups_by_cluster(
    paths: list[Path], workers: int, threshold: float, max_hash_distance: int
) -> dict[str, list[int]]:
    images = fingerprint_all({"all": paths}, workers)
    search = near_duplicate_pairs(images, max_hash_distance, threshold)
    components = _components(len(paths), [(i, j) for i, j, *_ in search.confirmed])
    return {f"cluster{n:05d}": sorted(members) for n, members in enumerate(sorted(components, key=min))}


def assign(groups: dict[str, int], targets: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Group names per split: largest groups first (equal sizes in a seeded random order), each to the split
    whose size lies furthest below its target share."""
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    ranked = sorted(range(len(names)), key=lambda k: (-groups[names[k]], int(np.argwhere(order == k)[0, 0])))
    total = sum(groups.values())
    sizes = dict.fromkeys(targets, 0)
    chosen: dict[str, list[str]] = {split: [] for split in targets}
    for k in ranked:
        # empty splits first (every split holds something while groups remain), then the largest deficit
        split = max(targets, key=lambda s: (sizes[s] == 0 and targets[s] > 0, targets[s] * total - sizes[s]))
        chosen[split].append(names[k])
        sizes[split] += groups[names[k]]
    return chosen


def resplit(
    root: Path,
    task: str,
    by: str = "subject",
    seed: int = 0,
    subject_pattern: str = SUBJECT_PATTERN,
    workers: int = 1,
    threshold: float = SIMILARITY,
    max_hash_distance: int = MAX_HASH_DISTANCE,
) -> dict[str, Any]:
    """The split file's content for the release under `root` (every image of every split, regrouped)."""
    if by not in BY:
        raise ConfigError(f"--by {by!r}: expected one of {', '.join(BY)}")
    files = list_split_images(Path(root), task)
    if not files:
        raise DataError(f"{root}: no images found")
    paths = [path for split in files for path in files[split]]
    release = [split for split in files for _ in files[split]]
    if by == "subject":
        groups = _groups_by_subject(paths, subject_pattern)
    else:
        groups = _groups_by_cluster(paths, workers, threshold, max_hash_distance)
    targets = {split: len(files.get(split, [])) / len(paths) for split in SPLITS}
    chosen = assign({name: len(members) for name, members in groups.items()}, targets, seed)
    root = Path(root)
    content: dict[str, Any] = {
        "format": FORMAT,
        "task": task,
        "root": str(root.resolve()),
        "by": by,
        "seed": int(seed),
        "release_counts": {split: len(v) for split, v in files.items()},
    }
    if by == "subject":
        content["subject_pattern"] = subject_pattern
    else:
        content["thresholds"] = {"similarity": threshold, "max_hash_distance": max_hash_distance}
    for split in SPLITS:
        members = sorted(k for name in chosen[split] for k in groups[name])
        content[split] = [paths[k].relative_to(root).as_posix() for k in members]
    content["counts"] = {split: len(content[split]) for split in SPLITS}
    content["groups"] = {split: sorted(chosen[split]) for split in SPLITS}
    moved = sum(1 for split in SPLITS for k in _indices(content[split], paths, root) if release[k] != split)
    content["moved_from_release_split"] = moved
    return content


def _indices(relative: list[str], paths: list[Path], root: Path) -> list[int]:
    where = {p.relative_to(root).as_posix(): k for k, p in enumerate(paths)}
    return [where[r] for r in relative]


def write_splits(content: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return out
