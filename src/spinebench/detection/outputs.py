"""What a detection run writes beside metrics.json: ground_truth.json, predictions.json, pr_curve.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinebench.detection.coco import PR_IOU, pr_curve, score_coco
from spinebench.runinfo import write_json

GROUND_TRUTH_FILE, PREDICTIONS_FILE, PR_CURVE_FILE = "ground_truth.json", "predictions.json", "pr_curve.png"


def plot_pr_curve(ground_truth: dict, detections: list[dict], path: Path, title: str, metrics: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    curve = pr_curve(ground_truth, detections, iou=PR_IOU)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    if len(curve["recall"]):
        ax.plot(np.concatenate([[0.0], curve["recall"]]), np.concatenate([[1.0], curve["precision"]]), lw=1.5)
        ax.scatter(
            [metrics.get("recall", 0.0)],
            [metrics.get("precision", 0.0)],
            color="C3",
            zorder=3,
            label=f"best F1 {metrics.get('f1', 0.0):.3f}",
        )
        ax.legend(loc="lower left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(
        f"{title}\nIoU {PR_IOU}: mAP50 {metrics.get('mAP50', 0):.3f}, mAP50-95 {metrics.get('mAP50_95', 0):.3f}",
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def score_and_write(run_dir: Path, ground_truth: dict, detections: list[dict], title: str) -> dict[str, float]:
    """Score with the one COCO evaluator and write the three files; returns the metrics."""
    run_dir = Path(run_dir)
    metrics = score_coco(ground_truth, detections)
    write_json(run_dir / GROUND_TRUTH_FILE, ground_truth)
    write_json(run_dir / PREDICTIONS_FILE, detections)
    plot_pr_curve(ground_truth, detections, run_dir / PR_CURVE_FILE, title, metrics)
    return metrics
