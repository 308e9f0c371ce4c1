"""Per-column label-map geometry of a sagittal cord phantom (phantom.md, "Geometry").

Each image column is a stack of layers, top (transducer) to bottom:
dorsal space, dura, CSF, pia, cord (hematoma inside), ventral pia, ventral CSF, ventral dura, ventral space.
Layer thicknesses are smooth random functions of the column, so curvature, tilt and swelling come for free;
the class of a layer may change per column (CSF effaced over a lesion: dura+CSF+pia -> dura/pia complex 8;
ventral CSF+dura -> dura/ventral complex 9). Thicknesses are in pixels at zoom 1 and were tuned so the
class pixel shares land near the release's (manuscript.md Table 1); `zoom` mimics the release's rescaling
of scans taken at different depths. Everything is vectorised over the 275 x 690 grid (no per-pixel loops).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH

H, W = IMAGE_HEIGHT, IMAGE_WIDTH
DOMAINS = ("porcine", "human")

# Nominal pixel spacing of the release at zoom 1 (phantom.md: assumed, kept a parameter).
AXIAL_MM_PER_PX, LATERAL_MM_PER_PX = 0.029, 0.036

BACKGROUND, DURA, PIA, CSF, CORD, DORSAL, HEMATOMA, VENTRAL, DURA_PIA, DURA_VENTRAL = range(10)

# Layer stack of one column (index -> default class).
L_DORSAL, L_DURA, L_CSF, L_PIA, L_CORD, L_VPIA, L_VCSF, L_VDURA, L_VENTRAL = range(9)
LAYER_CLASSES = np.array([DORSAL, DURA, CSF, PIA, CORD, PIA, CSF, DURA, VENTRAL], dtype=np.uint8)
N_LAYERS = len(LAYER_CLASSES)

# Knob ranges per domain (pixels at zoom 1 unless named otherwise). Written to PHANTOM.json as they are.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "porcine": {
        "frequency_mhz": (12.0, 20.0),
        "zoom": (0.85, 1.15),
        "tilt_px_per_px": (-0.06, 0.06),
        "curvature_px": (0.0, 14.0),
        "dorsal_px": (22.0, 78.0),
        "gel_px": (0.0, 18.0),
        "dura_px": (16.0, 24.0),
        "csf_px": (8.0, 28.0),
        "pia_px": (15.0, 23.0),
        "cord_px": (110.0, 165.0),
        "ventral_pia_px": (10.0, 18.0),
        "ventral_csf_px": (4.0, 14.0),
        "ventral_dura_px": (14.0, 22.0),
        "dura_ventral_complex_px": (38.0, 62.0),
        "hematoma_half_length_px": (45.0, 150.0),
        "hematoma_half_depth_px": (18.0, 55.0),
        "swelling_px": (0.0, 16.0),
        "background_band_px": (4.0, 22.0),
        "gain_db": (-3.0, 3.0),
        "dynamic_range_db": (50.0, 60.0),
        "attenuation_db_cm_mhz": (0.5, 1.0),
        "tgc_fraction": (0.5, 0.9),
        "noise_floor_db": (-55.0, -48.0),
    },
    "human": {
        "frequency_mhz": (7.0, 9.0),
        "zoom": (0.9, 1.1),
        "tilt_px_per_px": (-0.05, 0.05),
        "curvature_px": (0.0, 10.0),
        "dorsal_px": (18.0, 45.0),
        "gel_px": (4.0, 18.0),
        "dura_px": (17.0, 24.0),
        "csf_px": (60.0, 120.0),
        "pia_px": (15.0, 22.0),
        "cord_px": (190.0, 240.0),
        "ventral_pia_px": (10.0, 18.0),
        "ventral_csf_px": (20.0, 40.0),
        "ventral_dura_px": (14.0, 22.0),
        "dura_ventral_complex_px": (22.0, 38.0),
        "hematoma_half_length_px": (45.0, 130.0),
        "hematoma_half_depth_px": (18.0, 45.0),
        "swelling_px": (0.0, 10.0),
        "background_band_px": (4.0, 22.0),
        "gain_db": (-1.0, 5.0),
        "dynamic_range_db": (44.0, 50.0),
        "attenuation_db_cm_mhz": (0.5, 1.0),
        "tgc_fraction": (0.6, 0.9),
        "noise_floor_db": (-50.0, -42.0),
    },
}

# Probabilities (per image) of the optional structures, tuned to the "images containing" column of Table 1.
P_BACKGROUND = 0.60
P_DURA_PIA_COMPLEX_IF_INJURED = 0.48
P_DURA_VENTRAL_COMPLEX_IF_VENTRAL = 0.38
P_SUBACUTE = 0.2


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def smooth_curve(rng: np.random.Generator, amplitude: float, n_waves: int = 3, min_period: float = 250.0) -> np.ndarray:
    """A smooth random function of the column (sum of a few long sinusoids), zero mean, ~`amplitude` px peak."""
    x = np.arange(W, dtype=np.float32)
    curve = np.zeros(W, dtype=np.float32)
    for _ in range(n_waves):
        period = rng.uniform(min_period, 4.0 * W)
        curve += np.float32(rng.normal()) * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi)).astype(
            np.float32
        )
    peak = float(np.abs(curve - curve.mean()).max()) or 1.0
    return (curve - curve.mean()) * np.float32(amplitude / peak)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """Zero-mean unit-variance Gaussian random field with correlation lengths `cell` = (rows, cols) px.

    Drawn on a coarse grid and upsampled with cv2 (cheap: the fine grid is never filtered).
    """
    rows = max(2, int(np.ceil(shape[0] / cell[0])) + 2)
    cols = max(2, int(np.ceil(shape[1] / cell[1])) + 2)
    coarse = rng.standard_normal((rows, cols), dtype=np.float32)
    fine = cv2.resize(coarse, (int(cols * cell[1]), int(rows * cell[0])), interpolation=cv2.INTER_CUBIC)
    fine = fine[: shape[0], : shape[1]]
    return (fine - fine.mean()) / (fine.std() + 1e-6)


@dataclass
class Anatomy:
    """One image's geometry: the label map plus what the speckle model needs to place echoes."""

    labels: np.ndarray  # H x W uint8 class indices
    layer: np.ndarray  # H x W uint8 layer index (0..8), before hematoma/background overrides
    boundaries: np.ndarray  # (N_LAYERS - 1) x W float32, top row of layers 1..8 per column
    relpos: np.ndarray  # H x W uint8 position inside the pixel's layer, 0 (top) .. 255 (bottom)
    injured: bool
    params: dict = field(default_factory=dict)
    hematoma_box: tuple[int, int, int, int] | None = None  # xmin, ymin, xmax, ymax (pixel edges, exclusive max)
    canal_row: np.ndarray | None = None  # central-canal depth per column (float32) or None
    background: np.ndarray | None = None  # H x W bool, padding outside the imaged field


def sample_knobs(rng: np.random.Generator, domain: str, base: dict | None = None) -> dict:
    """Draw one image's knob values from the domain's ranges; `base` (per-animal values) pulls them together."""
    ranges = RANGES[domain]
    knobs = {name: uniform(rng, bounds) for name, bounds in ranges.items()}
    if base:
        # An animal keeps its probe and its anatomy: per-image values jitter around the animal's own.
        for name, value in base.items():
            lo, hi = ranges[name]
            jitter = 0.12 * (hi - lo) * float(rng.standard_normal())
            knobs[name] = float(np.clip(value + jitter, lo, hi))
        if "frequency_mhz" in base:
            knobs["frequency_mhz"] = base["frequency_mhz"]
    return knobs


def animal_knobs(rng: np.random.Generator, domain: str) -> dict:
    """Per-animal (per-patient) values: probe frequency and body size, shared by that animal's images."""
    ranges = RANGES[domain]
    if domain == "porcine":  # the release used a 20 MHz (i22LH8) or a 12 MHz (i18LX5) probe
        frequency = float(rng.choice([12.0, 14.0, 18.0, 20.0]))
    else:
        frequency = uniform(rng, ranges["frequency_mhz"])
    names = ("dorsal_px", "csf_px", "cord_px", "dura_px", "pia_px", "zoom", "gain_db")
    out = {name: uniform(rng, ranges[name]) for name in names}
    out["frequency_mhz"] = frequency
    return out


def _segment_mask(rng: np.random.Generator, center: float, min_frac: float, max_frac: float) -> np.ndarray:
    length = rng.uniform(min_frac, max_frac) * W
    x = np.arange(W, dtype=np.float32)
    lo = center - length * rng.uniform(0.35, 0.65)
    return (x >= lo) & (x < lo + length)


def _taper(mask: np.ndarray, width: float) -> np.ndarray:
    """0/1 column mask -> smooth 0..1 weight (so effacement and swelling have no steps)."""
    weight = cv2.GaussianBlur(mask.astype(np.float32)[None, :], (0, 0), sigmaX=width, borderType=cv2.BORDER_REPLICATE)
    return weight[0]


def _paint_columns(boundaries: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer index, class, relative position in layer) per pixel, painted as runs down each column.

    np.repeat over column-major runs is about twice as fast as comparing every pixel with every boundary.
    """
    n_layers = classes.shape[0]
    edges = np.clip(np.ceil(boundaries), 0, H).astype(np.int64)
    edges = np.concatenate([np.zeros((1, W), np.int64), edges, np.full((1, W), H, np.int64)])
    lengths = np.diff(edges, axis=0).T.ravel()  # column-major runs, each column sums to H
    layer = np.repeat(np.tile(np.arange(n_layers, dtype=np.uint8), W), lengths).reshape(W, H).T.copy()
    labels = np.repeat(classes.T.ravel(), lengths).reshape(W, H).T.copy()
    padded = np.concatenate([np.zeros((1, W), np.float32), boundaries, np.full((1, W), float(H), np.float32)])
    inv_thickness = (1.0 / np.maximum(padded[1:] - padded[:-1], 1.0)).astype(np.float32)
    top = np.repeat(padded[:-1].T.ravel(), lengths)
    scale = np.repeat(inv_thickness.T.ravel(), lengths)
    rows = np.tile(np.arange(H, dtype=np.float32), W)
    relpos = np.clip((rows - top) * scale * np.float32(255.0) + np.float32(0.5), 0.0, 255.0)
    return layer, labels, relpos.astype(np.uint8).reshape(W, H).T.copy()


def build_anatomy(rng: np.random.Generator, domain: str, injured: bool, knobs: dict) -> Anatomy:
    """Label map of one image from its knobs (see module docstring); deterministic given `rng`."""
    zoom = knobs["zoom"]
    x = np.arange(W, dtype=np.float32)

    # Thickness profiles: smooth lateral variation around the drawn means.
    def profile(name: str, rel: float = 0.12) -> np.ndarray:
        mean = knobs[name] * zoom
        return np.maximum(mean * (1.0 + smooth_curve(rng, rel, n_waves=2, min_period=300.0)), 1.0)

    surface = (
        knobs["dorsal_px"] * zoom
        + knobs["tilt_px_per_px"] * (x - W / 2)
        + smooth_curve(rng, knobs["curvature_px"] * zoom)
    ).astype(np.float32)
    t = np.zeros((N_LAYERS - 1, W), dtype=np.float32)  # thickness of layers 1..8 (the last is "to the bottom")
    t[L_DURA - 1] = profile("dura_px", 0.1)
    t[L_CSF - 1] = profile("csf_px", 0.3)
    t[L_PIA - 1] = profile("pia_px", 0.1)
    t[L_CORD - 1] = profile("cord_px", 0.06)
    t[L_VPIA - 1] = profile("ventral_pia_px", 0.15)
    t[L_VCSF - 1] = profile("ventral_csf_px", 0.3)
    t[L_VDURA - 1] = profile("ventral_dura_px", 0.1)
    classes = np.repeat(LAYER_CLASSES[:, None], W, axis=1)  # (layer, column) -> class

    lesion = None
    if injured:
        cx = rng.uniform(0.28, 0.72) * W
        a = knobs["hematoma_half_length_px"] * zoom
        b = knobs["hematoma_half_depth_px"] * zoom
        lesion = (cx, a, b)
        swell = knobs["swelling_px"] * zoom * np.exp(-0.5 * ((x - cx) / (1.2 * a)) ** 2)
        surface -= swell  # the swollen cord lifts the dura toward the probe ...
        t[L_CORD - 1] += swell  # ... while its ventral side stays put
        if rng.random() < P_DURA_PIA_COMPLEX_IF_INJURED:
            seg = _segment_mask(rng, cx, 0.5, 1.0)
            efface = _taper(seg, 10.0 + 0.5 * knobs["csf_px"] * zoom)  # wide CSF narrows gradually
            t[L_CSF - 1] = np.maximum(t[L_CSF - 1] * (1.0 - 0.85 * efface), 1.0)  # CSF effaced over the lesion
            classes[L_DURA : L_PIA + 1, seg] = DURA_PIA
    surface = np.maximum(surface, 6.0)
    gel = min(knobs["gel_px"] * zoom, float(surface.min()) - 4.0)

    boundaries = surface[None, :] + np.concatenate([np.zeros((1, W), np.float32), np.cumsum(t[:-1], axis=0)])
    ventral_visible = bool((boundaries[L_VPIA - 1] < H - 5).any())
    if ventral_visible and rng.random() < P_DURA_VENTRAL_COMPLEX_IF_VENTRAL:
        seg = _segment_mask(rng, rng.uniform(0.3, 0.7) * W, 0.6, 1.2)
        extra = knobs["dura_ventral_complex_px"] * zoom - (t[L_VCSF - 1] + t[L_VDURA - 1])
        t[L_VDURA - 1] += np.where(seg, np.maximum(extra, 0.0), 0.0)
        classes[L_VCSF : L_VDURA + 1, seg] = DURA_VENTRAL
        boundaries = surface[None, :] + np.concatenate([np.zeros((1, W), np.float32), np.cumsum(t[:-1], axis=0)])

    layer, labels, relpos = _paint_columns(boundaries, classes)

    params = dict(knobs, injured=injured, gel_rows=float(gel), ventral_visible=ventral_visible)
    anatomy = Anatomy(labels=labels, layer=layer, boundaries=boundaries, relpos=relpos, injured=injured, params=params)

    # Central canal: faint line near the middle of the cord (not a label: the release does not annotate it).
    anatomy.canal_row = boundaries[L_CORD - 1] + t[L_CORD - 1] * np.float32(rng.uniform(0.45, 0.6))

    if lesion is not None:
        _add_hematoma(rng, anatomy, lesion, boundaries[L_CORD - 1])
    if rng.random() < P_BACKGROUND:
        _add_background(rng, anatomy, knobs["background_band_px"])
    return anatomy


def _add_hematoma(
    rng: np.random.Generator, anatomy: Anatomy, lesion: tuple[float, float, float], cord_top: np.ndarray
) -> None:
    """Irregular ellipse in the dorsal half of the cord, following the cord's curvature; only cord pixels change."""
    cx, a, b = lesion
    x0, x1 = max(int(cx - 1.4 * a), 0), min(int(cx + 1.4 * a) + 1, W)
    top_at = cord_top[x0:x1]
    depth = b * rng.uniform(0.75, 1.3)  # lesion centre below the pia: contusions start dorsally
    zc = top_at + depth
    y0 = max(int(top_at.min() - 2), 0)
    y1 = min(int((zc + 1.5 * b).max()) + 1, H)
    if y1 <= y0 or x1 <= x0:
        return
    rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    d = np.sqrt(((xs - cx) / a) ** 2 + ((rows - zc[None, :]) / b) ** 2)
    edge = 1.0 + 0.22 * smooth_field(rng, (y1 - y0, x1 - x0), (12.0, 18.0))  # irregular margin
    inside = d < edge
    window = anatomy.labels[y0:y1, x0:x1]
    hit = inside & (window == CORD)
    if not hit.any():  # e.g. the lesion fell past the frame: force a small one just below the pia
        rr = np.clip((top_at + 0.5 * b).astype(int), 0, H - 1)
        hit = np.zeros_like(inside)
        ok = anatomy.labels[rr, np.arange(x0, x1)] == CORD
        hit[np.clip(rr - y0, 0, y1 - y0 - 1)[ok], np.nonzero(ok)[0]] = True
    window[hit] = HEMATOMA
    ys, xs_hit = np.nonzero(anatomy.labels == HEMATOMA)
    anatomy.hematoma_box = (int(xs_hit.min()), int(ys.min()), int(xs_hit.max()) + 1, int(ys.max()) + 1)
    anatomy.params["hematoma_center_x"] = float(cx)


def _add_background(rng: np.random.Generator, anatomy: Anatomy, band_px: float) -> None:
    """Padding left by the release's rescaling: a black band at one side or at the bottom (label 0)."""
    width = int(round(band_px))
    mask = np.zeros((H, W), dtype=bool)
    where = rng.choice(["left", "right", "bottom", "left+right"], p=[0.35, 0.35, 0.15, 0.15])
    if where in ("left", "left+right"):
        mask[:, : width if where == "left" else max(width // 2, 2)] = True
    if where in ("right", "left+right"):
        mask[:, W - (width if where == "right" else max(width // 2, 2)) :] = True
    if where == "bottom":
        mask[H - max(width // 2, 2) :, :] = True
    anatomy.background = mask
    anatomy.labels[mask] = BACKGROUND
    if anatomy.hematoma_box is not None:  # the band may have cut the lesion: keep the box tight
        ys, xs = np.nonzero(anatomy.labels == HEMATOMA)
        anatomy.hematoma_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None
