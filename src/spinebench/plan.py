"""`spinebench plan`: what a reproduction costs before it starts (rows, seeds, jobs, GPU-hours), from each paper
row's recipe (configs/experiment/paper/<row>.yaml: epochs) and its training rate on one H200
(benchmarks/h200_rates.yaml: measured, or an estimate that says how it was chosen). The epoch is the release's
training and validation images at that rate: validation is counted at the training rate, so the figures err long.
Every figure here is an estimate, and says so."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from spinebench.errors import ConfigError
from spinebench.hydra_run import CONFIG_DIR

RATES_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "h200_rates.yaml"
# The release's training and validation images per task. Segmentation: the release's folders (8,668 / 895).
# Detection: 2,245 images whose split counts the paper does not publish, shared as the segmentation release's
# (detection_phantom_paper makes the same 1,903 / 197).
EPOCH_IMAGES = {"detection": (1903, 197), "segmentation": (8668, 895)}
MARGIN = 1.5  # a SLURM time limit is at least this many times the estimate (resources.timeout_min)


@dataclass(frozen=True)
class RowPlan:
    row: str
    task: str
    epochs: int
    images_per_s: float
    measured: bool
    source: str  # the results file, or how the estimate was chosen
    timeout_min: int  # the experiment's SLURM request

    @property
    def epoch_minutes(self) -> float:
        return sum(EPOCH_IMAGES[self.task]) / self.images_per_s / 60

    @property
    def hours(self) -> float:
        return self.epoch_minutes * self.epochs / 60


def paper_rows() -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / "experiment" / "paper").glob("*.yaml"))


def row_plan(row: str, rates: dict) -> RowPlan:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment=paper/{row}"])
    rate = rates.get(row)
    if not isinstance(rate, dict) or not rate.get("img_s"):
        raise ConfigError(f"{RATES_FILE}: no training rate for row {row} (add `{row}: {{img_s: ..., estimate: ...}}`)")
    return RowPlan(
        row=row,
        task=cfg.data.task,
        epochs=int(cfg.trainer.epochs),
        images_per_s=float(rate["img_s"]),
        measured="measured" in rate,
        source=str(rate.get("measured") or rate.get("estimate")),
        timeout_min=int(cfg.resources.timeout_min),
    )


def plan(rows: list[str] | None = None) -> list[RowPlan]:
    known = paper_rows()
    unknown = [row for row in rows or [] if row not in known]
    if unknown:
        raise ConfigError(f"unknown row {unknown[0]} (rows: {', '.join(known)})")
    rates = yaml.safe_load(RATES_FILE.read_text())
    return [row_plan(row, rates) for row in rows or known]


def wall_hours(jobs: list[float], gpus: int) -> float:
    """The longest GPU's total when `jobs` (hours) go, longest first, to the GPU free earliest (what a launcher
    with `gpus` workers does with jobs queued longest first; an estimate either way)."""
    free = [0.0] * max(gpus, 1)
    for hours in sorted(jobs, reverse=True):
        heapq.heapreplace(free, free[0] + hours)
    return max(free)


def summary(plans: list[RowPlan], seeds: int, gpus: int) -> str:
    """The plan as text: one line per row, then the totals."""
    lines = [f"{'row':<12} {'epochs':>6} {'img/s (H200)':>13} {'min/epoch':>9} {'h/seed':>7}  rate"]
    for p in plans:
        kind = "measured" if p.measured else "ESTIMATE"
        lines.append(
            f"{p.row:<12} {p.epochs:>6} {p.images_per_s:>13.1f} {p.epoch_minutes:>9.1f} {p.hours:>7.2f}  {kind}"
        )
    jobs = [p.hours for p in plans for _ in range(seeds)]
    lines.append(
        f"{len(plans)} row(s) x {seeds} seed(s) = {len(jobs)} job(s), about {sum(jobs):.1f} GPU-hours on H200s "
        f"(estimate); on {gpus} GPU(s) at once about {wall_hours(jobs, gpus):.1f} h"
    )
    return "\n".join(lines)


def markdown(plans: list[RowPlan]) -> str:
    """The docs' table (docs/scale-out.md between its markers; a test keeps it equal to this)."""
    rows = [
        "| row | epochs | train img/s on one H200 | minutes per epoch | hours per seed | SLURM limit (min) | rate from |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        source = f"measured: `{p.source}`" if p.measured else f"**estimate**: {p.source}"
        rows.append(
            f"| {p.row} | {p.epochs} | {p.images_per_s:.1f} | {p.epoch_minutes:.1f} | {p.hours:.2f} | "
            f"{p.timeout_min} | {source} |"
        )
    total = sum(p.hours for p in plans)
    rows.append(f"| **all rows** | | | | **{total:.1f}** | | estimate |")
    return "\n".join(rows)


def minimum_timeout(p: RowPlan) -> int:
    """The least time limit (minutes) a row's SLURM job may ask for: MARGIN x the estimate, in whole half hours, and
    an hour at least (start-up, the test split, FPS timing)."""
    return max(60, int(math.ceil(p.hours * 60 * MARGIN / 30) * 30))
