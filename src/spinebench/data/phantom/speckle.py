"""B-mode synthesis from a label map: the convolution speckle model of phantom.md ("Cheap, credible speckle").

1. Scatterers: complex Gaussian per pixel scaled by a per-tissue amplitude (Rayleigh envelope); K-type texture
   by modulating the power with a smoothed Gamma field (hematoma mottling, muscle striation); coherent
   specular lines on membranes (Rician), a faint central canal, a reverberation of the dura, rootlets (human).
2. PSF: a separable Gaussian in baseband (axial ~3 px / lateral ~7 px FWHM at 12 MHz, scaling as 1/f).
3. Envelope, depth attenuation with partial TGC and a focal gain bump, electronic noise floor, shadows.
4. Log compression over a 50-60 dB range with gain jitter, slight post-log smoothing, 8-bit.
All float32, cv2 separable filters and table lookups, no per-pixel Python: ~13-25 ms per 690 x 275 image
on one core of the 2-core CI machine (benchmarks/bench_phantom.py).
"""

from __future__ import annotations

from statistics import NormalDist

import cv2
import numpy as np

from spinebench.data.phantom.anatomy import (
    AXIAL_MM_PER_PX,
    CORD,
    CSF,
    DORSAL,
    DURA,
    DURA_PIA,
    HEMATOMA,
    L_CORD,
    L_CSF,
    L_DURA,
    L_PIA,
    L_VDURA,
    L_VPIA,
    PIA,
    Anatomy,
    H,
    W,
    smooth_field,
)

# Echo level of each class in dB relative to the brightest membrane (index = class), membrane profile drop
# from the band's centre to its edges, and K-texture strength (0 = fully developed Rayleigh speckle).
ECHO_DB = {
    "porcine": np.array([-90, -3, -6, -56, -35, -36, -18, -23, -4, -9], dtype=np.float32),
    "human": np.array([-90, -3, -7, -58, -33, -34, -17, -23, -4, -9], dtype=np.float32),
}
PROFILE_DROP_DB = np.array([0, 26, 24, 0, 0, 0, 0, 0, 20, 16], dtype=np.float32)
TEXTURE = np.array([0, 0.3, 0.3, 0, 0, 0.8, 1.0, 0.7, 0.4, 0.5], dtype=np.float32)

AXIAL_FWHM_PX_12MHZ, LATERAL_FWHM_PX_12MHZ = 3.0, 7.0
_NORMAL = NormalDist()
FWHM_TO_SIGMA = 1.0 / 2.3548
_PROFILE = np.exp(-0.5 * ((np.arange(256, dtype=np.float32) / 255.0 - 0.5) / 0.2) ** 2).astype(np.float32)


def psf_sigmas(frequency_mhz: float, zoom: float) -> tuple[float, float]:
    """(axial, lateral) Gaussian sigma in px: resolution scales as 1/f and with the rescaling zoom."""
    scale = 12.0 / frequency_mhz * zoom
    return AXIAL_FWHM_PX_12MHZ * scale * FWHM_TO_SIGMA, LATERAL_FWHM_PX_12MHZ * scale * FWHM_TO_SIGMA


def _gated(rng: np.random.Generator, continuity: float, cell: float = 40.0) -> np.ndarray:
    """0..1 lateral gate: a specular line is only partly continuous (angle-dependent reflection)."""
    knots = rng.standard_normal(int(W / cell) + 3)
    field = np.interp(np.arange(W) / cell, np.arange(len(knots)), knots)
    threshold = _NORMAL.inv_cdf(1.0 - min(max(continuity, 1e-3), 1 - 1e-3)) * 0.8  # interpolation shrinks the spread
    return np.clip((field - threshold) * 2.0 + 0.5, 0.0, 1.0).astype(np.float32)


class _Lines:
    """Coherent (specular) line echoes added after the PSF, plus the mask of where they are.

    Works on a copy of the grid padded by the line's reach, so no index ever needs clipping.
    """

    def __init__(self, sigma_axial: float, labels: np.ndarray):
        self.sigma = max(sigma_axial * 1.3, 1.0)
        self.reach = int(np.ceil(3.0 * self.sigma))
        pad = self.reach + 1
        self.pad = pad
        self.labels = labels.ravel()
        self.field = np.zeros((H + 2 * pad) * W, dtype=np.float32)
        self.mask = np.zeros((H + 2 * pad) * W, dtype=bool)
        self.offsets = np.arange(-self.reach, self.reach + 1, dtype=np.float32)[:, None]
        self.cols = np.arange(W, dtype=np.int64)[None, :]

    def add(self, row: np.ndarray, amplitude: np.ndarray, cls: int | None = None) -> None:
        """A line at (sub-pixel) `row` per column with per-column `amplitude`, only on pixels of class `cls`."""
        row = np.asarray(row, dtype=np.float32)
        amplitude = np.where((row > -self.reach) & (row < H + self.reach), amplitude, 0.0)  # off-frame: nothing
        row = np.clip(row, -1.0, float(H))
        centre = np.round(row)
        rows = centre[None, :] + self.offsets
        value = amplitude.astype(np.float32)[None, :] * np.exp(
            np.float32(-0.5 / self.sigma**2) * (rows - row[None, :]) ** 2
        )
        index = (rows.astype(np.int64) + self.pad) * W + self.cols  # distinct (row, col) pairs
        keep = value > 0
        if cls is not None:  # rows off the frame are cropped later, so clipping them for the lookup is harmless
            inside = np.clip(rows, 0, H - 1).astype(np.int64) * W + self.cols
            keep &= np.take(self.labels, inside) == cls
        self.field[index] += value * keep
        self.mask[index] |= keep

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        cut = slice(self.pad * W, (self.pad + H) * W)
        return self.field[cut].reshape(H, W), self.mask[cut].reshape(H, W)


def _coarse_texture_db(rng: np.random.Generator, shape_k: float, cell: int) -> np.ndarray:
    """K-type texture in dB: a Gamma(k) power field on a coarse grid, upsampled (blobs ~`cell` px)."""
    coarse = rng.standard_gamma(shape_k, (H // cell + 2, W // cell + 2)).astype(np.float32)
    coarse_db = np.float32(10.0) * np.log10(coarse / np.float32(shape_k) + np.float32(1e-3))
    size = ((W // cell + 2) * cell, (H // cell + 2) * cell)
    return cv2.resize(coarse_db, size, interpolation=cv2.INTER_LINEAR)[:H, :W]


def render_bmode(
    anatomy: Anatomy, knobs: dict, rng: np.random.Generator, domain: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(8-bit B-mode image, envelope before log compression, mask of coherent-line pixels)."""
    labels = anatomy.labels
    zoom, freq = knobs["zoom"], knobs["frequency_mhz"]
    sig_ax, sig_lat = psf_sigmas(freq, zoom)

    # --- 1. echo level map in dB ------------------------------------------------------------------
    table = ECHO_DB[domain] + rng.normal(0.0, 1.5, 10).astype(np.float32)
    table[DORSAL] = rng.uniform(-46.0, -28.0)  # gel/saline to bright muscle-fat
    # One lookup gives class level plus membrane profile: bright core, dimmer band edges (the annotated
    # band is wider than the echo). Index = class * 256 + position in the layer (0..255).
    lut = (table[:, None] + PROFILE_DROP_DB[:, None] * (_PROFILE[None, :] - np.float32(1.0))).ravel()
    db = np.take(lut, (labels.astype(np.uint16) << 8) | anatomy.relpos)
    # K-type texture: isotropic blobs (hematoma, ventral, membranes) and laterally striated (dorsal muscle).
    blobs = _coarse_texture_db(rng, 1.2, 4)
    dorsal_rows = int(min(H, np.ceil(anatomy.boundaries[L_DURA - 1].max()) + 2))
    blobs[:dorsal_rows] = np.where(
        labels[:dorsal_rows] == DORSAL,
        np.float32(3.5) * smooth_field(rng, (dorsal_rows, W), (3.0, 25.0)),
        blobs[:dorsal_rows],
    )
    db += blobs * np.take(TEXTURE, labels)
    gel = anatomy.params["gel_rows"]
    if gel >= 1:
        top = labels[: int(gel)]
        db[: int(gel)] = np.where(top == DORSAL, np.float32(-50.0), db[: int(gel)])
    if anatomy.injured and rng.random() < 0.2:  # subacute: hypoechoic cysts inside the clot
        cysts = smooth_field(rng, (H, W), (8.0, 12.0)) > 1.3
        db = np.where(cysts & (labels == HEMATOMA), db - np.float32(14.0), db)
    db = cv2.GaussianBlur(db, (7, 3), sigmaX=1.5, sigmaY=0.8)  # tissue edges are not pixel-sharp

    # --- 3a. depth attenuation with partial TGC, focal bump, shadows (in dB, before the scatterers) -----
    rows = np.arange(H, dtype=np.float32)
    depth_cm = rows * AXIAL_MM_PER_PX / zoom / 10.0
    att = -2.0 * knobs["attenuation_db_cm_mhz"] * freq * depth_cm * (1.0 - knobs["tgc_fraction"])
    focus = rng.uniform(0.35, 0.65) * H
    att += rng.uniform(1.5, 4.0) * np.exp(-0.5 * ((rows - focus) / 55.0) ** 2)
    att = att.astype(np.float32)
    db += att[:, None]
    if rng.random() < 0.25:  # acoustic shadow below a calcification / bone fragment / bubble
        cx, width = rng.uniform(0, W), rng.uniform(6, 25)
        start = anatomy.boundaries[L_DURA - 1] + rng.uniform(0, 40)
        shade = rng.uniform(6.0, 14.0) * np.exp(-0.5 * ((np.arange(W) - cx) / width) ** 2)
        db -= (rows[:, None] > start[None, :]) * shade[None, :].astype(np.float32)

    power = cv2.exp(db * np.float32(np.log(10.0) / 10.0))
    power += np.float32(10.0 ** (knobs["noise_floor_db"] / 10.0))  # electronic noise: independent, powers add

    # --- 1b/2. complex scatterers (Rayleigh magnitude, uniform phase) and separable PSF ----------------
    uniform = rng.random((2, H, W), dtype=np.float32)
    magnitude = cv2.sqrt(cv2.log(uniform[0] + np.float32(1e-12)) * -power)  # E|s|^2 = power
    re, im = cv2.polarToCart(magnitude, uniform[1] * np.float32(2.0 * np.pi))
    kx, ky = 2 * int(np.ceil(3 * sig_lat)) + 1, 2 * int(np.ceil(3 * sig_ax)) + 1
    norm = np.float32(np.sqrt(4.0 * np.pi * sig_ax * sig_lat))  # unit power out for unit power in
    re = cv2.GaussianBlur(re, (kx, ky), sigmaX=sig_lat, sigmaY=sig_ax, borderType=cv2.BORDER_REFLECT) * norm
    im = cv2.GaussianBlur(im, (kx, ky), sigmaX=sig_lat, sigmaY=sig_ax, borderType=cv2.BORDER_REFLECT) * norm

    # --- coherent (specular) echoes: Rician on membranes ------------------------------------------------
    lines = _Lines(sig_ax, labels)
    b = anatomy.boundaries
    gain_at = lambda row: np.float32(10.0) ** (np.interp(row, rows, att) / 20.0)  # noqa: E731
    jitter = lambda: 10.0 ** (rng.normal(0.0, 1.5) / 20.0)  # noqa: E731
    dura_mid = 0.5 * (b[L_DURA - 1] + b[L_CSF - 1])
    pia_mid = 0.5 * (b[L_PIA - 1] + b[L_CORD - 1])
    complex_cols = labels[np.clip(dura_mid.astype(int), 0, H - 1), np.arange(W)] == DURA_PIA
    dura_amp = 10 ** (-4 / 20) * jitter() * _gated(rng, rng.uniform(0.6, 0.95)) * gain_at(dura_mid)
    lines.add(dura_mid, dura_amp, DURA)
    lines.add(pia_mid, 10 ** (-7 / 20) * jitter() * _gated(rng, rng.uniform(0.6, 0.95)) * gain_at(pia_mid), PIA)
    if complex_cols.any():
        mid = 0.5 * (b[L_DURA - 1] + b[L_CORD - 1])
        lines.add(mid, 10 ** (-5 / 20) * jitter() * _gated(rng, 0.85) * gain_at(mid) * complex_cols, DURA_PIA)
    vdura_mid = 0.5 * (b[L_VDURA - 1] + b[L_VDURA])
    lines.add(vdura_mid, 10 ** (-9 / 20) * _gated(rng, 0.7) * gain_at(vdura_mid), DURA)
    vpia_mid = 0.5 * (b[L_VPIA - 1] + b[L_VPIA])
    lines.add(vpia_mid, 10 ** (-11 / 20) * _gated(rng, 0.7) * gain_at(vpia_mid), PIA)
    # Faint, dashed central canal (not annotated in the release) and a weak reverberation of the dura.
    cord_level = 10 ** (table[CORD] / 20)
    canal_amp = cord_level * rng.uniform(1.2, 2.5) * _gated(rng, 0.6, cell=25.0) * gain_at(anatomy.canal_row)
    lines.add(anatomy.canal_row, canal_amp, CORD)
    lines.add(2.0 * dura_mid, dura_amp * np.float32(10 ** (rng.uniform(-30, -24) / 20)))  # probe-dura-probe echo
    if domain == "human":  # nerve rootlets floating in the wide CSF: weakly specular, mostly speckled
        csf_top, csf_bottom = b[L_CSF - 1], b[L_PIA - 1]
        x = np.arange(W, dtype=np.float32)
        strands = _Lines(0.9, labels)
        for _ in range(int(rng.integers(2, 6))):
            frac = rng.uniform(0.15, 0.85)
            row = (
                csf_top
                + frac * (csf_bottom - csf_top)
                + rng.uniform(-0.08, 0.08) * (x - W / 2)
                + 4.0 * np.sin(2 * np.pi * x / rng.uniform(150, 600) + rng.uniform(0, 6.3))
            )
            gate = _gated(rng, rng.uniform(0.4, 0.8), cell=60.0)
            strands.add(row, (10 ** (rng.uniform(-30, -24) / 20) * gate * gain_at(row)).astype(np.float32), CSF)
            lines.add(row, (10 ** (rng.uniform(-34, -28) / 20) * gate * gain_at(row)).astype(np.float32), CSF)
        strand_amp, strand_mask = strands.result()
        strand_power = strand_amp * strand_amp
        scatter = rng.random((2, H, W), dtype=np.float32)  # strands scatter diffusely as well (speckled)
        strand_mag = cv2.sqrt(cv2.log(scatter[0] + np.float32(1e-12)) * -strand_power)
        s_re, s_im = cv2.polarToCart(strand_mag, scatter[1] * np.float32(2.0 * np.pi))
        re += cv2.GaussianBlur(s_re, (kx, ky), sigmaX=sig_lat, sigmaY=sig_ax) * norm
        im += cv2.GaussianBlur(s_im, (kx, ky), sigmaX=sig_lat, sigmaY=sig_ax) * norm
        lines.mask |= np.pad(strand_mask, ((lines.pad, lines.pad), (0, 0))).ravel()
    line_field, line_mask = lines.result()
    re += line_field

    # --- 3b/4. envelope and log compression ------------------------------------------------------------
    envelope = cv2.magnitude(re, im)
    dynamic_range = float(knobs["dynamic_range_db"])
    # grey = 255/DR * (20 log10(env) + gain + DR): one cv2.log and one affine map.
    to_db = 20.0 / np.log(10.0)
    grey = cv2.log(envelope + np.float32(1e-7))
    scale = 255.0 / dynamic_range
    grey = grey * np.float32(to_db * scale) + np.float32((knobs["gain_db"] + 2.0 + dynamic_range) * scale + 0.5)
    grey = cv2.GaussianBlur(grey, (5, 3), sigmaX=0.6, sigmaY=0.5)
    image = np.clip(grey, 0, 255).astype(np.uint8)
    if anatomy.background is not None:
        image[anatomy.background] = 0
    return image, envelope, line_mask


def envelope_snr(
    envelope: np.ndarray,
    labels: np.ndarray,
    cls: int = CORD,
    *,
    exclude: np.ndarray | None = None,
    window: tuple[int, int] = (24, 48),
    margin: tuple[int, int] = (6, 12),
) -> float:
    """Median mean/std of the envelope over windows lying wholly inside class `cls` (Rayleigh: 1.91).

    `margin` (rows, cols) keeps windows off label edges, where the PSF mixes neighbouring tissues;
    `exclude` (e.g. the coherent-line mask) removes windows touching it. NaN when no window fits.
    """
    inside = (labels == cls).astype(np.uint8)
    if exclude is not None:
        inside[exclude] = 0
    kernel = np.ones((2 * margin[0] + 1, 2 * margin[1] + 1), np.uint8)
    valid = cv2.erode(inside, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    values = []
    wh, ww = window
    for y in range(0, H - wh + 1, wh // 2):
        for x in range(0, W - ww + 1, ww // 2):
            if valid[y : y + wh, x : x + ww].all():
                patch = envelope[y : y + wh, x : x + ww].astype(np.float64)
                values.append(patch.mean() / patch.std())
    return float(np.median(values)) if values else float("nan")


__all__ = ["ECHO_DB", "envelope_snr", "psf_sigmas", "render_bmode"]
