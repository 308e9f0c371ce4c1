"""The synthetic phantom: release layout, realism invariants (phantom.md), determinism and safety."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH, NUM_SEGMENTATION_CLASSES
from spinebench.data.detection import parse_voc_xml, read_detection_split
from spinebench.data.images import read_gray, read_rgb
from spinebench.data.phantom import (
    envelope_snr,
    plan_split,
    psf_sigmas,
    render_planned,
    render_sample,
    write_phantom,
)
from spinebench.data.phantom.writer import phantom_differences
from spinebench.data.segmentation import decode_mask, read_segmentation_split
from spinebench.errors import ConfigError, DataError

BG, DURA, PIA, CSF, CORD, DORSAL, HEM, VENTRAL, DURA_PIA, DURA_VENTRAL = range(10)
TARGET_SHARES = np.array([0.010, 0.074, 0.074, 0.061, 0.42, 0.20, 0.036, 0.046, 0.029, 0.030])


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def samples() -> list:
    """40 porcine samples, 56% injured (the segmentation release's share)."""
    return [render_sample(seed, "porcine", injured=seed % 25 < 14, animal=seed % 16 + 1) for seed in range(40)]


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory) -> Path:
    return write_phantom(
        "segmentation", tmp_path_factory.mktemp("seg") / "phantom", n_train=8, n_val=3, n_test=3, seed=0
    )


# --- layout and format ------------------------------------------------------------------------------------


def test_segmentation_layout_is_readable_by_the_project_reader(seg_root):
    meta = json.loads((seg_root / "PHANTOM.json").read_text())
    assert meta["synthetic"] is True and meta["generator"] == "spinebench.data.phantom" and meta["version"] == 1
    assert meta["task"] == "segmentation" and meta["counts"] == {"train": 8, "val": 3, "test": 3}
    assert "not the Kumar" in meta["note"] and meta["parameters"]
    for split, n in meta["counts"].items():
        pairs = read_segmentation_split(seg_root, split)
        assert len(pairs) == n
        for pair in pairs:
            image = read_gray(pair.image)
            assert image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and image.dtype == np.uint8
            labels, unknown = decode_mask(read_rgb(pair.mask))
            assert unknown == 0 and labels.max() < NUM_SEGMENTATION_CLASSES
            injured = "_post_" in pair.image.name
            assert injured == bool((labels == HEM).any())  # only injured images show a hematoma
            if not injured:
                assert not (labels == DURA_PIA).any()
            assert image.std() > 10  # speckle, not flat colours


def test_detection_layout_boxes_and_negatives(tmp_path):
    root = write_phantom("detection", tmp_path / "det", n_train=10, n_val=3, n_test=3, seed=3, workers=2)
    plan = {item["name"] + ".png": item for item in plan_split("detection", "porcine", 3, "train", 10)}
    assert sum(item["injured"] for item in plan.values()) == round(10 * 1368 / 2245)
    samples = read_detection_split(root, "train")
    assert len(samples) == 10
    for sample in samples:
        assert (sample.width, sample.height) == (IMAGE_WIDTH, IMAGE_HEIGHT)
        item = plan[sample.image.name]
        if not item["injured"]:
            assert sample.is_negative and "_pre_" in sample.image.name
            if sample.annotation is not None:
                assert parse_voc_xml(sample.annotation).objects == []
            continue
        assert "_post_" in sample.image.name and sample.annotation is not None
        assert len(sample.boxes) == 1 and sample.labels.tolist() == [0]
        xmin, ymin, xmax, ymax = sample.boxes[0]
        assert 0 <= xmin < xmax <= IMAGE_WIDTH and 0 <= ymin < ymax <= IMAGE_HEIGHT
        # The box is the tight box of the lesion in the label map the writer rendered for this image.
        rendered = render_planned("detection", "porcine", 3, "train", item)
        assert np.array_equal(read_gray(sample.image), rendered.image)
        ys, xs = np.nonzero(rendered.labels == HEM)
        assert (xmin, ymin, xmax, ymax) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        text = sample.annotation.read_text()
        for tag in (
            "<folder>train</folder>",
            f"<filename>{sample.image.name}</filename>",
            "<width>690</width>",
            "<height>275</height>",
            "<depth>",
            "<name>hematoma</name>",
        ):
            assert tag in text


# --- realism ----------------------------------------------------------------------------------------------


def test_envelope_is_rayleigh_in_uniform_cord(samples):
    snrs = [envelope_snr(s.envelope, s.labels, CORD, exclude=s.coherent) for s in samples[:12]]
    assert not np.isnan(snrs).any()
    assert abs(np.median(snrs) - 1.91) < 0.1
    assert all(abs(v - 1.91) < 0.25 for v in snrs)
    # The log-compressed image is not Rayleigh: the check must use the envelope.
    s = samples[0]
    assert abs(envelope_snr(s.image.astype(np.float32), s.labels, CORD, exclude=s.coherent) - 1.91) > 0.5


def test_grey_levels_are_ordered(samples):
    injured = [s for s in samples if s.injured]
    mean = {
        c: np.mean([s.image[s.labels == c].mean() for s in injured if (s.labels == c).any()])
        for c in (DURA, PIA, CSF, CORD, HEM)
    }
    assert mean[CSF] < mean[CORD] < mean[HEM]
    assert min(mean[DURA], mean[PIA]) > mean[HEM]
    for s in injured[:8]:  # also per image, not only on average
        assert s.image[s.labels == CSF].mean() < s.image[s.labels == CORD].mean() < s.image[s.labels == HEM].mean()


def _runs(column: np.ndarray) -> list[int]:
    column = np.where(column == HEM, CORD, column)
    keep = np.concatenate([[True], column[1:] != column[:-1]])
    runs = column[keep].tolist()
    while runs and runs[-1] == BG:
        runs.pop()
    return runs


ORDERS = (
    [DORSAL, DURA, CSF, PIA, CORD, PIA, CSF, DURA, VENTRAL],
    [DORSAL, DURA_PIA, CORD, PIA, CSF, DURA, VENTRAL],
    [DORSAL, DURA, CSF, PIA, CORD, PIA, DURA_VENTRAL, VENTRAL],
    [DORSAL, DURA_PIA, CORD, PIA, DURA_VENTRAL, VENTRAL],
)


def test_per_column_label_order(samples):
    checked = 0
    for s in samples[:20]:
        for x in range(3, IMAGE_WIDTH, 37):
            runs = _runs(s.labels[:, x])
            if not runs:  # a padding column
                continue
            assert any(runs == order[: len(runs)] for order in ORDERS), (x, runs)
            assert len(runs) >= 3 and runs[0] == DORSAL
            checked += 1
    assert checked > 300


def test_class_shares_near_the_release(samples):
    counts = sum(np.bincount(s.labels.ravel(), minlength=10) for s in samples)
    shares = counts / counts.sum()
    ratio = shares / TARGET_SHARES
    assert np.all((ratio > 0.5) & (ratio < 2.0)), dict(enumerate(np.round(ratio, 2)))
    present = sum((np.bincount(s.labels.ravel(), minlength=10) > 0).astype(int) for s in samples)
    assert np.all(present > 0)  # all ten classes occur
    assert present[BG] < len(samples) and present[CORD] == len(samples)
    # Bands are thick as annotated (~20 px), not one-pixel lines.
    dura_rows = [np.median((s.labels == DURA)[:120].sum(axis=0)[(s.labels == DURA)[:120].any(axis=0)]) for s in samples]
    assert 14 <= np.median(dura_rows) <= 28


def test_boxes_are_tight_and_negatives_have_none(samples):
    for s in samples:
        if not s.injured:
            assert s.box is None and not (s.labels == HEM).any()
            continue
        ys, xs = np.nonzero(s.labels == HEM)
        assert s.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= s.box[0] < s.box[2] <= IMAGE_WIDTH and 0 <= s.box[1] < s.box[3] <= IMAGE_HEIGHT


def _lateral_correlation_length(s) -> float:
    """Lag (px) where the envelope's lateral autocorrelation in the cord falls below 0.5."""
    env = s.envelope / s.envelope.mean()
    rows = np.nonzero((s.labels == CORD).mean(axis=1) > 0.95)[0]
    patch = env[rows] - env[rows].mean(axis=1, keepdims=True)
    for lag in range(1, 40):
        c = (patch[:, :-lag] * patch[:, lag:]).mean() / patch.var()
        if c < 0.5:
            return lag
    return 40.0


def test_human_domain_differs_measurably(samples):
    human = [render_sample(seed, "human", injured=False) for seed in range(6)]
    pig = [s for s in samples if not s.injured][:6]
    csf = lambda group: np.mean([(s.labels == CSF).sum() / IMAGE_WIDTH for s in group])  # noqa: E731
    assert csf(human) > 2.5 * csf(pig)
    assert np.mean([_lateral_correlation_length(s) for s in human]) > 1.3 * np.mean(
        [_lateral_correlation_length(s) for s in pig]
    )
    assert psf_sigmas(8.0, 1.0)[0] > psf_sigmas(12.0, 1.0)[0]


# --- determinism and safety -------------------------------------------------------------------------------


def test_same_seed_same_bytes_workers_agree_other_seed_differs(seg_root, tmp_path):
    again = write_phantom("segmentation", tmp_path / "again", n_train=8, n_val=3, n_test=3, seed=0, workers=2)
    assert tree_digest(again) == tree_digest(seg_root)
    other = write_phantom("segmentation", tmp_path / "other", n_train=8, n_val=3, n_test=3, seed=1)
    a = {h for name, h in tree_digest(seg_root).items() if name.endswith(".png")}
    b = {h for name, h in tree_digest(other).items() if name.endswith(".png")}
    assert not a & b
    # Regenerating over an existing phantom is allowed and gives the same files.
    write_phantom("segmentation", again, n_train=8, n_val=3, n_test=3, seed=0)
    assert tree_digest(again) == tree_digest(seg_root)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "classification"},
        {"domain": "feline"},
        {"n_train": -1},
        {"n_test": -5},
        {"workers": 0},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    args = {"task": "segmentation", "out": tmp_path / "x", "n_train": 1, "n_val": 0, "n_test": 0} | kwargs
    with pytest.raises(ConfigError):
        write_phantom(**args)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_refuses_to_write_into_a_folder_with_other_data(tmp_path):
    real = tmp_path / "release"
    (real / "train_images").mkdir(parents=True)
    (real / "train_images" / "scan.png").write_bytes(b"not ours")
    with pytest.raises(DataError, match="refusing"):
        write_phantom("segmentation", real, n_train=1, n_val=0, n_test=0)
    assert (real / "train_images" / "scan.png").read_bytes() == b"not ours"
    # A phantom folder that someone added a foreign file to is refused as well.
    phantom = write_phantom("detection", tmp_path / "ph", n_train=1, n_val=0, n_test=0)
    (phantom / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        write_phantom("detection", phantom, n_train=1, n_val=0, n_test=0)
    assert (phantom / "notes.txt").exists()


def test_parallel_writing_from_a_script_on_stdin_does_not_hang(tmp_path):
    """`python - <<EOF` scripts have __main__.__file__ == '<stdin>': pool workers could not start (and were
    respawned forever); the writer falls back to one process."""
    script = (
        f"from spinebench.data.phantom import write_phantom\n"
        f"write_phantom('detection', {str(tmp_path / 'ph')!r}, n_train=4, n_val=1, n_test=1, workers=2)\n"
    )
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "cannot be re-imported" in proc.stderr
    assert len(list((tmp_path / "ph" / "train").glob("*.png"))) == 4


def test_parallel_writing_from_a_script_without_a_main_guard_stops_with_the_fix(tmp_path):
    """Workers import the main script again; without `if __name__ == "__main__":` each one dies at start. A Pool
    respawned them forever (a hang); the writer now stops in seconds and says what to change."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"from spinebench.data.phantom import write_phantom\n"
        f"write_phantom('detection', {str(tmp_path / 'ph')!r}, n_train=4, n_val=1, n_test=1, workers=2)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    # the error's line (multiprocessing's resource tracker may warn after it)
    error = [line for line in proc.stderr.splitlines() if line.startswith("RuntimeError: the phantom's worker")]
    assert len(error) == 1 and '__name__ == "__main__"' in error[0], proc.stderr[-800:]
    # never taken for a finished phantom: its stamp says incomplete, or is unreadable while a worker of the user's
    # script (which re-runs it, writer included) rewrites it as that worker dies
    differences = phantom_differences(tmp_path / "ph", "detection", n_train=4, n_val=1, n_test=1)
    assert differences and set(differences) <= {"complete False, asked True", "no readable PHANTOM.json"}, differences
