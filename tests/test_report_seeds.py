"""`spinebench report` over seeds and split files: `make reproduce SEEDS=0,1,2` leaves `<row>-paper-s<seed>` run
folders, each with its own metrics.json, and `data.splits=FILE` runs record the split file in their data block.

The aggregation is checked against numpy (mean, std with ddof=1) on the values read back from the per-seed
metrics.json files; the run writers are test_report's, which write records through RunFolder as the pipeline does.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_report import (
    CPU,
    GPU,
    _data_block,
    _edit,
    _section,
    _table_row,
    cell,
    rows,
    seg_masks,
    write_detection_run,
    write_seg_run,
)

from spinebench.report import compare, run_report
from spinebench.report.collect import collect_runs, pick, pick_seeds
from spinebench.report.manuscript import load_manuscript
from spinebench.report.tables import AGGREGATE, column

RESAMPLES = 20
SEEDS = (0, 1, 2)
SPLIT_SHA = "5e1f00d" + "a" * 57
SPLITS = {"file": "/work/splits/splits.json", "sha256": SPLIT_SHA, "sizes": {"train": 10, "val": 2, "test": 14}}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _expected(runs: list[Path], key: str) -> tuple[float, float]:
    """numpy's mean and sample standard deviation of a metric over the seeds' own metrics.json files."""
    values = []
    for run in runs:
        metrics = _metrics(run)["metrics"]
        if key.startswith("dice/"):
            values.append(metrics["dice_per_class"][key.split("/", 1)[1]])
        else:
            values.append(metrics[key])
    return float(np.mean(values)), float(np.std(values, ddof=1))


def _finished_at(run: Path, when: float) -> None:
    """Set when a run finished (its metrics.json's mtime): file times written a millisecond apart may be equal."""
    os.utime(run / "metrics.json", (when, when))


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _seeded_detection(outputs: Path, data: dict, row: str = "yolov8m", splits: dict | None = None, tag: str = ""):
    """`<row>-paper-s<seed>` for seeds 0, 1, 2: different test predictions (so different scores) and speeds; the
    seed in the record's `seed` key and in its config label, as `make reproduce SEEDS=0,1,2` writes them."""
    folders = []
    for seed in SEEDS:
        run = outputs / f"{row}-paper{tag}-s{seed}"
        block = {**data, "splits": splits} if splits else data
        write_detection_run(
            run, row, row, block, seed=20 + seed, fps=10.0 + 2 * seed, config=f"experiment/paper/{row}.yaml seed={seed}"
        )
        _edit(run, seed=seed)
        folders.append(run)
    return folders


# ---------------------------------------------------------------- detection
def test_detection_seeds_are_one_row_of_mean_and_sd_checked_against_numpy(tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    outputs = tmp_path / "outputs" / "detection_real"
    seeds = _seeded_detection(outputs, data)
    write_detection_run(outputs / "ssd300-paper-s0", "ssd300", "ssd300", data, seed=9)  # one seed: a run as before
    _edit(outputs / "ssd300-paper-s0", seed=0)

    paper = load_manuscript().tasks["detection"].rows["yolov8m"].metrics
    table = compare([tmp_path / "outputs"], load_manuscript(), n_resamples=RESAMPLES).table
    yolo = rows(table, task="detection", model="yolov8m")
    assert list(yolo["seed"]) == [AGGREGATE, 0, 1, 2] and list(yolo["shown"]) == [True, False, False, False]
    mean = yolo.iloc[0]
    assert mean["n_seeds"] == 3 and mean["others"] == 0
    for key in ("mAP50", "mAP50_95", "AR100", "precision", "recall"):
        expected_mean, expected_sd = _expected(seeds, key)
        assert mean[column(key)] == pytest.approx(expected_mean, abs=1e-12)
        assert mean[f"{column(key)}_sd"] == pytest.approx(expected_sd, abs=1e-12)
        assert mean[f"{column(key)}_ci_low"] is None  # each seed's interval is on its own row
    assert mean["mAP50_sd"] > 0  # the seeds scored differently: the check can fail
    assert mean["mAP50_diff"] == pytest.approx(_expected(seeds, "mAP50")[0] - paper["mAP50"])
    # each seed's own row keeps its value and bootstrap interval
    for seed, run in zip(SEEDS, seeds):
        own = rows(yolo, seed=seed).iloc[0]
        assert own["mAP50"] == _metrics(run)["metrics"]["mAP50"] and own["n_seeds"] == 3
        assert own["mAP50_ci_low"] <= own["mAP50"] <= own["mAP50_ci_high"] and own["mAP50_sd"] is None
    # speed and implantability: the mean over the seeds (all timed on one CPU)
    assert mean["fps_cpu"] == pytest.approx(np.mean([10.0, 12.0, 14.0]))
    assert mean["implantability_cpu"] == pytest.approx(np.mean(list(yolo.iloc[1:]["implantability_cpu"])))
    assert mean["config"] == "experiment/paper/yolov8m.yaml seed=0,1,2"
    # one seed: the run itself, no aggregate
    ssd = rows(table, task="detection", model="ssd300", status="finished")
    assert list(ssd["seed"]) == [0] and ssd.iloc[0]["n_seeds"] is None and ssd.iloc[0]["mAP50_sd"] is None

    out = tmp_path / "results"
    assert run_report([tmp_path / "outputs"], out, n_resamples=RESAMPLES, plots=False) == 0
    text = (out / "README.md").read_text()
    section = _section(text, "### Detection - detection_real (real)")
    cells = _table_row(section, "YOLOv8 (m)")
    expected_mean, expected_sd = _expected(seeds, "mAP50")
    assert cells[2] == f"{expected_mean:.3f} ± {expected_sd:.3f} (3 seeds)"
    assert cells[3] == f"{expected_mean - paper['mAP50']:+.3f}"
    assert "[" in _table_row(section, "SSD300")[2] and "±" not in _table_row(section, "SSD300")[2]
    assert "*mean ± sd (n seeds)*" in text and "4 finished run(s)" in text
    det = [r for r in _csv(out / "detection.csv") if r["model"] == "yolov8m"]
    assert [r["seed"] for r in det] == ["mean", "0", "1", "2"]
    assert float(det[0]["mAP50_sd"]) == pytest.approx(expected_sd) and det[1]["mAP50_sd"] == ""
    assert all(r["mAP50_ci_low"] for r in det[1:]) and det[0]["mAP50_ci_low"] == ""


def test_another_recipe_is_never_averaged_with_the_seeds(tmp_path):
    """A run with another config label (a changed recipe) is not a seed of the paper recipe: today's rule picks
    the row's run (the latest), and only that run's recipe is averaged."""
    data = _data_block("real", "detection_real", tmp_path / "data")
    outputs = tmp_path / "outputs"
    seeds = _seeded_detection(outputs, data)
    other = outputs / "yolov8m-epochs5-s3"
    write_detection_run(
        other, "yolov8m", "yolov8m", data, seed=40, config="experiment/paper/yolov8m.yaml trainer.epochs=5 seed=3"
    )
    _edit(other, seed=3)
    _finished_at(other, 100.0)
    for run in seeds:
        _finished_at(run, 50.0)
    runs = collect_runs([outputs]).runs
    assert pick(runs, "yolov8m")[0].path == other.resolve()  # the latest
    chosen, others = pick_seeds(runs, "yolov8m")
    assert [r.path for r in chosen] == [other.resolve()] and others == 3
    # the seeds of the paper recipe, once one of them is the newest
    _finished_at(seeds[1], 200.0)
    chosen, others = pick_seeds(collect_runs([outputs]).runs, "yolov8m")
    assert [r.seed for r in chosen] == [0, 1, 2] and others == 1
    table = compare([outputs], load_manuscript(), n_resamples=RESAMPLES).table
    mean = rows(table, model="yolov8m", seed=AGGREGATE).iloc[0]
    assert mean["mAP50"] == pytest.approx(_expected(seeds, "mAP50")[0]) and mean["others"] == 1


def test_seeds_timed_on_other_hardware_keep_their_scores_but_no_mean_speed(tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    outputs = tmp_path / "outputs"
    seeds = _seeded_detection(outputs, data)
    _edit(seeds[2], device="cpu (Other CPU, x86_64, 8 threads)")
    table = compare([outputs], load_manuscript(), n_resamples=RESAMPLES).table
    mean = rows(table, model="yolov8m", seed=AGGREGATE).iloc[0]
    assert mean["fps_cpu"] is None and mean["implantability_cpu"] is None
    assert "cpu speed not averaged" in mean["notes"]
    assert mean["mAP50"] == pytest.approx(_expected(seeds, "mAP50")[0])


# ---------------------------------------------------------------- segmentation
def test_segmentation_seeds_and_their_zero_shot_evaluations_checked_against_numpy(tmp_path):
    """Per-seed U-Net runs (seed only in the config label, as a record from before the `seed` key) and the
    evaluation of each seed's checkpoint on the human side (seeded by the run it scored)."""
    refs, _ = seg_masks(5, 4, 0.0)
    names = [f"case_{i:03d}.png" for i in range(4)]
    seg = _data_block("phantom", "segmentation_phantom", tmp_path / "data/seg")
    human = _data_block("phantom", "segmentation_phantom_human", tmp_path / "data/seg_human", domain="human")
    outputs = tmp_path / "outputs"
    trained, evaluated = [], []
    for seed in SEEDS:
        run = outputs / f"segmentation_phantom/unet-paper-s{seed}"
        write_seg_run(run, "unet", seg, 30 + seed, 0.1 + 0.05 * seed, names, refs, GPU, 100.0 + seed, {"gpu": 0.5})
        _edit(run, config=f"experiment/paper/unet.yaml seed={seed}")
        trained.append(run)
        ev = outputs / f"segmentation_phantom_human/eval-unet-paper-s{seed}"
        write_seg_run(ev, "unet", human, 50 + seed, 0.3, names, refs, GPU, 60.0, {"gpu": 0.3}, checkpoint_run=str(run))
        _edit(ev, config=None)  # an evaluation records no recipe label of its own
        evaluated.append(ev)
    write_seg_run(
        outputs / "segmentation_phantom/deeplabv3", "deeplabv3", seg, 60, 0.2, names, refs, GPU, 50.0, {"gpu": 0.4}
    )

    table = compare([outputs], load_manuscript(), n_resamples=RESAMPLES).table
    paper = load_manuscript().tasks["segmentation"].rows["unet"]
    porcine = rows(table, task="segmentation", domain="porcine", model="unet")
    assert list(porcine["seed"]) == [AGGREGATE, 0, 1, 2]
    mean = porcine.iloc[0]
    for key in ("mean_dice", "mIoU", "cord_dice", "cord_iou", "dice/spinal cord", "dice/background"):
        expected_mean, expected_sd = _expected(trained, key)
        assert mean[column(key)] == pytest.approx(expected_mean, abs=1e-12)
        assert mean[f"{column(key)}_sd"] == pytest.approx(expected_sd, abs=1e-12)
    assert mean["mean_dice_sd"] > 0
    assert mean["cord_dice_diff"] == pytest.approx(_expected(trained, "cord_dice")[0] - paper.metrics["cord_dice"])
    assert mean["fps_gpu"] == pytest.approx(101.0) and mean["hardware_gpu"] == GPU

    zero_shot = rows(table, task="segmentation", domain="human", model="unet")
    assert list(zero_shot["seed"]) == [AGGREGATE, 0, 1, 2]
    expected_mean, expected_sd = _expected(evaluated, "mean_dice")
    assert zero_shot.iloc[0]["mean_dice"] == pytest.approx(expected_mean)
    assert zero_shot.iloc[0]["mean_dice_sd"] == pytest.approx(expected_sd)
    assert zero_shot.iloc[0]["mean_dice_diff"] == pytest.approx(expected_mean - paper.human["mean_dice"])

    deeplab = rows(table, task="segmentation", domain="porcine", model="deeplabv3", status="finished")
    assert len(deeplab) == 1 and deeplab.iloc[0]["seed"] is None  # a record that does not say: a run as before

    out = tmp_path / "results"
    assert run_report([outputs], out, n_resamples=RESAMPLES, plots=True) == 0
    text = (out / "README.md").read_text()
    cord = _expected(trained, "dice/spinal cord")
    assert f"{cord[0]:.3f} ± {cord[1]:.3f} (3 seeds)" in text  # the per-class table too
    seg_csv = [r for r in _csv(out / "segmentation.csv") if r["model"] == "unet" and r["domain"] == "porcine"]
    assert [r["seed"] for r in seg_csv] == ["mean", "0", "1", "2"]
    assert float(seg_csv[0]["mean_dice"]) == pytest.approx(_expected(trained, "mean_dice")[0])
    assert (out / "plots" / "segmentation_bars.png").is_file()


# ---------------------------------------------------------------- split files
def test_runs_on_a_split_file_are_labelled_and_never_mixed_with_the_release_split(tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    outputs = tmp_path / "outputs"
    release = outputs / "yolov8m-paper-s0"
    write_detection_run(release, "yolov8m", "yolov8m", data, seed=3, config="experiment/paper/yolov8m.yaml seed=0")
    _edit(release, seed=0)
    resplit = _seeded_detection(outputs, data, splits=SPLITS, tag="-resplit")  # newer than the release's run
    other = {**SPLITS, "file": "/work/splits/by_cluster.json", "sha256": "c" * 64}
    other_run = outputs / "yolov8m-paper-cluster-s0"
    write_detection_run(
        other_run, "yolov8m", "yolov8m", {**data, "splits": other}, seed=50, config="experiment/paper/yolov8m.yaml"
    )
    _edit(other_run, seed=1)  # another split file: never a seed of the first one's
    only_resplit = outputs / "faster_rcnn-paper-s0"
    write_detection_run(only_resplit, "faster_rcnn", "faster_rcnn", {**data, "splits": SPLITS}, seed=8)

    runs = collect_runs([outputs]).runs
    assert pick(runs, "yolov8m")[0].path == release.resolve()  # the newer re-split runs are not its row
    assert pick(runs, "faster_rcnn") == (None, 0)
    table = compare([outputs], load_manuscript(), n_resamples=RESAMPLES).table
    yolo = rows(table, model="yolov8m", shown=True)
    # the release's split first, then the split files by name
    assert list(yolo["splits"]) == ["", "by_cluster.json (cccccccc)", "splits.json (5e1f00da)"]
    assert list(yolo["seed"]) == [0, 1, AGGREGATE]
    assert yolo.iloc[0]["mAP50"] == _metrics(release)["metrics"]["mAP50"]  # the release's run alone
    assert yolo.iloc[1]["mAP50"] == _metrics(other_run)["metrics"]["mAP50"] and yolo.iloc[1]["n_seeds"] is None
    assert yolo.iloc[2]["mAP50"] == pytest.approx(_expected(resplit, "mAP50")[0])  # the one split file's seeds
    assert yolo.iloc[2]["n_seeds"] == 3 and yolo.iloc[2]["mAP50_sd"] == pytest.approx(_expected(resplit, "mAP50")[1])
    assert list(rows(table, model="faster_rcnn", shown=True)["status"]) == ["not run", "finished"]  # release first
    assert cell(table, "splits", model="faster_rcnn", status="finished") == "splits.json (5e1f00da)"

    out = tmp_path / "results"
    assert run_report([outputs], out, n_resamples=RESAMPLES, plots=True) == 0
    section = _section((out / "README.md").read_text(), "### Detection - detection_real (real)")
    assert _table_row(section, "YOLOv8 (m) (re-split: splits.json)")[2].endswith("(3 seeds)")
    assert _table_row(section, "Faster R-CNN")[2] == "not run"
    assert _table_row(section, "Faster R-CNN (re-split: splits.json)")[2].count("[") == 1
    trace = section.split("Traceability (the run behind each row):")[1]
    assert "| split file (sha256) |" in trace
    assert _table_row(trace, "YOLOv8 (m) (re-split: by_cluster.json)")[-1] == "by_cluster.json (cccccccc)"
    assert _table_row(trace, "YOLOv8 (m) |")[-1] == "the release's"
    det = _csv(out / "detection.csv")
    assert {r["splits"] for r in det if r["model"] == "yolov8m"} == {
        "",
        "splits.json (5e1f00da)",
        "by_cluster.json (cccccccc)",
    }


def test_a_report_without_seeds_or_split_files_has_no_such_column_or_legend(tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    outputs = tmp_path / "outputs"
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=1, device=CPU)
    assert run_report([outputs], tmp_path / "results", n_resamples=RESAMPLES, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert "±" not in text and "re-split" not in text and "split file" not in text
