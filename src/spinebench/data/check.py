"""`spinebench data check`: validate a release folder and report every problem, per kind, with example files.

The per-file checks call the same functions the readers use (`read_gray`, `parse_voc_xml`, `clip_box`,
`decode_mask`), so what `check` reports is exactly what would stop or alter a training run.
Exit codes: 0 clean, 1 problems found, 2 input unusable (missing folder, wrong task).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_SEGMENTATION_CLASSES, SEGMENTATION_CLASSES
from spinebench.data.detection import class_index, clip_box, parse_voc_xml, split_annotations
from spinebench.data.images import list_images, read_gray, read_rgb
from spinebench.data.layout import SPLITS, find_splits, mask_folder, split_folder, split_image_folder
from spinebench.data.segmentation import decode_mask
from spinebench.data.source import MANIFEST, DatasetSpec, changed_since_fetch, provenance_file
from spinebench.data.splits import mask_of, release_root, split_images, uses_split_file
from spinebench.errors import DataError

MAX_EXAMPLES = 5
PROBLEM_KINDS = {
    "missing_split": "a train/val/test split is absent",
    "empty_split": "a split folder holds no images",
    "unreadable_image": "image cannot be decoded (corrupt, truncated, or 16-bit)",
    "wrong_size": f"image is not {IMAGE_WIDTH}x{IMAGE_HEIGHT}",
    "malformed_xml": "annotation is not valid Pascal-VOC XML",
    "unknown_class": "annotation names a class other than hematoma",
    "box_outside_image": "box spills over the image (clipped when loading)",
    "degenerate_box": "box has no area inside the image (dropped when loading)",
    "annotation_without_image": "XML file with no image of the same name",
    "duplicate_annotation": "image with more than one XML file (the reader refuses it)",
    "annotation_size_mismatch": "XML <size> differs from its image's (boxes used as they are)",
    "image_without_mask": "image with no mask of the same name",
    "mask_without_image": "mask with no image of the same name",
    "mask_size_mismatch": "mask and image sizes differ",
    "unreadable_mask": "mask cannot be decoded",
    "unknown_mask_colour": "mask pixels outside the VOC palette (mapped to ignore index 255)",
    "duplicate_across_splits": "identical image content in two splits (leakage)",
    "changed_since_fetch": f"file differs from its SHA-256 in {MANIFEST} (edited since `spinebench data fetch`)",
    "missing_since_fetch": f"file listed in {MANIFEST} is gone",
    "added_since_fetch": f"image or XML file that {MANIFEST} does not list (added since the fetch)",
}

# the kinds that stop a run's readers (the others are clipped, dropped, mapped to ignore or only reported)
READERS_REFUSE = (
    "missing_split",
    "empty_split",
    "unreadable_image",
    "malformed_xml",
    "unknown_class",
    "duplicate_annotation",
    "image_without_mask",
    "mask_without_image",
    "unreadable_mask",
    "mask_size_mismatch",
)


@dataclass
class FileResult:
    """What one image (and its label file) contributed: problems, content hash, statistics."""

    split: str
    path: str
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, file, detail)
    digest: str | None = None
    n_boxes: int = 0
    class_pixels: np.ndarray | None = None


@dataclass
class CheckReport:
    task: str
    root: str
    split_counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, file: str, detail: str = "", count: int = 1) -> None:
        entry = self.problems.setdefault(kind, {"description": PROBLEM_KINDS[kind], "count": 0, "examples": []})
        entry["count"] += count
        if len(entry["examples"]) < MAX_EXAMPLES:
            entry["examples"].append(f"{file}: {detail}" if detail else file)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "root": self.root,
            "clean": self.clean,
            "split_counts": self.split_counts,
            "problems": self.problems,
            "stats": self.stats,
        }


def _check_image(split: str, path: Path) -> tuple[FileResult, np.ndarray | None]:
    result = FileResult(split=split, path=str(path))
    try:
        pixels = read_gray(path)
    except DataError as error:
        result.problems.append(("unreadable_image", str(path), str(error).split(": ", 1)[-1]))
        return result, None
    if pixels.shape != (IMAGE_HEIGHT, IMAGE_WIDTH):
        result.problems.append(("wrong_size", str(path), f"{pixels.shape[1]}x{pixels.shape[0]}"))
    result.digest = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
    return result, pixels


def check_detection_file(split: str, path: Path, xml: Path | None) -> FileResult:
    result, pixels = _check_image(split, path)
    if xml is None:
        return result  # a negative (pre-injury) image
    try:
        voc = parse_voc_xml(xml)
    except DataError as error:
        result.problems.append(("malformed_xml", str(xml), str(error).split(": ", 1)[-1]))
        return result
    height, width = pixels.shape if pixels is not None else (IMAGE_HEIGHT, IMAGE_WIDTH)
    if voc.size not in (None, (width, height)):
        result.problems.append(
            ("annotation_size_mismatch", str(xml), f"<size> {voc.size[0]}x{voc.size[1]}, image {width}x{height}")
        )
    for obj in voc.objects:
        try:
            class_index(obj.name, xml)
        except DataError:
            result.problems.append(("unknown_class", str(xml), repr(obj.name)))
        _, outside, degenerate = clip_box(obj.box, width, height)
        if degenerate:
            result.problems.append(("degenerate_box", str(xml), f"{obj.box} in {width}x{height}"))
        elif outside:
            result.problems.append(("box_outside_image", str(xml), f"{obj.box} in {width}x{height}"))
        result.n_boxes += not degenerate
    return result


def check_segmentation_file(split: str, path: Path, mask: Path) -> FileResult:
    result, pixels = _check_image(split, path)
    try:
        labels, unknown = decode_mask(read_rgb(mask))
    except DataError as error:
        result.problems.append(("unreadable_mask", str(mask), str(error).split(": ", 1)[-1]))
        return result
    if pixels is not None and labels.shape != pixels.shape:
        result.problems.append(
            ("mask_size_mismatch", str(mask), f"mask {labels.shape[::-1]} vs image {pixels.shape[::-1]}")
        )
    if unknown:
        result.problems.append(("unknown_mask_colour", str(mask), f"{unknown} pixels"))
    result.class_pixels = np.bincount(
        labels[labels < NUM_SEGMENTATION_CLASSES].ravel(), minlength=NUM_SEGMENTATION_CLASSES
    )
    return result


def _detection_jobs(report: CheckReport, split: str, images: list[Path]) -> list[tuple]:
    """One job per image, its XML looked for where the reader looks (per image folder: a split file may draw on
    several); an image with two XML files is reported."""
    annotations: dict[Path, dict[str, list[Path]]] = {}
    jobs = []
    for path in images:
        if path.parent not in annotations:
            annotations[path.parent] = split_annotations(path.parent)
        xmls = annotations[path.parent].get(path.stem, [])
        if len(xmls) > 1:
            report.add("duplicate_annotation", str(path), ", ".join(map(str, xmls)))
        jobs.append((check_detection_file, split, path, xmls[0] if xmls else None))
    return jobs


def _segmentation_jobs(report: CheckReport, split: str, images: list[Path]) -> list[tuple]:
    jobs = []
    for path in images:
        if mask_of(path).is_file():
            jobs.append((check_segmentation_file, split, path, mask_of(path)))
        else:
            report.add("image_without_mask", str(path), f"no {mask_of(path)}")
    return jobs


def _orphans(report: CheckReport, task: str, folder: Path, images: list[Path]) -> None:
    """Label files of a release image folder that no image claims (a split file may leave some unused: those
    are not looked for)."""
    stems, names = {p.stem for p in images}, {p.name for p in images}
    if task == "detection":
        annotations = split_annotations(folder)  # where the reader looks, so a file it would miss is reported
        for stem in sorted(annotations.keys() - stems):
            for xml in annotations[stem]:
                report.add("annotation_without_image", str(xml))
    elif (masks_dir := mask_folder(folder)).is_dir():
        for name in sorted({p.name for p in list_images(masks_dir)} - names):
            report.add("mask_without_image", str(masks_dir / name))


def _run(job: tuple) -> FileResult:
    function, *args = job
    return function(*args)


def check_dataset(
    root: Path, task: str, workers: int = 1, splits: Sequence[str] = SPLITS, provenance: bool = True
) -> CheckReport:
    """Validate every file of a release (of the `splits` it should hold: a zero-shot set has only a test split);
    raises DataError only when the input is unusable as a whole. `provenance`: also compare a fetched release
    with its manifest (hashes every file of the release)."""
    found = find_splits(Path(root), task)
    report = CheckReport(task=task, root=str(root))
    jobs = []
    for split in splits:
        if split not in found:
            report.add("missing_split", str(root), split)
            continue
        images = split_images(root, task, split)
        _orphans(report, task, split_image_folder(root, task, split), images)
        split_jobs = (_detection_jobs if task == "detection" else _segmentation_jobs)(report, split, images)
        report.split_counts[split] = len(split_jobs)
        if not split_jobs:
            report.add("empty_split", str(found[split]))
        jobs += split_jobs
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run, jobs, chunksize=16))
    else:
        results = [_run(job) for job in jobs]
    _summarise(report, results)
    manifest = provenance_file(Path(root), MANIFEST) if provenance else None
    if manifest:  # a fetched release: are its files still the ones fetched? (what runs label `verified`)
        for kind, names in changed_since_fetch(manifest).items():
            for name in names:
                report.add(f"{kind}_since_fetch", str(manifest.parent / name))
    return report


def refuse_unreadable(data: Path | DatasetSpec, task: str, splits: Sequence[str]) -> None:
    """Raise DataError naming the first file of `splits` that a run could not read (what the readers refuse).
    Called before training, so a broken test split is found before the training, not after it. `data`: a
    release root (its folders), or a DatasetSpec (the images its split file lists, when it has one)."""
    root = release_root(data)
    if uses_split_file(data):
        report = CheckReport(task=task, root=str(root))
        jobs = [
            job
            for split in splits
            for job in (_detection_jobs if task == "detection" else _segmentation_jobs)(
                report, split, split_images(data, task, split)
            )
        ]
        _summarise(report, [_run(job) for job in jobs])
    else:
        for split in splits:  # the layout's own message for a missing split: what it found instead
            split_folder(root, task, split)
        report = check_dataset(root, task, splits=splits, provenance=False)
    refused = {kind: entry for kind, entry in report.problems.items() if kind in READERS_REFUSE}
    if refused:
        kind, entry = next(iter(refused.items()))
        more = sum(e["count"] for e in refused.values()) - 1
        listing = f"; {more} more such problem(s): `spinebench data check {root} --task {task}` lists them"
        raise DataError(f"{entry['examples'][0]} ({entry['description']})" + (listing if more else ""))


def _summarise(report: CheckReport, results: list[FileResult]) -> None:
    seen: dict[str, list[FileResult]] = defaultdict(list)
    for result in results:
        for kind, file, detail in result.problems:
            report.add(kind, file, detail)
        if result.digest:
            seen[result.digest].append(result)
    for copies in seen.values():
        if len({r.split for r in copies}) > 1:
            report.add("duplicate_across_splits", " = ".join(f"{r.split}:{Path(r.path).name}" for r in copies))
    per_split: dict[str, list[FileResult]] = defaultdict(list)
    for result in results:
        per_split[result.split].append(result)
    if report.task == "detection":
        report.stats["boxes"] = {s: sum(r.n_boxes for r in rs) for s, rs in per_split.items()}
        report.stats["negative_images"] = {s: sum(r.n_boxes == 0 for r in rs) for s, rs in per_split.items()}
    else:
        shares = {}
        for split, rs in per_split.items():
            totals = sum((r.class_pixels for r in rs if r.class_pixels is not None), np.zeros(NUM_SEGMENTATION_CLASSES))
            shares[split] = {
                name: round(float(v / max(totals.sum(), 1)), 4) for name, v in zip(SEGMENTATION_CLASSES, totals)
            }
        report.stats["class_pixel_shares"] = shares
