"""The host's share of scoring a detector's test split: from its outputs to the COCO entries, with Python's garbage
collector running and paused (what `predict` does).

On a GPU the device waits while the host turns a batch's outputs into COCO entries, so this work is paid in full
per batch. The entries `predict` keeps through a pass (up to 100 an image) trigger the collector's full passes, and
each one walks every object of the process. This times `outputs_to_coco` over a release-sized test split of
synthetic outputs (--images, --detections each, batches of --batch) in a process that has imported what
bench_detection_infer.py imports (torchvision's detectors, ultralytics, faster-coco-eval), and reports the time a
pass takes and the collector's share by generation. Untimed first pass in each mode.

    python benchmarks/bench_scoring_host.py --json scoring_host.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")


class CollectorClock:
    """Counts the collector's passes by generation and the time they take, while installed in gc.callbacks."""

    def __init__(self):
        self.count, self.seconds, self._start = [0, 0, 0], [0.0, 0.0, 0.0], 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._start


def synthetic_batches(images: int, detections: int, batch: int) -> list:
    """(outputs, indices) per batch, shaped like a torchvision detector's eval outputs (boxes inside 690 x 275)."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for start in range(0, images, batch):
        indices = list(range(start, min(start + batch, images)))
        outputs = []
        for _ in indices:
            xy = torch.rand(detections, 2, generator=generator) * torch.tensor([600.0, 200.0])
            wh = torch.rand(detections, 2, generator=generator) * 80 + 5
            outputs.append(
                {
                    "boxes": torch.cat([xy, xy + wh], 1),
                    "scores": torch.rand(detections, generator=generator),
                    "labels": torch.ones(detections, dtype=torch.long),
                }
            )
        batches.append((outputs, indices))
    return batches


def time_passes(batches: list, passes: int, paused: bool) -> dict:
    from spinebench.detection.torchvision_benchmark import collector_paused, outputs_to_coco

    def one_pass() -> int:
        kept = []  # as predict keeps them, to the end of the pass
        with collector_paused() if paused else contextlib.nullcontext():
            for outputs, indices in batches:
                kept += outputs_to_coco(outputs, indices)
        return len(kept)

    one_pass()
    clock = CollectorClock()
    gc.callbacks.append(clock)
    try:
        start = time.perf_counter()
        entries = [one_pass() for _ in range(passes)][-1]
        seconds = time.perf_counter() - start
    finally:
        gc.callbacks.remove(clock)
    return {
        "collector": "paused" if paused else "running",
        "ms_per_pass": 1000 * seconds / passes,
        "ms_per_batch": 1000 * seconds / passes / len(batches),
        "entries_per_pass": entries,
        "collections_per_pass": [c / passes for c in clock.count],
        "collector_ms_per_pass": [1000 * s / passes for s in clock.seconds],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=145, help="test images a pass (the release-sized phantom's)")
    parser.add_argument("--detections", type=int, default=100, help="detections an image (Faster R-CNN's cap)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--passes", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import faster_coco_eval  # noqa: F401  (the objects a scoring process holds: what a full collection walks)
    import torchvision.models.detection  # noqa: F401
    import ultralytics  # noqa: F401

    from spinebench.runinfo import device_name, git_commit, write_json

    batches = synthetic_batches(args.images, args.detections, args.batch)
    rows = [time_passes(batches, args.passes, paused) for paused in (False, True)]
    objects = len(gc.get_objects())
    for row in rows:
        print(
            f"collector {row['collector']:<8} {row['ms_per_pass']:7.1f} ms a pass ({row['ms_per_batch']:.2f} ms a "
            f"batch), of it the collector {sum(row['collector_ms_per_pass']):6.1f} ms; full collections a pass "
            f"{row['collections_per_pass'][2]:.2f}   ({objects} objects tracked)",
            flush=True,
        )
    if args.json:
        write_json(
            args.json,
            {
                "meta": {
                    "device": device_name("cpu"),
                    "git": git_commit(),
                    "python": sys.version.split()[0],
                    "objects_tracked": objects,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
