"""Synthetic B-mode phantom of the sagittal porcine spinal cord, written in the real releases' layouts.

The Kumar et al. data cannot be downloaded in CI, so tests and demos run on this phantom. Every output is
marked synthetic (PHANTOM.json, a PNG text chunk in every file); the spec is the project's phantom.md.

    from spinebench.data.phantom import write_phantom
    write_phantom("segmentation", Path("phantom_seg"), n_train=64, n_val=16, n_test=16, seed=0)
"""

from spinebench.data.phantom.anatomy import DOMAINS, RANGES, build_anatomy, sample_knobs
from spinebench.data.phantom.speckle import envelope_snr, psf_sigmas, render_bmode
from spinebench.data.phantom.writer import (
    MARKER,
    TASKS,
    PhantomSample,
    image_seed,
    plan_split,
    render_planned,
    render_sample,
    voc_xml,
    write_phantom,
)

__all__ = [
    "DOMAINS",
    "MARKER",
    "RANGES",
    "TASKS",
    "PhantomSample",
    "build_anatomy",
    "envelope_snr",
    "image_seed",
    "plan_split",
    "psf_sigmas",
    "render_bmode",
    "render_planned",
    "render_sample",
    "sample_knobs",
    "voc_xml",
    "write_phantom",
]
