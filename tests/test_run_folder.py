"""The run folder's states and the finished result kept aside while a run is redone (RunFolder), and the record's
schema (RunRecord, migrate)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from spinebench.contract import SCHEMA_VERSION, RunRecord, migrate
from spinebench.errors import DataError
from spinebench.run_folder import RunFolder

ABOUT = {
    "task": "segmentation",
    "model": "unet",
    "model_name": "unet_light",
    "data": {"name": "seg_phantom", "kind": "phantom", "domain": "porcine"},
}


def record(**changes) -> RunRecord:
    fields = dict(
        task="segmentation",
        model="unet",
        model_name="unet_light",
        metrics={"mean_dice": 0.5},
        data={"name": "seg_phantom", "kind": "phantom", "domain": "porcine"},
        test_images=4,
        test_split_images=4,
        extra={"best_epoch": 1},
    )
    return RunRecord(**{**fields, **changes})


def finished_folder(path: Path) -> RunFolder:
    folder = RunFolder(path)
    folder.begin("seed: 0\n", {"git": {"commit": "abc"}}, ABOUT, keep_finished=True)
    (path / "checkpoints").mkdir()
    (path / "checkpoints/last.pt").write_bytes(b"epoch 1")
    folder.trained()
    folder.finish(record())
    return folder


def test_states_are_written_at_each_transition(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.begin("seed: 0\n", {}, ABOUT, keep_finished=True)
    assert folder.status["state"] == "started" and folder.status["model"] == "unet" and not folder.is_finished
    with pytest.raises(DataError), folder.attempt():
        raise DataError("test_0.png: unreadable or truncated image")
    assert folder.status["state"] == "failed"
    assert folder.status["error"] == "test_0.png: unreadable or truncated image"
    assert folder.status["traceback"] is None  # a user's mistake needs no traceback
    folder.begin("seed: 0\n", {}, ABOUT, keep_finished=True)
    assert folder.status["state"] == "started" and folder.status["error"] is None
    doc = folder.finish(record())
    assert folder.status["state"] == "finished" and folder.is_finished
    assert json.loads(folder.file("metrics.json").read_text()) == doc
    assert doc["best_epoch"] == 1 and "extra" not in doc  # the adapter's keys sit beside the fields


def test_a_redo_that_stops_before_training_gives_the_finished_result_back(tmp_path):
    folder = finished_folder(tmp_path / "run")
    before = folder.file("metrics.json").read_bytes()
    folder.begin("seed: 1\n", {}, ABOUT, keep_finished=True)
    assert not folder.is_finished  # unfinished until the redo's own metrics.json lands
    with pytest.raises(DataError), folder.attempt():
        raise DataError("train_3.png: unreadable")
    assert folder.file("metrics.json").read_bytes() == before and folder.status["state"] == "finished"
    assert folder.file("config.yaml").read_text() == "seed: 0\n"  # the config that describes the result
    assert not list(folder.path.glob("*.previous"))


def test_a_redo_that_trained_drops_the_old_result(tmp_path):
    folder = finished_folder(tmp_path / "run")
    folder.begin("seed: 1\n", {}, ABOUT, keep_finished=True)
    time.sleep(0.01)
    folder.file("checkpoints/last.pt").write_bytes(b"epoch 1 of the redo")  # newer than the kept result
    with pytest.raises(RuntimeError), folder.attempt():
        raise RuntimeError("killed in the test split")
    assert not folder.is_finished and folder.status["state"] == "failed"
    assert (
        folder.status["error"] == "RuntimeError: killed in the test split" and "Traceback" in folder.status["traceback"]
    )
    assert not list(folder.path.glob("*.previous"))


def test_a_killed_redo_is_settled_at_the_next_start(tmp_path):
    folder = finished_folder(tmp_path / "run")
    before = folder.file("metrics.json").read_bytes()
    folder.begin("seed: 1\n", {}, ABOUT, keep_finished=True)  # then SIGKILL: nothing else runs
    RunFolder(folder.path).settle_kept()
    assert folder.file("metrics.json").read_bytes() == before


def test_a_killed_redo_never_restores_over_newer_checkpoints(tmp_path):
    folder = finished_folder(tmp_path / "run")
    folder.begin("seed: 1\n", {}, ABOUT, keep_finished=True)
    time.sleep(0.01)
    folder.file("checkpoints/last.pt").write_bytes(b"epoch 1 of the redo")
    RunFolder(folder.path).settle_kept()
    assert not folder.is_finished and not list(folder.path.glob("*.previous"))


def test_an_evaluation_redone_is_scored_anew(tmp_path):
    folder = finished_folder(tmp_path / "eval")
    folder.begin("seed: 0\n", {}, ABOUT, keep_finished=False)
    assert not folder.is_finished and not list(folder.path.glob("*.previous"))


def test_only_an_untouched_folder_is_dropped(tmp_path):
    untouched = RunFolder(tmp_path / "outputs/data/a")
    untouched.begin("x: 1\n", {}, ABOUT, keep_finished=True)
    (untouched.path / "train.log").write_text("error\n")
    trained = finished_folder(tmp_path / "outputs/data/b")
    assert untouched.drop_if_untouched() and not untouched.path.exists()
    assert not trained.drop_if_untouched() and trained.is_finished


def test_the_record_round_trips_and_keeps_the_adapters_keys(tmp_path):
    folder = finished_folder(tmp_path / "run")
    read = folder.record()
    assert read.to_json() == record().to_json()
    assert read.extra == {"best_epoch": 1} and read.schema == SCHEMA_VERSION
    with pytest.raises(ValueError, match="has no 'metrics'"):
        RunRecord.from_json(
            {"task": "detection", "model": "ssd300", "model_name": "ssd300", "data": {}, "schema": SCHEMA_VERSION}
        )


def test_a_record_from_before_the_schema_is_migrated():
    old = {
        "task": "segmentation",
        "model": "unet",
        "model_name": "unet_light",
        "split": "test",
        "metrics": {"mean_dice": 0.4, "n_images": 3},
        "data": {
            "name": "segmentation_human_phantom",
            "kind": "phantom",
            "label": "PHANTOM",
            "stamp": {"domain": "human", "counts": {"test": 64}},
        },
        "best_epoch": 2,
    }
    env = {
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "device": "cpu (x)",
        "data": {"root": "/data/x", "kind": "phantom"},
    }
    doc = migrate(old, env)
    assert doc["schema"] == SCHEMA_VERSION and doc["git"]["commit"] == "0123456789abcdef"
    assert doc["data"]["domain"] == "human" and doc["data"]["root"] == "/data/x"
    assert doc["test_images"] == 3 and doc["test_split_images"] == 64
    migrated = RunRecord.from_json(old, env)
    assert migrated.source == "phantom" and migrated.extra == {"best_epoch": 2}


@pytest.mark.parametrize(
    "data, trained_on, source",
    [
        ({"kind": "phantom"}, None, "phantom"),
        ({"kind": "real", "verified": True}, {"kind": "phantom"}, "phantom"),
        ({"kind": "real", "verified": True}, None, "real"),
        ({"kind": "real", "verified": False}, None, "unverified"),
        ({}, None, "unknown"),
    ],
)
def test_a_records_data_source(data, trained_on, source):
    assert record(data=data, trained_on=trained_on).source == source


def test_the_documented_record_is_the_schema():
    from helpers.records import documented_record_keys

    fields = [f.name for f in dataclasses.fields(RunRecord) if f.name != "extra"]
    assert sorted(documented_record_keys()[0]) == sorted(fields)
