"""Writes docs/phantom_example.png: phantom B-mode images of both tasks beside their label overlays / boxes.

The figure shows what tests and demos train on; its caption says SYNTHETIC PHANTOM so it can never be
mistaken for the Kumar et al. data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from spinebench.classes import SEGMENTATION_CLASSES, SEGMENTATION_PALETTE  # noqa: E402
from spinebench.data.phantom import render_sample  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "phantom_example.png")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    cases = [  # (title, domain, injured, task)
        ("segmentation, porcine, post-injury", "porcine", True, "segmentation"),
        ("segmentation, porcine, pre-injury", "porcine", False, "segmentation"),
        ("detection, porcine, post-injury", "porcine", True, "detection"),
        ("segmentation, human-like domain (7-9 MHz)", "human", True, "segmentation"),
    ]
    fig, axes = plt.subplots(len(cases), 2, figsize=(13, 3.0 * len(cases) + 1.2))
    for row, (title, domain, injured, task) in enumerate(cases):
        sample = render_sample(args.seed + row, domain, injured=injured, animal=row + 1)
        left, right = axes[row]
        left.imshow(sample.image, cmap="gray", vmin=0, vmax=255)
        left.set_title(f"B-mode ({title})", fontsize=9)
        if task == "segmentation":
            right.imshow(sample.image, cmap="gray", vmin=0, vmax=255)
            right.imshow(SEGMENTATION_PALETTE[sample.labels], alpha=0.45)
            right.set_title("label overlay (VOC palette)", fontsize=9)
        else:
            right.imshow(sample.image, cmap="gray", vmin=0, vmax=255)
            if sample.box is not None:
                x0, y0, x1, y1 = sample.box
                right.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", lw=1.5))
                right.text(x0, y0 - 4, "hematoma", color="yellow", fontsize=8)
            right.set_title("Pascal-VOC box = tight box of the lesion", fontsize=9)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=SEGMENTATION_PALETTE[i] / 255.0, label=name) for i, name in enumerate(SEGMENTATION_CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        "SYNTHETIC PHANTOM (spinebench.data.phantom) - not real ultrasound, not the Kumar et al. release",
        fontsize=11,
        color="darkred",
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
