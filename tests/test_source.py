"""Data provenance: every dataset a run reads is labelled phantom, verified real, or unverified."""

from __future__ import annotations

import json

import pytest

from spinebench.data.source import MANIFEST, PHANTOM_STAMP, describe_source, prepare_dataset
from spinebench.errors import DataError


def test_unstamped_folder_is_real_but_unverified(detection_release):
    spec = prepare_dataset("detection_real", "detection", detection_release)
    assert spec.source["kind"] == "real" and spec.source["verified"] is False
    assert "unverified" in spec.label and not spec.is_phantom


def test_phantom_stamp_is_found_from_a_split_folder(segmentation_release):
    (segmentation_release / PHANTOM_STAMP).write_text(json.dumps({"synthetic": True, "domain": "human", "seed": 3}))
    source = describe_source(segmentation_release / "test_images")
    assert source["kind"] == "phantom" and source["stamp"]["domain"] == "human"
    spec = prepare_dataset("x", "segmentation", segmentation_release)
    assert spec.is_phantom and "PHANTOM (human, seed 3)" in spec.label
    assert spec.source["domain"] == "human"  # the stamp's, over the config's default


def test_a_real_folder_takes_its_domain_from_the_config(segmentation_release):
    """The report put a real set on the zero-shot side only when its data.name held "human"."""
    assert prepare_dataset("seg", "segmentation", segmentation_release).source["domain"] == "porcine"
    assert prepare_dataset("mine", "segmentation", segmentation_release, domain="human").source["domain"] == "human"
    with pytest.raises(DataError, match="data.domain must be porcine or human, got 'pig'"):
        prepare_dataset("seg", "segmentation", segmentation_release, domain="pig")


def test_a_human_detection_set_is_refused(detection_release):
    """The report draws human-side tables for segmentation only: such a run showed up in no table."""
    with pytest.raises(DataError, match="a human detection set has no place in the paper's tables"):
        prepare_dataset("det", "detection", detection_release, domain="human")


@pytest.mark.parametrize("data", ["segmentation_real", "segmentation_phantom", "detection_real"])
def test_every_data_config_takes_a_domain_override(data):
    """The README's `data.domain=human` met Hydra's "Key 'domain' is not in struct" on every config but one."""
    from hydra import compose, initialize_config_dir

    from spinebench.hydra_run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", "data.domain=human", "data.root=/r"])
    assert cfg.data.domain == "human"


@pytest.mark.parametrize("task, message", [("segmentation", "no segmentation release"), ("tracking", "unknown task")])
def test_wrong_task_or_missing_folder_is_a_clear_error(detection_release, tmp_path, task, message):
    with pytest.raises(DataError, match=message):
        prepare_dataset("x", task, detection_release)
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset("x", "detection", tmp_path / "missing")


@pytest.mark.parametrize("stamp", [PHANTOM_STAMP, MANIFEST])
def test_an_unreadable_provenance_file_is_a_clear_error_naming_it(stamp, detection_release):
    """A provenance file cut short (a copy or a fetch stopped part-way) decides what every result is labelled:
    it is refused naming the file, not read as a JSON error from nowhere, nor skipped (the label would change)."""
    (detection_release / stamp).write_text('{"synthetic": tr')
    with pytest.raises(DataError, match=f"{stamp}: unreadable"):
        prepare_dataset("detection_real", "detection", detection_release)


def test_a_phantom_generation_killed_half_way_is_redone_not_used(tmp_path, monkeypatch):
    from spinebench.data.phantom import writer

    root, phantom = tmp_path / "det", {"n_train": 6, "n_val": 2, "n_test": 2, "seed": 0}
    real_write_one, written = writer._write_one, []

    def killed_after_three(job):
        if len(written) == 3:
            raise KeyboardInterrupt("killed")
        written.append(job)
        real_write_one(job)

    monkeypatch.setattr(writer, "_write_one", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("detection_phantom", "detection", root, phantom=phantom)
    assert json.loads((root / PHANTOM_STAMP).read_text())["complete"] is False
    monkeypatch.setattr(writer, "_write_one", real_write_one)
    spec = prepare_dataset("detection_phantom", "detection", root, phantom=phantom)
    assert spec.source["stamp"]["complete"] is True
    assert {split: len(list((root / split).glob("*.png"))) for split in ("train", "val", "test")} == {
        "train": 6,
        "val": 2,
        "test": 2,
    }


def test_a_phantom_other_than_the_one_asked_for_is_written_over_not_used(tmp_path, caplog):
    """data.root= of another phantom (or one an older generator wrote) was used as it was, under this config's
    seed and counts."""
    root = tmp_path / "det"
    prepare_dataset("detection_phantom", "detection", root, phantom={"n_train": 2, "n_val": 1, "n_test": 1, "seed": 0})
    asked = {"n_train": 3, "n_val": 1, "n_test": 1, "seed": 5}
    spec = prepare_dataset("detection_phantom", "detection", root, phantom=asked)
    assert (spec.source["stamp"]["seed"], spec.source["stamp"]["counts"]["train"]) == (5, 3)
    assert len(list((root / "train").glob("*.png"))) == 3
    assert "holds another phantom (seed 0, asked 5; counts" in caplog.text
    stamp = (root / PHANTOM_STAMP).stat().st_mtime_ns
    prepare_dataset("detection_phantom", "detection", root, phantom=asked)  # the same one: used as it is
    assert (root / PHANTOM_STAMP).stat().st_mtime_ns == stamp


def test_a_phantom_copied_without_its_stamp_is_still_labelled_phantom(tmp_path):
    """It was labelled real (unverified) and its results went beside the paper's: the phantom's PNGs say what
    they are in a text chunk."""
    root = tmp_path / "det"
    prepare_dataset("detection_phantom", "detection", root, phantom={"n_train": 2, "n_val": 1, "n_test": 1, "seed": 0})
    (root / PHANTOM_STAMP).unlink()
    spec = prepare_dataset("detection_real", "detection", root)
    assert spec.is_phantom and spec.label.startswith(f"PHANTOM (no {PHANTOM_STAMP}) - synthetic")
    assert "text chunk" in spec.source["note"]


def test_a_segmentation_phantom_without_its_stamp_is_phantom_and_a_plain_folder_stays_real(
    tmp_path, segmentation_release
):
    """The text-chunk check covers the segmentation layout too (from the root or one split folder), and PNGs
    without the chunk are not taken for a phantom."""
    root = tmp_path / "seg_copy"
    prepare_dataset(
        "segmentation_phantom", "segmentation", root, phantom={"n_train": 2, "n_val": 1, "n_test": 1, "seed": 0}
    )
    (root / PHANTOM_STAMP).unlink()
    spec = prepare_dataset("segmentation_real", "segmentation", root)
    assert spec.is_phantom and spec.source["kind"] == "phantom" and "PHANTOM" in spec.label
    assert describe_source(root / "test_images")["kind"] == "phantom"
    real = prepare_dataset("segmentation_real", "segmentation", segmentation_release)
    assert real.source["kind"] == "real" and real.source["verified"] is False
    assert real.label.startswith("unverified folder")


def test_a_phantom_domain_is_set_by_the_phantom_s_own_key(tmp_path):
    """data.domain=human on a porcine phantom was accepted and ignored (the stamp won, the config said human)."""
    phantom = {"n_train": 1, "n_val": 1, "n_test": 1, "seed": 0, "domain": "porcine"}
    with pytest.raises(
        DataError, match="data.domain=human but the phantom asked for is porcine: set data.phantom.domain"
    ):
        prepare_dataset("p", "segmentation", tmp_path / "p", phantom=phantom, domain="human")
    with pytest.raises(DataError, match="use data.domain=porcine and data.phantom.domain=porcine"):
        prepare_dataset("p", "detection", tmp_path / "p", phantom={**phantom, "domain": "human"}, domain="human")
    assert not (tmp_path / "p").exists()  # refused before any phantom is written
