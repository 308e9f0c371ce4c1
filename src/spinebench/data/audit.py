"""`spinebench data audit`: near-duplicate frames and shared subjects across a release's splits.

Ultrasound frames come from sweeps: two frames a fraction of a second apart differ by a little probe motion,
gain and fresh speckle, so `data check`'s exact content hash misses them. Here every image gets a perceptual
hash (imagehash's pHash, 64 bits of the low DCT frequencies: blind to gain, speckle and re-encoding), pairs
within `max_hash_distance` bits become candidates, and a candidate counts only when the normalised
cross-correlation of the two downscaled images (best over a few pixels of shift, OpenCV's matchTemplate)
reaches `similarity`. The hash finds the pairs fast; the correlation keeps two different anatomies that
happen to share a coarse layout from being called one.

Exit codes (like `data check`): 0 nothing found across splits, 1 near-duplicates or subjects shared across
splits, 2 input unusable (missing folder, wrong task, an unreadable image).
"""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.data.images import pil_open, read_gray
from spinebench.data.layout import SPLITS, find_splits
from spinebench.data.splits import split_images
from spinebench.errors import ConfigError, DataError

# The first run of letters+digits before "_" or "-": the phantom's `pig07_post_0012.png` gives `pig07`.
SUBJECT_PATTERN = r"^([A-Za-z]+\d+)[_-]"
# Measured on the phantom (docs/audit.md): copies altered by gain, a 1-3 px shift, new speckle, JPEG
# re-encoding or a sweep step differ by at most 14 bits; 18 leaves margin, and the correlation below decides.
MAX_HASH_DISTANCE = 18
# Altered copies correlate at >= 0.966 after downscaling; different frames of the clean 10,223-image phantom
# (same animal included) at <= 0.913. 0.94 sits between the two.
SIMILARITY = 0.94
THUMB_SIZE = (230, 92)  # width, height: 690x275 shrunk 3x (fine enough to align a 1 px probe motion)
THUMB_BLUR = 0.7  # Gaussian sigma in thumbnail pixels: takes the speckle grain off, keeps the layer edges
MAX_SHIFT = 4  # thumbnail pixels searched each way (12 px at full size)
# A cheap screen before the shift search: the plain correlation of 57x23 reductions. Altered copies score
# >= 0.89 there, and only about 1 in 5 hash candidates of a clean phantom reaches 0.5.
SCREEN_SIZE = (57, 23)
SCREEN = 0.5
TOP_PAIRS = 10


@dataclass
class Image:
    split: str
    path: str
    hash: int
    thumb: np.ndarray  # THUMB_SIZE[::-1] uint8, blurred


@dataclass
class AuditReport:
    task: str
    root: str
    thresholds: dict[str, Any]
    split_counts: dict[str, int] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # every confirmed cross-split pair
    split_pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    clusters: dict[str, dict[str, int]] = field(default_factory=dict)  # within each split
    within_pairs: list[dict[str, Any]] = field(default_factory=list)
    subjects: dict[str, Any] = field(default_factory=dict)
    candidates: int = 0
    closest_rejected: float | None = None  # the highest similarity that stayed below the threshold: the margin

    @property
    def found(self) -> bool:
        return bool(self.pairs) or bool(self.subjects.get("shared"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "root": self.root,
            "found": self.found,
            "thresholds": self.thresholds,
            "split_counts": self.split_counts,
            "hash_candidates": self.candidates,
            "closest_rejected_similarity": self.closest_rejected,
            "split_pairs": self.split_pairs,
            "within_split_clusters": self.clusters,
            "subjects": self.subjects,
            "pairs": self.pairs,
            "within_split_pairs": self.within_pairs,
        }


def fingerprint(path: Path) -> tuple[int, np.ndarray]:
    """pHash (as an int) and the blurred, downscaled image of one file; DataError when it cannot be read.
    (No OpenCV here: it runs in forked workers, where OpenCV's thread pool can hang.)"""
    import imagehash
    from PIL import Image as PILImage
    from scipy.ndimage import gaussian_filter

    gray = PILImage.fromarray(read_gray(path))
    reduced = gray.resize(THUMB_SIZE, PILImage.Resampling.BOX)
    bits = imagehash.phash(reduced).hash.ravel()  # the same hash as from full size (a 32x32 reduction), 5x faster
    value = int(np.packbits(bits).view(">u8")[0])
    small = np.asarray(reduced, dtype=np.float32)
    thumb = np.clip(gaussian_filter(small, THUMB_BLUR, mode="nearest").round(), 0, 255).astype(np.uint8)
    return value, thumb


def _fingerprint_job(job: tuple[str, str]) -> tuple[str, str, int | None, np.ndarray | None, str]:
    split, path = job
    try:
        value, thumb = fingerprint(Path(path))
    except DataError as error:
        return split, path, None, None, str(error)
    return split, path, value, thumb, ""


def list_split_images(root: Path, task: str, splits: tuple[str, ...] = SPLITS) -> dict[str, list[Path]]:
    """The image files of each split present (DataError: no release of `task` under `root`)."""
    found = find_splits(Path(root), task)
    return {split: split_images(root, task, split) for split in splits if split in found}


def fingerprint_all(images: dict[str, list[Path]], workers: int = 1) -> list[Image]:
    """Fingerprints of every image; an unreadable one stops the audit naming the file (a partial audit could
    call a leaking release clean)."""
    jobs = [(split, str(path)) for split, paths in images.items() for path in paths]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_fingerprint_job, jobs, chunksize=64))
    else:
        results = [_fingerprint_job(job) for job in jobs]
    errors = [error for *_, error in results if error]
    if errors:
        more = f"; {len(errors) - 1} more unreadable image(s)" if len(errors) > 1 else ""
        raise DataError(f"{errors[0].split('; ')[0]}{more}: `spinebench data check` lists them; fix or remove them")
    return [Image(split, path, value, thumb) for split, path, value, thumb, _ in results]


def hash_candidates(hashes: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """(i, j) index pairs, i < j, whose 64-bit hashes differ in at most `max_distance` bits (all pairs, in
    chunks: 10,000 images are 50 million comparisons, a second of numpy)."""
    hashes = hashes.astype(np.uint64)
    found = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = cols > rows
        found.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def similarity(a: np.ndarray, b: np.ndarray, max_shift: int = MAX_SHIFT) -> float:
    """Normalised cross-correlation of two thumbnails, best over shifts of up to `max_shift` pixels each way:
    gain and brightness cancel out, a small probe motion is searched for."""
    import cv2

    template = b[max_shift : b.shape[0] - max_shift, max_shift : b.shape[1] - max_shift]
    scores = cv2.matchTemplate(a, template, cv2.TM_CCOEFF_NORMED)
    return float(np.nan_to_num(scores, nan=0.0).max())


def _components(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not edges:
        return [[i] for i in range(n)]
    rows, cols = np.array(edges).T
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[int(label)].append(index)
    return list(groups.values())


@dataclass
class PairSearch:
    confirmed: list[tuple[int, int, int, float]]  # (i, j, hash distance, similarity), i < j
    candidates: int
    closest_rejected: float | None


def near_duplicate_pairs(
    images: list[Image], max_hash_distance: int = MAX_HASH_DISTANCE, threshold: float = SIMILARITY
) -> PairSearch:
    """Every pair of `images` within the hash distance whose similarity reaches the threshold."""
    import cv2

    hashes = np.array([image.hash for image in images], dtype=np.uint64)
    candidates = hash_candidates(hashes, max_hash_distance) if images else np.zeros((0, 2), dtype=np.int64)
    screen = (
        np.stack([cv2.resize(im.thumb, SCREEN_SIZE, interpolation=cv2.INTER_AREA) for im in images]) if images else None
    )
    screened = []
    if len(candidates):
        vectors = screen.reshape(len(images), -1).astype(np.float32)
        vectors -= vectors.mean(axis=1, keepdims=True)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        for start in range(0, len(candidates), 65536):
            block = candidates[start : start + 65536]
            scores = np.einsum("ij,ij->i", vectors[block[:, 0]], vectors[block[:, 1]])
            screened.append(block[scores >= SCREEN])
    confirmed, rejected = [], None
    for i, j in (np.concatenate(screened) if screened else candidates).tolist():
        score = similarity(images[i].thumb, images[j].thumb)
        if score >= threshold:
            confirmed.append((i, j, int(np.bitwise_count(hashes[i] ^ hashes[j])), score))
        else:
            rejected = score if rejected is None else max(rejected, score)
    return PairSearch(confirmed, len(candidates), None if rejected is None else round(rejected, 4))


def subject_of(path: str, pattern: re.Pattern) -> str | None:
    match = pattern.search(Path(path).name)
    return (match.group("subject") if "subject" in pattern.groupindex else match.group(1)) if match else None


def compile_subject_pattern(text: str) -> re.Pattern:
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise ConfigError(f"subject pattern {text!r} is not a regular expression: {error}") from error
    if pattern.groups < 1:
        raise ConfigError(f"subject pattern {text!r} has no group: put the subject id in (...) or (?P<subject>...)")
    return pattern


def _subjects(images: list[Image], pattern: re.Pattern) -> dict[str, Any]:
    splits_of: dict[str, set[str]] = defaultdict(set)
    unmatched = []
    for image in images:
        subject = subject_of(image.path, pattern)
        if subject is None:
            unmatched.append(image.path)
        else:
            splits_of[subject].add(image.split)
    shared = {s: sorted(sp, key=SPLITS.index) for s, sp in sorted(splits_of.items()) if len(sp) > 1}
    per_split = {
        split: sorted(s for s, sp in splits_of.items() if split in sp)
        for split in SPLITS
        if split in {i.split for i in images}
    }
    return {
        "pattern": pattern.pattern,
        "available": bool(splits_of),
        "per_split": per_split,
        "shared": shared,
        "unmatched": len(unmatched),
        "unmatched_examples": unmatched[:5],
    }


def audit_dataset(
    root: Path,
    task: str,
    workers: int = 1,
    threshold: float = SIMILARITY,
    max_hash_distance: int = MAX_HASH_DISTANCE,
    subject_pattern: str = SUBJECT_PATTERN,
) -> AuditReport:
    """Audit a release for leakage between its splits; raises DataError when the input is unusable."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"similarity threshold must be in (0, 1], got {threshold}")
    if not 0 <= max_hash_distance <= 64:
        raise ConfigError(f"hash distance must be in 0..64 bits, got {max_hash_distance}")
    pattern = compile_subject_pattern(subject_pattern)
    files = list_split_images(root, task)
    images = fingerprint_all(files, workers)
    report = AuditReport(
        task=task,
        root=str(root),
        thresholds={"similarity": threshold, "max_hash_distance": max_hash_distance, "thumb_size": THUMB_SIZE},
        split_counts={split: len(paths) for split, paths in files.items()},
    )
    search = near_duplicate_pairs(images, max_hash_distance, threshold)
    report.candidates, report.closest_rejected = search.candidates, search.closest_rejected
    cross, within = [], defaultdict(list)
    for i, j, distance, score in search.confirmed:
        a, b = sorted((images[i], images[j]), key=lambda im: SPLITS.index(im.split))
        pair = {
            "split_a": a.split,
            "a": a.path,
            "split_b": b.split,
            "b": b.path,
            "hash_distance": distance,
            "similarity": round(score, 4),
        }
        if a.split != b.split:
            cross.append(pair)
        else:
            within[a.split].append((i, j))
            report.within_pairs.append(pair)
    report.pairs = sorted(cross, key=lambda p: (-p["similarity"], p["hash_distance"], p["a"], p["b"]))
    for first, second in combinations([s for s in SPLITS if s in files], 2):
        pairs = [p for p in report.pairs if (p["split_a"], p["split_b"]) == (first, second)]
        involved = {p["b"] for p in pairs}
        report.split_pairs[f"{first}-{second}"] = {
            "pairs": len(pairs),
            "images": len({p["a"] for p in pairs} | involved),
            f"{second}_images_affected": len(involved),
            f"share_of_{second}": round(len(involved) / max(report.split_counts[second], 1), 4),
        }
    for split in files:
        members = [k for k, image in enumerate(images) if image.split == split]
        index = {k: n for n, k in enumerate(members)}
        groups = _components(len(members), [(index[i], index[j]) for i, j in within[split]])
        multi = [g for g in groups if len(g) > 1]
        report.clusters[split] = {
            "clusters": len(multi),
            "images_in_clusters": sum(len(g) for g in multi),
            "largest": max((len(g) for g in multi), default=0),
            "images": len(members),
        }
    report.subjects = _subjects(images, pattern)
    return report


def write_pairs_png(pairs: list[dict[str, Any]], out: Path, top: int = 8) -> Path:
    """The `top` closest cross-split pairs side by side, one row each, captioned with split, name and scores."""
    import cv2

    rows = []
    for pair in pairs[:top]:
        tiles = []
        for key in ("a", "b"):
            with pil_open(pair[key]) as image:
                tile = np.asarray(image.convert("L"))
            tile = cv2.resize(
                tile, (460, int(round(460 * tile.shape[0] / tile.shape[1]))), interpolation=cv2.INTER_AREA
            )
            caption = np.full((22, tile.shape[1]), 255, np.uint8)
            cv2.putText(caption, f"{pair['split_' + key]}: {Path(pair[key]).name}", (4, 16), 0, 0.45, 0, 1)
            tiles.append(np.vstack([caption, tile]))
        footer = np.full((20, tiles[0].shape[1] * 2 + 8), 255, np.uint8)
        text = f"hash distance {pair['hash_distance']} bits, similarity {pair['similarity']:.3f}"
        cv2.putText(footer, text, (4, 14), 0, 0.45, 0, 1)
        gap = np.full((tiles[0].shape[0], 8), 255, np.uint8)
        rows.append(np.vstack([np.hstack([tiles[0], gap, tiles[1]]), footer]))
    if not rows:
        rows = [np.full((40, 600), 255, np.uint8)]
        cv2.putText(rows[0], "no near-duplicate pairs across splits", (8, 26), 0, 0.6, 0, 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows))
    return out
