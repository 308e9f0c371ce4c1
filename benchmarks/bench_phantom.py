"""Phantom generation speed (images/s) for both tasks and worker counts; `--json FILE` saves the table.

The phantom must stay cheap enough for CI: target >= 50 images/s with 2 workers on a 2-core machine.
Timings include PNG/XML writing and the worker pool start-up (what a caller of write_phantom pays).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spinebench.data.phantom import render_sample, write_phantom  # noqa: E402
from spinebench.runinfo import git_commit  # noqa: E402


def bench_write(task: str, n: int, workers: int, domain: str = "porcine") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        write_phantom(task, Path(tmp) / "ph", n_train=n, n_val=0, n_test=0, seed=0, domain=domain, workers=workers)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "what": f"write {task}",
        "domain": domain,
        "workers": workers,
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1),
        # CPU time of this process per image: meaningful for workers=1 only (pool workers are not counted).
        "cpu_ms_per_image": round(cpu / n * 1000, 1) if workers == 1 else None,
    }


def bench_render(n: int, domain: str = "porcine") -> dict:
    render_sample(0, domain)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for seed in range(n):
        render_sample(seed, domain, injured=seed % 2 == 0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "what": "render only (no I/O)",
        "domain": domain,
        "workers": 1,
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 1),
        "cpu_ms_per_image": round(cpu / n * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="images per measurement (default 200)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    rows = [bench_render(args.n // 2), bench_render(args.n // 4, "human")]
    for task in ("segmentation", "detection"):
        for workers in args.workers:
            rows.append(bench_write(task, args.n, workers))
    print(
        f"{'measurement':24s} {'domain':8s} {'workers':>7s} {'images':>6s} {'seconds':>8s} {'images/s':>9s} {'cpu ms/img':>10s}"
    )
    for row in rows:
        cpu = "" if row["cpu_ms_per_image"] is None else f"{row['cpu_ms_per_image']:.1f}"
        print(
            f"{row['what']:24s} {row['domain']:8s} {row['workers']:7d} {row['images']:6d} "
            f"{row['seconds']:8.2f} {row['images_per_s']:9.1f} {cpu:>10s}"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    # On a shared machine wall-clock rates fall with the load; cpu ms/img is the load-independent figure.
    print(f"cpus={os.cpu_count()} load1={load}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": rows,
                    "cpus": os.cpu_count(),
                    "load1": load,
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "git": git_commit(),
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
