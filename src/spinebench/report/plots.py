"""The report's pictures (matplotlib, PNG): what a person would rather look at than read.

* `<task>_bars.png`: per reported metric, grouped bars of the paper vs ours per manuscript row on the release's
  split (95% CI as error bars, ± sd for a row over seeds; phantom groups hatched and labelled PHANTOM), from the
  comparison table.
* `<task>_accuracy_vs_fps.png`: accuracy (mAP50 / mean Dice) against batch-1 FPS, the implantability view,
  the paper's CPU and GPU points beside ours, from the comparison table.
* `detection_pr_<source>.png`: precision-recall curves at IoU 0.5 of every detection run of one data source,
  from the run's `pr_curve.json` when it saved one, else from its `ground_truth.json` + `predictions.json`.
* `segmentation_grid_<source>.png`: a few test images with the reference and each model's prediction overlaid,
  from the runs' `predictions/*.png` (class-index PNGs) and the dataset folder their record names.

Legends and titles say what the data is through the group's `DataSource`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from spinebench.data.segmentation import overlay
from spinebench.report.collect import Collection, Run, pick
from spinebench.report.implantability import ACCURACY_METRIC
from spinebench.report.manuscript import Manuscript
from spinebench.report.tables import AGGREGATE, FINISHED, HUMAN, column, number

matplotlib.use("Agg")  # files only: a report needs no display, and a machine without one must draw them too
log = logging.getLogger(__name__)
DPI = 110


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "data"


def _groups(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by data source, in the tables' order."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.source.order):
        groups.setdefault(run.source.group, []).append(run)
    return groups


def _finished_groups(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A side's finished rows of the comparison table by data source, in the table's order."""
    done = rows[rows["status"] == FINISHED]
    return {group: done[done["data_source"] == group] for group in dict.fromkeys(done["data_source"])}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- bars
def bar_plot(table: pd.DataFrame, manuscript: Manuscript, task: str, out: Path) -> Path | None:
    paper = manuscript.tasks[task]
    rows = table[table["task"] == task]
    panels = [(m, False) for m in paper.reported]
    if ((rows["domain"] == HUMAN) & (rows["status"] == FINISHED)).any():
        panels += [(m, True) for m in paper.reported_human]
    keys = list(paper.rows)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(8, 1.3 * len(keys)), 2.6 * len(panels) + 0.8), squeeze=False, layout="constrained"
    )
    for ax, (metric, human) in zip(axes[:, 0], panels):
        groups = _finished_groups(rows[(rows["domain"] == HUMAN) == human])
        width = 0.8 / (1 + len(groups))
        x = np.arange(len(keys))
        values_paper = [(paper.rows[k].human if human else paper.rows[k].metrics).get(metric, np.nan) for k in keys]
        ax.bar(x - 0.4 + width / 2, values_paper, width, label="paper", color="0.6")
        col = column(metric)
        for g, group_rows in enumerate(groups.values()):
            on_release = group_rows["shown"].astype(bool) & ~group_rows["splits"].astype(bool)  # re-split: tables
            shown = {r["model"]: r for r in group_rows[on_release].to_dict("records")}
            values, low, high = [], [], []
            for k in keys:
                row = shown.get(k)
                v = number(row[col]) if row else None
                v = np.nan if v is None else v
                lo, hi = (number(row[f"{col}_ci_low"]), number(row[f"{col}_ci_high"])) if row else (None, None)
                sd = number(row[f"{col}_sd"]) if row and row["seed"] == AGGREGATE else None
                if sd is not None and not np.isnan(v):  # a row over seeds: ± its standard deviation
                    lo, hi = v - sd, v + sd
                values.append(v)
                low.append(v - lo if lo is not None else 0.0)
                high.append(hi - v if hi is not None else 0.0)
            errors = np.clip(np.nan_to_num(np.array([low, high])), 0, None)
            source = group_rows.iloc[0]["source"]
            ax.bar(
                x - 0.4 + width * (g + 1.5),
                values,
                width,
                yerr=errors,
                capsize=2,
                label=source.legend,
                color=f"C{g}",
                hatch="//" if source.is_phantom else None,
                edgecolor="white" if source.is_phantom else None,
            )
            for xi, v in zip(x, values):
                if np.isnan(v):
                    ax.text(
                        xi - 0.4 + width * (g + 1.5),
                        0.02,
                        "not run",
                        rotation=90,
                        fontsize=6,
                        ha="center",
                        va="bottom",
                        color="0.3",
                    )
        ax.set_xticks(x, [paper.rows[k].name for k in keys], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(("human " if human else "") + paper.label(metric))
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, loc="outside upper center", ncol=3)
    seeds = "; ± sd over seeds" if (rows["seed"] == AGGREGATE).any() else ""
    axes[0, 0].set_title(
        f"{task}: paper vs ours (95% bootstrap CI{seeds}); hatched = PHANTOM, not a reproduction", fontsize=9
    )
    return _save(fig, out / f"{task}_bars.png")


# ---------------------------------------------------------------- accuracy vs FPS
def scatter_plot(table: pd.DataFrame, manuscript: Manuscript, task: str, out: Path) -> Path | None:
    paper = manuscript.tasks[task]
    metric = ACCURACY_METRIC[task]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for proc, marker in (("cpu", "o"), ("gpu", "s")):
        pts = [(r.speed[proc].fps, r.accuracy, r.name) for r in paper.rows.values() if proc in r.speed]
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=marker,
                facecolors="none",
                edgecolors="0.4",
                label=f"paper {proc.upper()}",
            )
            for fps, acc, name in pts:
                ax.annotate(name, (fps, acc), fontsize=6, color="0.4", xytext=(3, 2), textcoords="offset points")
    rows = table[(table["task"] == task) & (table["domain"] != HUMAN)]
    for g, group_rows in enumerate(_finished_groups(rows).values()):
        records = [r for r in group_rows.to_dict("records") if r["seed"] != AGGREGATE]  # each seed is a point
        pts = [
            (number(r[f"fps_{proc}"]), number(r[column(metric)]), r["model_name"], proc)
            for r in records
            for proc in ("cpu", "gpu")
        ]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="*",
            s=90,
            color=f"C{g}",
            label=f"{records[0]['source'].legend} ({records[0]['hardware']})",
        )
        for fps, acc, name, proc in pts:
            ax.annotate(
                f"{name} ({proc})", (fps, acc), fontsize=6, color=f"C{g}", xytext=(3, -8), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 inference FPS (log)")
    ax.set_ylabel(f"{paper.label(metric)} (porcine test)")
    ax.set_title(f"{task}: accuracy vs speed (implantability view)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, out / f"{task}_accuracy_vs_fps.png")


# ---------------------------------------------------------------- PR curves
def _run_pr_curve(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    saved = run.path / "pr_curve.json"
    if saved.is_file():
        curve = json.loads(saved.read_text())
        return np.asarray(curve["recall"], dtype=float), np.asarray(curve["precision"], dtype=float)
    gt_file, det_file = run.path / "ground_truth.json", run.path / "predictions.json"
    if not (gt_file.is_file() and det_file.is_file()):
        return None
    from spinebench.detection.coco import pr_curve

    curve = pr_curve(json.loads(gt_file.read_text()), json.loads(det_file.read_text()))
    return np.asarray(curve["recall"], dtype=float), np.asarray(curve["precision"], dtype=float)


def pr_plots(collection: Collection, out: Path) -> list[Path]:
    written = []
    runs = [r for r in collection.by_task("detection") if r.domain != "human"]
    for group, group_runs in _groups(runs).items():
        fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
        drawn = 0
        for run in group_runs:
            curve = _run_pr_curve(run)
            if curve is None or not len(curve[0]):
                continue
            recall, precision = curve
            # the interpolated envelope COCO averages (precision made monotone from the right)
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            recall, envelope = np.concatenate([[0.0], recall]), np.concatenate([envelope[:1], envelope])
            ax.plot(
                recall,
                envelope,
                drawstyle="steps-pre",
                label=f"{run.model_name} (AP50 {run.values.get('mAP50', float('nan')):.3f})",
            )
            drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        title = f"PR curves at IoU 0.5 - {group}"
        if group_runs[0].source.is_phantom:
            title += "\nPHANTOM (synthetic), not a reproduction"
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        written.append(_save(fig, out / f"detection_pr_{_slug(group)}.png"))
    return written


# ---------------------------------------------------------------- segmentation grid
def _reference(run: Run, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(gray image, reference mask) of a test image of the run's dataset, (None, None) when not found."""
    from spinebench.data.images import read_gray
    from spinebench.data.layout import split_folder
    from spinebench.data.segmentation import mask_folder, read_mask
    from spinebench.errors import DataError

    root = run.data_root
    if root is None:
        return None, None
    stem = Path(name).stem
    for split in dict.fromkeys((run.record.split or "test", "test")):
        try:
            images_dir = split_folder(root, "segmentation", split)
        except (DataError, OSError):
            continue
        masks_dir = mask_folder(images_dir)
        image = (
            images_dir / name
            if (images_dir / name).is_file()
            else next(iter(sorted(images_dir.glob(f"{stem}.*"))), None)
        )
        if image is not None and image.is_file():
            mask = masks_dir / image.name
            return read_gray(image), (read_mask(mask) if mask.is_file() else None)
    return None, None


def segmentation_grids(collection: Collection, out: Path, n_images: int = 4) -> list[Path]:
    from PIL import Image

    written = []
    runs = [r for r in collection.by_task("segmentation") if r.domain != "human"]
    for group, group_runs in _groups(runs).items():
        with_preds = [r for r in group_runs if (r.path / "predictions").is_dir()]
        # one run per model: the latest
        chosen = []
        for model in dict.fromkeys(r.model for r in with_preds):
            run, _ = pick(with_preds, model)  # on the release's split: a re-split run scored other test images
            if run is not None:
                chosen.append(run)
        if not chosen:
            continue
        common = set.intersection(*[{p.name for p in (r.path / "predictions").glob("*.png")} for r in chosen])
        names = sorted(common)
        if not names:
            continue
        step = max(1, len(names) // n_images)
        names = names[::step][:n_images]
        cols = 2 + len(chosen)
        fig, axes = plt.subplots(
            len(names), cols, figsize=(2.6 * cols, 1.25 * len(names) + 0.6), squeeze=False, layout="constrained"
        )
        for i, name in enumerate(names):
            gray, ref = _reference(chosen[0], name)
            if gray is None:
                first = np.asarray(Image.open(chosen[0].path / "predictions" / name))
                gray = np.zeros(first.shape[:2], dtype=np.uint8)
            panels = [("image", gray, None), ("reference", gray, ref)]
            for run in chosen:
                pred = np.asarray(Image.open(run.path / "predictions" / name))
                if pred.ndim == 3:
                    pred = pred[..., 0]
                panels.append((run.model_name, gray, pred))
            for j, (title, base, labels) in enumerate(panels):
                ax = axes[i, j]
                if labels is None and title == "reference":
                    ax.text(0.5, 0.5, "reference not found", ha="center", va="center", fontsize=7)
                    ax.set_facecolor("0.9")
                elif labels is None:
                    ax.imshow(base, cmap="gray", vmin=0, vmax=255)
                else:
                    if labels.shape != base.shape:
                        base = np.zeros(labels.shape, dtype=np.uint8)
                    ax.imshow(overlay(base, labels))
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=8)
            axes[i, 0].set_ylabel(name, fontsize=6)
        suptitle = f"test images, reference and predictions\n{group}"
        if chosen[0].source.is_phantom:
            suptitle += "\nPHANTOM (synthetic), not a reproduction"
        fig.suptitle(suptitle, fontsize=9)
        written.append(_save(fig, out / f"segmentation_grid_{_slug(group)}.png"))
    return written


def make_plots(
    table: pd.DataFrame, collection: Collection, manuscript: Manuscript, out: Path
) -> tuple[list[Path], list[str]]:
    """Every plot into `out` (a folder); returns the files and notes on plots that could not be drawn."""
    out = Path(out)
    written, notes = [], []
    steps = [(f"{task} bars", lambda t=task: [bar_plot(table, manuscript, t, out)]) for task in manuscript.tasks]
    steps += [
        (f"{task} accuracy vs FPS", lambda t=task: [scatter_plot(table, manuscript, t, out)])
        for task in manuscript.tasks
    ]
    steps += [
        ("detection PR curves", lambda: pr_plots(collection, out)),
        ("segmentation grid", lambda: segmentation_grids(collection, out)),
    ]
    for name, step in steps:
        try:
            written += [p for p in step() if p is not None]
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the tables: report it and go on
            log.warning("plot %s failed: %s", name, exc)
            notes.append(f"plot '{name}' failed ({type(exc).__name__}: {exc})")
    return written, notes
