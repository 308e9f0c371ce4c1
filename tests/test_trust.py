"""Trust and failure (docs/trust.md): no code runs from a file a user is handed, synthetic data never passes as the
release, one command per run folder, a corrupted checkpoint is refused, impossible values are refused at config
time, every fault ends in one line with nothing half-written, and the report validates what it reads."""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from test_engine import SGD, _run
from test_report import _data_block, _read_csv, write_detection_run

from spinebench import atomic, pipeline
from spinebench.build import check_saved_targets, suite_targets
from spinebench.contract import RunRecord
from spinebench.data import fetch as fetch_module
from spinebench.data.fetch import fetch
from spinebench.data.source import MANIFEST, PHANTOM_STAMP, describe_source
from spinebench.engine.config import TrainerConfig
from spinebench.engine.loop import load_checkpoint, save_checkpoints
from spinebench.entry import check_writable_root, user_error
from spinebench.errors import ConfigError, DataError, RunStateError, WeightsError
from spinebench.hydra_run import CONFIG_DIR
from spinebench.report import run_report
from spinebench.run_folder import METRICS_FILE, RunFolder
from spinebench.weights import resolve_weights, search_dirs

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """A hostile pickle: unpickling it runs os.makedirs(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


# ------------------------------------------------------------------ 1. no code runs from a file a user is handed
def test_every_torch_load_reads_tensors_only():
    """Only ultralytics' own files in a YOLO run folder are unpickled (docs/trust.md says so): every other torch.load
    in src/ and benchmarks/ passes weights_only=True."""
    unsafe = []
    for path in [*ROOT.glob("src/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = [k for k in node.keywords if k.arg == "weights_only" and ast.unparse(k.value) == "True"]
                if not safe:
                    unsafe.append(str(path.relative_to(ROOT)))
    assert unsafe == ["src/spinebench/detection/yolo.py"], unsafe


def test_a_pretrained_file_with_a_pickled_object_runs_nothing(tmp_path):
    from spinebench.detection.models import load_pretrained

    marker, weights = tmp_path / "ran", tmp_path / "resnet50.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload(marker)}, weights)
    with pytest.raises(WeightsError, match=f"^model.weights={weights}: cannot read it"):
        load_pretrained(torch.nn.Linear(1, 1), weights)
    assert not marker.exists()


def test_auto_weights_never_come_from_the_working_directory(tmp_path, monkeypatch):
    """A file named like a pretrained one, dropped in the folder a command runs from, is not picked up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPINEBENCH_WEIGHTS", raising=False)
    (tmp_path / "yolov8m.pt").write_bytes(b"anything")
    assert tmp_path not in search_dirs(tmp_path / "cache")
    choice = resolve_weights("auto", ["yolov8m.pt"], tmp_path / "cache", "YOLOv8m")
    assert choice.path is None and not choice.pretrained


@pytest.mark.parametrize("target", ["os.makedirs", "spinebench.atomic.write_json", "builtins.exec", 7])
def test_a_run_folder_config_names_only_the_suite_s_models(target, tmp_path):
    marker = tmp_path / "ran"
    node = {"_target_": "spinebench.segmentation.benchmark.SegmentationBenchmark", "network": {"_target_": target}}
    node["network"]["name"] = str(marker)
    with pytest.raises(ConfigError, match=r"^model\.network\._target_=.*: not a model of this suite"):
        check_saved_targets(node, "model", suite_targets(CONFIG_DIR))
    assert not marker.exists()


def test_every_model_config_of_the_suite_passes_the_allow_list():
    known = suite_targets(CONFIG_DIR)
    for path in sorted(Path(CONFIG_DIR, "model").glob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path))
        if isinstance(node, dict) and "_target_" in node:
            check_saved_targets(node, "model", known)


def test_spinebench_eval_refuses_a_foreign_target_before_building_anything(tmp_path):
    """The whole path: a shared run folder's config.yaml asks for os.makedirs; nothing is created."""
    run, marker = tmp_path / "shared", tmp_path / "ran"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoints({"model": {}}, run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt")
    (run / METRICS_FILE).write_text("{}")
    saved = {"model": {"_target_": "os.makedirs", "name": str(marker)}, "trainer": {}}
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = OmegaConf.create({"data": {"_target_": "unused"}, "ckpt": str(run), "trainer": {}, "seed": 0})
    with pytest.raises(ConfigError, match=r"^model\._target_='os.makedirs': not a model of this suite"):
        pipeline.evaluate(cfg)
    assert not marker.exists()


# ------------------------------------------------------------------ 2. provenance
def _zip(folder: Path, archive: Path, wrapper: str = "release") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, f"{wrapper}/{path.relative_to(folder)}")
    return archive


def test_a_phantom_zipped_without_its_stamp_and_fetched_stays_phantom(tmp_path):
    from spinebench.data.phantom.writer import write_phantom

    phantom = write_phantom("detection", tmp_path / "ph", n_train=2, n_val=1, n_test=1)
    (phantom / PHANTOM_STAMP).unlink()
    fetch("detection", tmp_path / "data", archive=_zip(phantom, tmp_path / "ph.zip"))
    assert (tmp_path / "data" / MANIFEST).is_file()
    assert describe_source(tmp_path / "data" / "release")["kind"] == "phantom"


def test_an_archive_that_is_not_the_release_is_labelled_unverified_with_the_reason(detection_release, tmp_path):
    manifest = fetch("detection", tmp_path / "data", archive=_zip(detection_release, tmp_path / "d.zip"))
    assert manifest["release"] == {"matches": False, "differences": ["9 images, the release has 2245"]}
    source = describe_source(tmp_path / "data" / "release")
    assert source["verified"] is False and "9 images, the release has 2245" in source["note"]


def test_the_release_facts_are_the_manuscript_s():
    paper = yaml.safe_load((ROOT / "benchmarks" / "manuscript.yaml").read_text())["dataset"]
    for task, facts in fetch_module.RELEASE_FACTS.items():
        assert facts["images"] == paper[task]["images"] and facts["split"] == paper[task]["split"]
        assert facts["size"] == (paper["image_size"]["width"], paper["image_size"]["height"])


def test_archives_without_images_with_links_or_too_large_are_refused_before_extraction(tmp_path, monkeypatch):
    zeros = tmp_path / "zeros.zip"
    with zipfile.ZipFile(zeros, "w") as handle:
        handle.writestr("blob.bin", bytes(1000))
    with pytest.raises(DataError, match="holds no image"):
        fetch("detection", tmp_path / "a", archive=zeros)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as handle:
        info = zipfile.ZipInfo("r/train/x.png")
        info.external_attr = 0o120777 << 16  # a symlink member
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="is a link"):
        fetch("detection", tmp_path / "b", archive=link)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("r/train/x.png", bytes(10_000_000))
    monkeypatch.setattr(fetch_module.shutil, "disk_usage", lambda _: SimpleNamespace(free=1000))
    with pytest.raises(DataError, match=r"needs 10\.0 MB to extract"):
        fetch("detection", tmp_path / "c", archive=big)
    assert not any((tmp_path / name).exists() and any((tmp_path / name).iterdir()) for name in "abc")


def test_a_second_archive_into_the_same_folder_and_a_wrong_hash_are_refused(detection_release, tmp_path):
    archive = _zip(detection_release, tmp_path / "d.zip")
    fetch("detection", tmp_path / "data", archive=archive)
    with pytest.raises(DataError, match="not empty; fetch into a new folder"):
        fetch("detection", tmp_path / "data", archive=archive)
    fetch("detection", tmp_path / "data", archive=archive, force=True)
    with pytest.raises(DataError, match="is not the 00 given; not extracted"):
        fetch("detection", tmp_path / "other", archive=archive, expected_sha256="00")
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------ 3. one command per run folder
def test_a_second_command_on_a_folder_stops_naming_the_first(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        with pytest.raises(RunStateError, match=rf"^{folder.path}: another spinebench command \(pid {os.getpid()}\)"):
            with RunFolder(tmp_path / "run").lock():
                pass
    with RunFolder(tmp_path / "run").lock():  # released with the block
        pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    folder = RunFolder(tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX);"
            "f.write('4242'); f.flush(); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "run" / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    (tmp_path / "run").mkdir(exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunStateError, match=r"pid 4242"):
            with folder.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder.lock():
        pass


def test_the_training_command_takes_the_lock_before_touching_the_folder(tmp_path):
    from helpers.hydra import compose_cfg

    cfg = compose_cfg(
        "train", ["model=unet", "data=segmentation_phantom_tiny", "debug=smoke"], tmp_path, tmp_path / "c"
    )
    folder = RunFolder(Path(cfg.paths.output_dir))
    with folder.lock():
        with pytest.raises(RunStateError, match="another spinebench command"):
            pipeline.train(cfg)
    assert sorted(p.name for p in folder.path.iterdir()) == [".lock"]


# ------------------------------------------------------------------ 4. checkpoint integrity
def test_a_bit_flip_inside_a_checkpoint_is_refused_naming_the_file(tmp_path):
    last = tmp_path / "last.pt"
    save_checkpoints({"model": {"w": torch.full((4096,), 7, dtype=torch.uint8)}, "epoch": 1}, last)
    data = bytearray(last.read_bytes())
    data[data.index(bytes([7]) * 4096) + 100] ^= 0x01
    last.write_bytes(bytes(data))
    with pytest.raises(RunStateError, match=rf"^{last}: unreadable checkpoint \(corrupted: .*data/0 fails its CRC"):
        load_checkpoint(last)


def test_a_torch_file_without_a_checkpoint_s_keys_is_named(tmp_path):
    _run(tmp_path, 1)
    last = tmp_path / "checkpoints" / "last.pt"
    torch.save({"weights": torch.zeros(1)}, last)
    with pytest.raises(RunStateError, match=rf"^{last}: not a checkpoint of this suite \(it holds a dict of weights"):
        _run(tmp_path, 2)


# ------------------------------------------------------------------ 5. values
@pytest.mark.parametrize(
    "given, says",
    [
        ({"optimizer": {**SGD, "lr": float("nan")}}, "trainer.optimizer.lr must be a finite number, got nan"),
        ({"optimizer": {**SGD, "lr": float("inf")}}, "trainer.optimizer.lr must be a finite number, got inf"),
        ({"optimizer": {**SGD, "lr": -0.1}}, "trainer.optimizer.lr must be >= 0, got -0.1"),
        ({"optimizer": {**SGD, "weight_decay": -1}}, "trainer.optimizer.weight_decay must be >= 0"),
        ({"optimizer": {**SGD, "momentum": float("nan")}}, "trainer.optimizer.momentum must be a finite number"),
        ({"grad_clip": -1.0}, "trainer.grad_clip must be a finite number >= 0"),
        ({"grad_clip": float("nan")}, "trainer.grad_clip must be a finite number >= 0"),
    ],
)
def test_values_that_cannot_be_right_are_refused_at_config_time(given, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        TrainerConfig.from_config(given)


def test_a_schedule_s_own_negative_default_still_passes():
    TrainerConfig.from_config(
        {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2, "last_epoch": -1}}
    )


# ------------------------------------------------------------------ 6. faults
@pytest.mark.parametrize(
    "fault",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:783] . unexpected pos 64"),
    ],
)
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_no_partial_file(fault, tmp_path, monkeypatch):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoints({"model": {}, "epoch": 1}, last, best)
    before = last.read_bytes()

    def cut_short(state, path):
        Path(path).write_bytes(b"PK\x03\x04 half")
        raise fault

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(atomic.WriteError, match=rf"^{tmp_path / 'last.pt.writing'}: cannot write it \(.*free\)"):
        save_checkpoints({"model": {}, "epoch": 2}, last, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"] and last.read_bytes() == before


def test_a_read_only_disk_anywhere_in_a_command_is_one_line():
    error = user_error(OSError(errno.EROFS, "Read-only file system", "/ro/outputs/run/predictions/a.png"))
    assert isinstance(error, atomic.WriteError)
    assert str(error).startswith("/ro/outputs/run/predictions/a.png: cannot write it (Read-only file system;")
    assert user_error(OSError(errno.ENOENT, "No such file")) is None  # other OSErrors stay bugs


def test_a_status_write_on_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    path = atomic.write_json(tmp_path / "status.json", {"state": "started"})
    monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(atomic.WriteError, match="status.json: cannot write it"):
        atomic.write_json(path, {"state": "finished"})
    assert json.loads(path.read_bytes()) == {"state": "started"} and not path.with_suffix(".json.tmp").exists()


def test_a_read_only_checkout_is_named_before_hydra_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPINEBENCH_ROOT", raising=False)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="cannot be written \\(a read-only checkout\\?\\)"):
        check_writable_root(["model=unet"])
    check_writable_root([f"paths.root_dir={tmp_path}"])  # another place named: left to the command


# ------------------------------------------------------------------ 7. a redo never loses a finished result
def test_a_redo_killed_after_nothing_to_train_keeps_the_result(tmp_path):
    _run(tmp_path, 2)
    folder = RunFolder(tmp_path)
    (tmp_path / METRICS_FILE).write_text('{"finished": true}')
    folder.begin("config", {}, {}, keep_finished=True)  # the redo starts: the result is kept aside
    _run(tmp_path, 2)  # "nothing to train"; then the process is killed before it tests
    assert not folder.is_finished
    RunFolder(tmp_path).settle_kept()  # what the next command does first
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"finished": True}


# ------------------------------------------------------------------ 8. the report validates what it reads
@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: {**m, "data": "real"}, "has a 'data' that is not an object ('real')"),
        (lambda m: {**m, "metrics": {**m["metrics"], "mAP50": "0.9"}}, "has a metric mAP50 that is not a number"),
        (lambda m: {**m, "params": "many"}, "has a params that is not a non-negative integer ('many')"),
        (lambda m: {**m, "metrics": {**m["metrics"], "mAP50_95": 7.5}}, "has a metric mAP50_95 outside [0, 1] (7.5)"),
    ],
)
def test_an_invalid_record_is_skipped_and_named(change, says, tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    good, bad = tmp_path / "outputs" / "good", tmp_path / "outputs" / "bad"
    for run in (good, bad):
        write_detection_run(run, "ssd300", "ssd300", data, seed=9)
    (bad / METRICS_FILE).write_text(json.dumps(change(json.loads((bad / METRICS_FILE).read_text()))))
    assert run_report([tmp_path / "outputs"], tmp_path / "results", n_resamples=5, plots=False) == 0
    readme = (tmp_path / "results" / "README.md").read_text()
    assert f"{bad}: skipped, {METRICS_FILE} {says}" in readme
    (row,) = _read_csv(tmp_path / "results" / "detection.csv")
    assert row["run_dir"] == str(good.resolve())


def test_a_label_cannot_break_a_table_or_add_a_heading(tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data", label="evil | cell\n# Injected heading")
    write_detection_run(tmp_path / "outputs" / "r", "ssd300", "ssd300 |x\n## also", data, seed=9)
    assert run_report([tmp_path / "outputs"], tmp_path / "results", n_resamples=5, plots=False) == 0
    lines = (tmp_path / "results" / "README.md").read_text().splitlines()
    assert not [line for line in lines if line.startswith(("# Injected", "## also"))]
    widths, previous = [], False  # each table's rows have as many unescaped | as its header
    for line in lines:
        if line.startswith("|"):
            count = len(re.findall(r"(?<!\\)\|", line))
            if not previous:
                widths.append([])
            widths[-1].append(count)
        previous = line.startswith("|")
    assert widths and all(len(set(table)) == 1 for table in widths), widths
    assert any("evil | cell # Injected heading" in line for line in lines)


def test_a_report_that_stops_half_way_leaves_the_old_one_whole(tmp_path, monkeypatch):
    import spinebench.report.tables as tables

    data = _data_block("real", "detection_real", tmp_path / "data")
    write_detection_run(tmp_path / "outputs" / "r", "ssd300", "ssd300", data, seed=9)
    out = tmp_path / "results"
    assert run_report([tmp_path / "outputs"], out, n_resamples=5, plots=False) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []
    real = tables.write_csv

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[-1]))
        return real(*args)

    monkeypatch.setattr(tables, "write_csv", second_fails)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")  # a new README would differ
    assert run_report([tmp_path / "outputs"], out, n_resamples=5, plots=False) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results.writing")]


def test_record_round_trip_is_still_valid(tmp_path):
    from spinebench.report.collect import invalid_record

    doc = {"task": "detection", "model": "m", "model_name": "m", "data": {}, "metrics": {"mAP50": 0.5}, "params": 3}
    assert invalid_record(RunRecord.from_json(doc)) is None
