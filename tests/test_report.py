"""`spinebench report` on fixture run folders whose records follow the schema (spinebench.contract.RunRecord),
written through RunFolder as the pipeline writes them; a few are rewritten as records from before the schema.

The tests read the comparison table's cells; one golden file (tests/data/report_golden.md) holds the Markdown of
a fixed set of runs. After a deliberate change to the report's text, rewrite it with
`SPINEBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py -k golden` and review its diff.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinebench.classes import SEGMENTATION_CLASSES
from spinebench.contract import RunRecord
from spinebench.data.segmentation import encode_mask
from spinebench.errors import DataError
from spinebench.report import add_report_parser, compare, run_report, score_runs
from spinebench.report.bootstrap import (
    bootstrap_detection,
    bootstrap_segmentation,
    case_table,
    resample_coco,
)
from spinebench.report.collect import collect_runs, pick
from spinebench.report.manuscript import load_manuscript
from spinebench.run_folder import RunFolder

RESAMPLES = 60  # the default is 1,000; fewer keep this file fast on a 2-core machine
H, W = 275, 690
COMMIT = "0123456789abcdef"
CPU, GPU = "cpu (x86_64, 2 threads)", "NVIDIA H200"
GOLDEN = Path(__file__).parent / "data" / "report_golden.md"


# ---------------------------------------------------------------- fixture writers
def _data_block(kind: str, name: str, root: Path, domain: str = "porcine", **changes) -> dict:
    """A record's data block as DatasetSpec.describe() gives it."""
    if kind == "phantom":
        stamp = {"synthetic": True, "seed": 0, "domain": domain, "n_test": 6}
        return {
            "name": name,
            "task": "x",
            "label": f"PHANTOM ({domain}, seed 0) - synthetic, not the Kumar et al. release",
            "kind": "phantom",
            "domain": domain,
            "root": str(root),
            "stamp": stamp,
            **changes,
        }
    return {
        "name": name,
        "task": "x",
        "label": f"real release ({root.name})",
        "kind": "real",
        "domain": domain,
        "root": str(root),
        "verified": True,
        "archive_sha256": "ab" * 32,
        **changes,
    }


def _finish(run: Path, record: RunRecord) -> None:
    """What a finished run's folder holds: config.yaml, env.json, a checkpoint, status.json and its record."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(f"experiment: {record.config}\n")
    (run / "env.json").write_text(json.dumps({"packages": {"torch": "2.14.1"}, "device": record.device}))
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"stub")
    RunFolder(run).finish(record)


def _edit(run: Path, **changes) -> None:
    """Change keys of a run's metrics.json (None removes one)."""
    doc = json.loads((run / "metrics.json").read_text())
    doc.update(changes)
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))


def _as_legacy(run: Path) -> None:
    """Rewrite a run's record as one written before schema 2: the provenance (root, verified, note) and the
    commit in env.json, no domain and no test split size."""
    doc = json.loads((run / "metrics.json").read_text())
    data = doc.pop("data")
    env = {"device": doc["device"], "git": doc.pop("git"), "packages": {"torch": "2.14.1"}, "data": data}
    for key in ("schema", "test_split_images", "speed", "extra"):
        doc.pop(key, None)
    doc["data"] = {k: data[k] for k in ("name", "kind", "label", "stamp") if k in data}
    (run / "metrics.json").write_text(json.dumps(doc))
    (run / "env.json").write_text(json.dumps(env))
    (run / "status.json").unlink()


def _unfinished(
    run: Path,
    model: str,
    data: dict,
    task: str = "detection",
    error: BaseException | None = None,
    updated: str = "2026-01-01T10:00:00+0000",
) -> None:
    """A run that started (and failed with `error`, else was killed): status.json through RunFolder."""
    folder = RunFolder(run)
    folder.begin(
        f"model:\n  name: {model}\n  row: {model}\n",
        {"device": CPU},
        {
            "task": task,
            "model": model,
            "model_name": model,
            "data": {k: data.get(k) for k in ("name", "kind", "domain")},
        },
        keep_finished=False,
    )
    if error is not None:
        folder.fail(error)
    status = json.loads(folder.file("status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "updated": updated}))


def detection_pair(seed: int, n_pos: int = 10, n_neg: int = 4, jitter: float = 4.0, miss: int = 1):
    """A COCO ground truth (one hematoma box on positives, none on negatives) and noisy predictions."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(n_pos + n_neg):
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"img_{i:03d}.png", "width": W, "height": H})
        if i < n_pos:
            x, y, w, h = (
                float(rng.uniform(50, 500)),
                float(rng.uniform(20, 150)),
                float(rng.uniform(60, 120)),
                float(rng.uniform(30, 80)),
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            if i >= miss:
                dx, dy = rng.normal(0, jitter, 2)
                dets.append(
                    {
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": [x + dx, y + dy, w, h],
                        "score": float(rng.uniform(0.5, 1.0)),
                    }
                )
        elif rng.uniform() < 0.5:
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [100.0, 100.0, 50.0, 40.0],
                    "score": float(rng.uniform(0.1, 0.6)),
                }
            )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "hematoma"}]}
    return gt, dets


def write_detection_run(
    run: Path,
    model: str,
    model_name: str,
    data: dict,
    seed: int,
    device: str = CPU,
    fps: float = 10.0,
    load: float = 0.4,
    commit: str = COMMIT,
    **fields,
) -> None:
    from spinebench.detection.coco import score_coco

    gt, dets = detection_pair(seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "ground_truth.json").write_text(json.dumps(gt))
    (run / "predictions.json").write_text(json.dumps(dets))
    record = RunRecord(
        task="detection",
        model=model,
        model_name=model_name,
        data=data,
        metrics=score_coco(gt, dets),
        params=25_000_000 + seed,
        fps_batch1=fps,
        load={"cpu": load, "gpu": None},
        device=device,
        test_precision="float32",
        test_images=len(gt["images"]),
        test_split_images=len(gt["images"]),
        epochs=2,
        input_size=[256, 640],
        pretrained=False,
        train_images_per_s=5.0,
        wall_time_s=60.0,
        config=f"experiment/paper/{model}.yaml",
        git={"commit": commit, "dirty": False},
    )
    for key, value in fields.items():
        setattr(record, key, value)
    _finish(run, record)


def seg_masks(seed: int, n: int, noise: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Layered reference masks (all ten classes present somewhere) and predictions that flip a share of rows."""
    rng = np.random.default_rng(seed)
    refs, preds = [], []
    for _ in range(n):
        ref = np.zeros((H, W), dtype=np.uint8)
        bounds = np.sort(rng.choice(np.arange(10, H - 10), 9, replace=False))
        for c, top in enumerate(bounds, start=1):
            ref[top:] = c
        pred = ref.copy()
        shift = rng.integers(1, 12)
        pred[shift:] = ref[:-shift]  # a vertical misalignment, different per image
        flip = rng.uniform(size=(H, W)) < noise
        pred[flip] = rng.integers(0, 10, size=int(flip.sum()))
        refs.append(ref)
        preds.append(pred)
    return refs, preds


def summary_from_masks(refs, preds, names) -> dict:
    """nnU-Net style summary.json (as spinebench.segmentation.metrics writes it)."""
    per_case = []
    for name, ref, pred in zip(names, refs, preds):
        metrics = {}
        for c in range(len(SEGMENTATION_CLASSES)):
            tp = int(((ref == c) & (pred == c)).sum())
            fp = int(((ref != c) & (pred == c)).sum())
            fn = int(((ref == c) & (pred != c)).sum())
            union = tp + fp + fn
            metrics[str(c)] = {
                "Dice": 2 * tp / (2 * tp + fp + fn) if union else None,
                "IoU": tp / union if union else None,
                "TP": tp,
                "FP": fp,
                "FN": fn,
                "n_pred": tp + fp,
                "n_ref": tp + fn,
            }
        per_case.append(
            {
                "case": name,
                "metrics": metrics,
                "prediction_file": f"predictions/{name}",
                "reference_file": f"test_masks/{name}",
            }
        )
    return {
        "labels": {str(i): n for i, n in enumerate(SEGMENTATION_CLASSES)},
        "ignore_index": 255,
        "metric_per_case": per_case,
        "mean": {},
        "foreground_mean": {},
    }


def seg_metrics_from_summary(summary: dict) -> dict:
    dice, iou, names = case_table(summary)
    dice_c, iou_c = np.nanmean(dice, axis=0), np.nanmean(iou, axis=0)
    cord = names.index("spinal cord")
    return {
        "mIoU": float(np.nanmean(iou_c)),
        "mean_dice": float(np.nanmean(dice_c)),
        "cord_iou": float(iou_c[cord]),
        "cord_dice": float(dice_c[cord]),
        "dice_per_class": {n: float(v) for n, v in zip(names, dice_c)},
        "iou_per_class": {n: float(v) for n, v in zip(names, iou_c)},
        "n_images": len(dice),
    }


def write_seg_dataset(root: Path, seed: int, n: int = 6) -> tuple[list[str], list[np.ndarray]]:
    refs, _ = seg_masks(seed, n, 0.0)
    names = [f"case_{i:03d}.png" for i in range(n)]
    (root / "test_images").mkdir(parents=True, exist_ok=True)
    (root / "test_masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, ref in zip(names, refs):
        Image.fromarray((ref * 20 + rng.integers(0, 40, ref.shape)).astype(np.uint8)).save(root / "test_images" / name)
        Image.fromarray(encode_mask(ref)).save(root / "test_masks" / name)
    return names, refs


def write_seg_run(
    run: Path,
    model: str,
    data: dict,
    seed: int,
    noise: float,
    names,
    refs,
    device: str,
    fps: float,
    load: dict,
    checkpoint_run: str | None = None,
) -> None:
    _, preds = seg_masks(seed, len(refs), noise)
    preds = [
        np.where(np.random.default_rng(seed + i).uniform(size=r.shape) < noise, p, r)
        for i, (r, p) in enumerate(zip(refs, preds))
    ]
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    for name, pred in zip(names, preds):
        Image.fromarray(pred).save(run / "predictions" / name)
    summary = summary_from_masks(refs, preds, names)
    (run / "summary.json").write_text(json.dumps(summary))
    record = RunRecord(
        task="segmentation",
        model=model,
        model_name=model,
        data=data,
        metrics=seg_metrics_from_summary(summary),
        params=31_000_000,
        fps_batch1=fps,
        load=load,
        device=device,
        test_images=len(names),
        test_split_images=len(names),
        epochs=1,
        input_size=[275, 690],
        pretrained=False,
        train_images_per_s=3.0,
        wall_time_s=30.0,
        config=f"experiment/paper/{model}.yaml",
        checkpoint_run=checkpoint_run,
        trained_on={"name": "segmentation_phantom", "kind": "phantom"} if checkpoint_run else None,
        git={"commit": COMMIT, "dirty": False},
    )
    _finish(run, record)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    outputs = root / "outputs"
    det_ph = _data_block("phantom", "detection_phantom", root / "data/det_ph")
    det_real = _data_block("real", "detection_real", root / "data/det_real")
    write_detection_run(outputs / "detection_phantom/yolov8n", "yolov8m", "yolov8n", det_ph, seed=1, fps=20.0, load=0.3)
    write_detection_run(
        outputs / "detection_phantom/faster_rcnn", "faster_rcnn", "faster_rcnn", det_ph, seed=2, fps=2.0, load=0.5
    )
    write_detection_run(outputs / "detection_real/yolov8m", "yolov8m", "yolov8m", det_real, seed=3, fps=18.0, load=0.25)
    _unfinished(outputs / "detection_phantom/retinanet", "retinanet", det_ph)  # started, then killed

    seg_root = root / "data/seg_ph"
    names, refs = write_seg_dataset(seg_root, seed=5)
    seg_ph = _data_block("phantom", "segmentation_phantom", seg_root)
    write_seg_run(
        outputs / "segmentation_phantom/deeplabv3",
        "deeplabv3",
        seg_ph,
        11,
        0.10,
        names,
        refs,
        GPU,
        60.0,
        {"cpu": 0.9, "gpu": 0.35},
    )
    write_seg_run(
        outputs / "segmentation_phantom/unet",
        "unet",
        seg_ph,
        12,
        0.20,
        names,
        refs,
        GPU,
        120.0,
        {"cpu": 0.9, "gpu": 0.5},
    )
    human_root = root / "data/seg_human"
    hnames, hrefs = write_seg_dataset(human_root, seed=6)
    seg_human = _data_block("phantom", "segmentation_phantom_human", human_root, domain="human")
    write_seg_run(
        outputs / "segmentation_phantom_human/deeplabv3",
        "deeplabv3",
        seg_human,
        13,
        0.35,
        hnames,
        hrefs,
        GPU,
        60.0,
        {"cpu": 0.9, "gpu": 0.35},
        checkpoint_run=str(outputs / "segmentation_phantom/deeplabv3"),
    )
    return root


@pytest.fixture(scope="module")
def report(runs_root) -> Path:
    out = runs_root / "results"
    start = time.perf_counter()
    assert run_report([runs_root / "outputs"], out, n_resamples=RESAMPLES, seed=0) == 0
    print(f"report took {time.perf_counter() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def table(runs_root):
    return compare([runs_root / "outputs"], load_manuscript(), n_resamples=RESAMPLES, seed=0).table


def rows(table, **where):
    """The table's rows matching every column=value given."""
    selected = table
    for key, value in where.items():
        selected = selected[selected[key] == value]
    return selected


def cell(table, column: str, **where):
    """The one cell of `column` in the row matching `where`."""
    selected = rows(table, **where)
    assert len(selected) == 1, selected[["task", "domain", "data_source", "model", "model_name", "status"]]
    return selected.iloc[0][column]


# ---------------------------------------------------------------- collect
def test_only_finished_runs_are_collected(runs_root):
    collection = collect_runs([runs_root / "outputs"])
    assert len(collection.runs) == 6
    assert not any(r.path.name == "retinanet" for r in collection.runs)
    assert any("retinanet" in note and "unfinished" in note for note in collection.notes)
    kinds = {(r.task, r.source.described) for r in collection.runs}
    assert ("detection", "phantom") in kinds and ("detection", "real") in kinds
    human = [r for r in collection.runs if r.domain == "human"]
    assert len(human) == 1 and human[0].is_zero_shot


def test_a_record_from_before_the_schema_reads_as_before(runs_root, tmp_path):
    """Provenance and commit in env.json, no domain, no test split size: migrated, not a changed result."""
    import shutil

    for name in ("detection_real/yolov8m", "segmentation_phantom_human/deeplabv3"):
        shutil.copytree(runs_root / "outputs" / name, tmp_path / name)
        _as_legacy(tmp_path / name)
    runs = {r.task: r for r in collect_runs([tmp_path]).runs}
    det, seg = runs["detection"], runs["segmentation"]
    assert det.source.kind == "real" and det.source.group == "detection_real (real)" and det.commit == "0123456789ab"
    assert det.data_root == runs_root / "data/det_real" and det.hardware == CPU
    assert seg.domain == "human" and seg.source.is_phantom  # the phantom stamp's domain
    assert seg.test_images == 6 and seg.test_split_images is None  # n_images; the stamp has no counts
    assert det.partial_test == seg.partial_test == ""


def test_missing_path_and_broken_metrics_are_notes(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    collection = collect_runs([tmp_path / "nope", tmp_path])
    assert collection.runs == []
    assert any("no such folder" in n for n in collection.notes)
    assert any("unreadable" in n for n in collection.notes)


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: [m], "unreadable metrics.json (not a JSON object)"),
        (lambda m: {**m, "metrics": [m["metrics"]]}, "has a 'metrics' that is not an object"),
        (lambda m: {k: v for k, v in m.items() if k != "task"}, "has no 'task'"),
        (lambda m: {**m, "load": {"cpu": 35.0, "gpu": None}}, "has a cpu load that is not a fraction in [0, 1] (35.0"),
        (lambda m: {**m, "fps_batch1": "fast"}, "has a cpu FPS that is not a non-negative number ('fast')"),
    ],
)
def test_a_malformed_metrics_file_is_a_note_naming_its_run_not_a_stopped_report(change, says, tmp_path):
    data = _data_block("real", "detection_real", tmp_path / "data")
    good, bad = tmp_path / "outputs" / "good", tmp_path / "outputs" / "bad"
    for run in (good, bad):
        write_detection_run(run, "ssd300", "ssd300", data, seed=9)
    (bad / "metrics.json").write_text(json.dumps(change(json.loads((bad / "metrics.json").read_text()))))
    assert run_report([tmp_path / "outputs"], tmp_path / "results", n_resamples=5, plots=False) == 0
    notes = collect_runs([tmp_path / "outputs"]).notes
    assert [n for n in notes if n.startswith(f"{bad}: skipped") and says in n], notes
    (row,) = _read_csv(tmp_path / "results" / "detection.csv")  # the good run is still reported
    assert row["run_dir"] == str(good.resolve())


# ---------------------------------------------------------------- bootstrap
def test_resample_duplicates_become_new_images():
    gt, dets = detection_pair(0, n_pos=3, n_neg=1, miss=0)
    new_gt, new_dets = resample_coco(gt, dets, [0, 0, 2])
    assert [im["id"] for im in new_gt["images"]] == [1, 2, 3]
    assert [im["file_name"] for im in new_gt["images"]] == ["img_000.png", "img_000.png", "img_002.png"]
    assert [a["image_id"] for a in new_gt["annotations"]] == [1, 2, 3]
    assert len({a["id"] for a in new_gt["annotations"]}) == 3
    assert sorted(d["image_id"] for d in new_dets) == [1, 2, 3]


def test_detection_bootstrap_brackets_and_reproduces():
    from spinebench.detection.coco import score_coco

    gt, dets = detection_pair(4, n_pos=12, n_neg=4)
    point = score_coco(gt, dets)
    a = bootstrap_detection(gt, dets, n_resamples=40, seed=7)
    b = bootstrap_detection(gt, dets, n_resamples=40, seed=7)
    c = bootstrap_detection(gt, dets, n_resamples=40, seed=8)
    for key in ("mAP50", "mAP50_95", "AR100"):
        assert a[key].estimate == pytest.approx(point[key])
        assert a[key].low <= point[key] + 1e-9 and point[key] - 1e-9 <= a[key].high
        assert a[key].as_tuple() == b[key].as_tuple()
    assert any(a[k].as_tuple() != c[k].as_tuple() for k in ("mAP50_95", "AR100"))
    parallel = bootstrap_detection(gt, dets, n_resamples=40, seed=7, workers=2)
    assert {k: v.as_tuple() for k, v in parallel.items()} == {k: v.as_tuple() for k, v in a.items()}


def test_segmentation_bootstrap_brackets_and_reproduces():
    refs, preds = seg_masks(3, 12, 0.3)
    summary = summary_from_masks(refs, preds, [f"c{i}" for i in range(12)])
    metrics = seg_metrics_from_summary(summary)
    a = bootstrap_segmentation(summary, n_resamples=300, seed=1)
    assert a == bootstrap_segmentation(summary, n_resamples=300, seed=1)
    assert a != bootstrap_segmentation(summary, n_resamples=300, seed=2)
    for key in ("mIoU", "mean_dice", "cord_iou", "cord_dice", "dice/dura"):
        value = metrics[key] if "/" not in key else metrics["dice_per_class"]["dura"]
        assert a[key].estimate == pytest.approx(value)
        assert a[key].low <= value <= a[key].high
        assert a[key].high - a[key].low > 0


def test_segmentation_bootstrap_matches_the_suite_scorer():
    """The bootstrap aggregates summary.json exactly as the segmentation track computes metrics.json."""
    torch = pytest.importorskip("torch")
    metrics_mod = pytest.importorskip("spinebench.segmentation.metrics")
    refs, preds = seg_masks(8, 5, 0.2)
    scorer = metrics_mod.SegmentationScorer()
    scorer.update(torch.as_tensor(np.stack(preds)), torch.as_tensor(np.stack(refs)))
    reported = scorer.metrics()
    intervals = bootstrap_segmentation(scorer.summary(), n_resamples=20, seed=0, reported=reported)
    for key in ("mIoU", "mean_dice", "cord_iou", "cord_dice"):
        assert intervals[key].estimate == pytest.approx(reported[key])
        assert intervals[key].shift == 0.0


# ---------------------------------------------------------------- implantability of our runs
def test_our_implantability_uses_fps_best_per_hardware(runs_root):
    collection = collect_runs([runs_root / "outputs"])
    score_runs(collection.runs)
    seg = {r.model: r for r in collection.runs if r.task == "segmentation" and r.domain == "porcine"}
    unet, deeplab = seg["unet"], seg["deeplabv3"]
    # both on the same GPU: FPS_best = U-Net's 120, GPU load taken (not the process's CPU load)
    assert unet.implantability == {"gpu": pytest.approx(unet.values["mean_dice"] / 2 + 1 / 4 + (1 - 0.5) / 4)}
    assert deeplab.implantability["gpu"] == pytest.approx(deeplab.values["mean_dice"] / 2 + 0.5 / 4 + (1 - 0.35) / 4)
    human = next(r for r in collection.runs if r.domain == "human")
    assert human.implantability == {}
    # CPU runs of another data source never share FPS_best with these
    det = {r.model_name: r for r in collection.runs if r.task == "detection" and r.source.is_phantom}
    assert det["faster_rcnn"].implantability["cpu"] == pytest.approx(
        det["faster_rcnn"].values["mAP50"] / 2 + (2.0 / 20.0) / 4 + (1 - 0.5) / 4
    )


def test_fps_best_comes_from_the_runs_the_table_shows(tmp_path):
    """A row shows the run made with its own config (yolov8m before a newer yolov8n filed under it), and FPS_best
    is the fastest of the shown runs: a fast model without a manuscript row, or an older run, changes no row's
    score, and is itself scored as if it had joined the table."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs" / "detection_real"
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=1, fps=20.0, load=0.3)
    write_detection_run(outputs / "faster_rcnn", "faster_rcnn", "faster_rcnn", data, seed=2, fps=2.0, load=0.5)
    write_detection_run(outputs / "yolov8n", "yolov8m", "yolov8n", data, seed=3, fps=80.0, load=0.3)  # newer variant
    write_detection_run(outputs / "custom", "custom_detector", "custom_detector", data, seed=4, fps=100.0, load=0.2)
    runs = collect_runs([outputs]).runs
    score_runs(runs, load_manuscript())
    by_name = {r.model_name: r for r in runs}
    frcnn, custom = by_name["faster_rcnn"], by_name["custom_detector"]
    assert pick(runs, "yolov8m")[0] is by_name["yolov8m"]
    assert frcnn.implantability["cpu"] == pytest.approx(frcnn.values["mAP50"] / 2 + (2.0 / 20.0) / 4 + (1 - 0.5) / 4)
    assert custom.implantability["cpu"] == pytest.approx(custom.values["mAP50"] / 2 + 1 / 4 + (1 - 0.2) / 4)
    assert by_name["yolov8n"].implantability["cpu"] == pytest.approx(
        by_name["yolov8n"].values["mAP50"] / 2 + 1 / 4 + (1 - 0.3) / 4
    )  # faster than the shown yolov8m: FPS_best


def test_fps_best_ignores_a_run_the_table_does_not_show_on_other_hardware(tmp_path):
    """An older, faster yolov8m run on CPU B is not the one the YOLOv8m row shows (a newer one on CPU A is): it
    must not set FPS_best for Faster R-CNN's run on CPU B."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs" / "detection_real"
    cpu_a, cpu_b = "cpu (Model A, x86_64, 16 threads)", "cpu (Model B, x86_64, 16 threads)"
    write_detection_run(outputs / "yolov8m-old", "yolov8m", "yolov8m", data, seed=1, device=cpu_b, fps=50.0)
    write_detection_run(outputs / "yolov8m-new", "yolov8m", "yolov8m", data, seed=2, device=cpu_a, fps=20.0)
    write_detection_run(
        outputs / "faster_rcnn", "faster_rcnn", "faster_rcnn", data, seed=3, device=cpu_b, fps=2.0, load=0.5
    )
    old = outputs / "yolov8m-old" / "metrics.json"
    os.utime(old, (old.stat().st_atime - 60, old.stat().st_mtime - 60))
    runs = collect_runs([outputs]).runs
    score_runs(runs, load_manuscript())
    frcnn = next(r for r in runs if r.model == "faster_rcnn")
    assert frcnn.implantability["cpu"] == pytest.approx(frcnn.values["mAP50"] / 2 + 1 / 4 + (1 - 0.5) / 4)


def test_a_release_changed_since_its_fetch_is_flagged_with_the_reason(tmp_path):
    """The run's data block says why its real data is unverified (a file changed since the fetch, say); the report
    carries that reason, while a verified release gets none."""
    reason = "1 files changed and 0 gone since spinebench-manifest.json was written, e.g. test/a.png"
    for verified in (True, False):
        data = _data_block("real", "detection_real", tmp_path / "data")
        if not verified:
            data.update(verified=False, label=f"unverified folder ({tmp_path / 'data'})", note=reason)
        outputs = tmp_path / f"outputs-{verified}"
        write_detection_run(outputs / "detection_real" / "ssd300-run", "ssd300", "ssd300", data, seed=9)
        result = compare([outputs], load_manuscript(), n_resamples=5)
        assert cell(result.table, "data_unverified_reason", model="ssd300", status="finished") == (
            "" if verified else reason
        )
        assert run_report([outputs], tmp_path / f"results-{verified}", n_resamples=5, plots=False) == 0
        text = (tmp_path / f"results-{verified}" / "README.md").read_text()
        assert (f"not verified against the release manifest: {reason}" in text) is not verified
        assert "not verified" not in text or not verified


def test_a_model_trained_on_a_phantom_is_phantom_wherever_it_is_scored(tmp_path):
    """spinebench-eval of a phantom-trained checkpoint on the real release: its row is the phantom's, in a group
    and under a banner of its own, never beside real-data rows as a reproduction."""
    outputs = tmp_path / "outputs"
    write_detection_run(
        outputs / "detection_real" / "eval-ssd300",
        "ssd300",
        "ssd300",
        _data_block("real", "detection_real", tmp_path / "data"),
        seed=9,
        checkpoint_run=str(tmp_path / "trained"),
        trained_on={"name": "detection_phantom", "kind": "phantom"},
    )
    (run,) = collect_runs([outputs]).runs
    assert run.source.is_phantom and run.source.group == "detection_real (real, model trained on a phantom)"
    assert run.source.label.endswith("; the model was trained on a PHANTOM")
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    assert cell(table, "data_kind", model="ssd300") == "real, model trained on a phantom"
    assert set(rows(table, task="detection")["data_source"]) == {"detection_real (real, model trained on a phantom)"}
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert "### Detection - detection_real (real, model trained on a phantom) - PHANTOM" in text


def test_speed_block_with_both_processors(tmp_path):
    run_dir = tmp_path / "run"
    write_detection_run(
        run_dir,
        "ssd300",
        "ssd300",
        _data_block("real", "r", tmp_path),
        seed=9,
        speed={
            "cpu": {"fps": 5.0, "load": 0.5, "device": "cpu (x86_64, 16 threads)"},
            "gpu": {"fps": 100.0, "load": 0.2, "device": "NVIDIA H100"},
        },
    )
    (run,) = collect_runs([run_dir]).runs
    score_runs([run])
    assert set(run.implantability) == {"cpu", "gpu"}
    assert run.implantability["gpu"] == pytest.approx(run.values["mAP50"] / 2 + 0.25 + 0.2)
    table = compare([run_dir], load_manuscript(), n_resamples=5).table
    assert cell(table, "hardware_gpu", model="ssd300", status="finished") == "NVIDIA H100"
    assert cell(table, "fps_cpu", model="ssd300", status="finished") == 5.0


# ---------------------------------------------------------------- the comparison table
def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_csv_rows_and_columns(report):
    det = _read_csv(report / "detection.csv")
    assert len(det) == 3
    required = {
        "model",
        "model_name",
        "mAP50",
        "mAP50_95",
        "AR100",
        "precision",
        "recall",
        "mAP50_ci_low",
        "mAP50_ci_high",
        "paper_mAP50",
        "mAP50_diff",
        "params",
        "fps_batch1",
        "epochs",
        "input_size",
        "pretrained",
        "data_source",
        "data_kind",
        "data_label",
        "data_stamp",
        "hardware",
        "commit",
        "config",
        "test_images",
        "shown",
        "config_file",
        "run_dir",
        "implantability_cpu",
        "implantability_gpu",
        "paper_implantability_cpu",
    }
    assert required <= set(det[0])
    assert {r["data_kind"] for r in det} == {"phantom", "real"}
    for row in det:
        assert float(row["mAP50_diff"]) == pytest.approx(float(row["mAP50"]) - float(row["paper_mAP50"]))
        assert float(row["mAP50_ci_low"]) <= float(row["mAP50"]) <= float(row["mAP50_ci_high"])
        assert row["commit"] == "0123456789ab" and row["test_precision"] == "float32"
        assert row["params"].isdigit()  # an integer stays one in the CSV
    yolo = next(r for r in det if r["model_name"] == "yolov8n")
    assert float(yolo["paper_mAP50"]) == 0.979 and "PHANTOM" in yolo["data_label"]

    seg = _read_csv(report / "segmentation.csv")
    assert len(seg) == 3
    for name in SEGMENTATION_CLASSES:
        assert f"dice_{name.replace('/', '_').replace(' ', '_')}" in seg[0]
    assert "mAP50" not in seg[0]  # one task's metrics per file
    assert {r["test_precision"] for r in seg} == {""}  # these runs did not record it
    human = next(r for r in seg if r["domain"] == "human")
    assert float(human["paper_mean_dice"]) == 0.289  # DeepLabv3's human-side figure
    assert human["checkpoint_run"].endswith("deeplabv3")
    assert human["paper_implantability_gpu"] == human["implantability_gpu"] == ""  # a zero-shot run is not scored


def test_the_table_has_every_manuscript_row_per_data_source(table):
    paper = load_manuscript()
    real, phantom = "detection_real (real)", "detection_phantom (phantom)"
    for group in (real, phantom):
        shown = rows(table, task="detection", data_source=group, shown=True)
        assert list(shown["model"]) == list(paper.tasks["detection"].rows)  # the manuscript's order
    assert cell(table, "status", data_source=real, model="ssd300") == "not run"
    assert cell(table, "status", data_source=phantom, model="retinanet") == "unfinished (see skipped)"
    # paper value, ours [CI], diff
    frcnn = rows(table, data_source=phantom, model="faster_rcnn").iloc[0]
    assert frcnn["paper_mAP50"] == 0.985 and frcnn["mAP50_diff"] == pytest.approx(frcnn["mAP50"] - 0.985)
    assert frcnn["mAP50_ci_low"] <= frcnn["mAP50"] <= frcnn["mAP50_ci_high"]
    assert frcnn["paper_implantability_cpu"] == 0.676 and frcnn["implantability_cpu"] is not None
    # the YOLOv8m row shows the yolov8n variant filed under it
    assert cell(table, "model_name", data_source=phantom, model="yolov8m") == "yolov8n"
    assert cell(table, "data_kind", data_source=phantom, model="yolov8m") == "phantom"

    seg = rows(table, task="segmentation", domain="porcine", data_source="segmentation_phantom (phantom)")
    assert list(seg["model"]) == list(paper.tasks["segmentation"].rows)
    assert cell(seg, "status", model="samed") == "not run"
    assert all(seg.loc[seg["status"] == "finished", "dice_spinal_cord"].notna())
    human = rows(table, task="segmentation", domain="human")
    assert set(human["data_source"]) == {"segmentation_phantom_human (phantom)"}
    deeplab = rows(human, model="deeplabv3").iloc[0]
    assert deeplab["paper_mean_dice"] == 0.289 and deeplab["paper_mIoU"] == 0.200 and deeplab["zero_shot"]
    assert cell(human, "status", model="unet") == "not run"
    assert deeplab["commit"] == "0123456789ab" and deeplab["config"] == "experiment/paper/deeplabv3.yaml"


def test_markdown_renders_the_table(report):
    text = (report / "README.md").read_text()
    real = _section(text, "### Detection - detection_real (real)")
    phantom = _section(text, "### Detection - detection_phantom (phantom)")
    assert "PHANTOM" in phantom.splitlines()[0] and "not a reproduction" in phantom.splitlines()[0]
    assert "PHANTOM" not in real.splitlines()[0]
    cells = _table_row(phantom, "Faster R-CNN")
    assert cells[1] == "0.985" and cells[3] == f"{float(cells[2].split()[0]) - 0.985:+.3f}" and cells[2].count("[") == 1
    # every table of the section (metrics, speed, traceability) says the row shows the yolov8n variant
    assert phantom.count("| YOLOv8 (m) (ours: `yolov8n`)") == 3, phantom
    human = _section(text, "zero-shot on human - segmentation_phantom_human")
    assert "Traceability (the run behind each row):" in human
    assert "retinanet" in text.split("## Skipped and notes")[1]


def _section(text: str, heading_part: str) -> str:
    start = text.index(heading_part)
    end = text.find("\n### ", start + 1)
    end2 = text.find("\n## ", start + 1)
    ends = [e for e in (end, end2) if e != -1]
    return text[start : min(ends) if ends else len(text)]


def _table_row(section: str, name: str) -> list[str]:
    for line in section.splitlines():
        if line.startswith(f"| {name}"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row {name!r} in\n{section}")


def test_grid_finds_the_reference_of_a_record_from_before_the_schema(runs_root, tmp_path):
    """The dataset root of an old record is in its env.json: the grid still finds the reference mask."""
    import shutil

    from spinebench.report.plots import _reference

    shutil.copytree(runs_root / "outputs" / "segmentation_phantom" / "unet", tmp_path / "unet")
    _as_legacy(tmp_path / "unet")
    (run,) = collect_runs([tmp_path / "unet"]).runs
    assert "root" not in json.loads((tmp_path / "unet" / "metrics.json").read_text())["data"]
    gray, ref = _reference(run, "case_002.png")
    assert gray.shape == (H, W) and ref.shape == (H, W) and ref.max() == 9


def test_plots_written(report):
    plots = report / "plots"
    expected = [
        "detection_bars.png",
        "segmentation_bars.png",
        "detection_accuracy_vs_fps.png",
        "segmentation_accuracy_vs_fps.png",
        "detection_pr_detection_phantom_phantom.png",
        "detection_pr_detection_real_real.png",
        "segmentation_grid_segmentation_phantom_phantom.png",
    ]
    for name in expected:
        assert (plots / name).is_file() and (plots / name).stat().st_size > 5000, name
    assert "plot '" not in (report / "README.md").read_text()  # no plot failed
    assert "![segmentation_grid" in (report / "README.md").read_text()


def test_report_without_runs_keeps_every_row(tmp_path):
    table = compare([tmp_path], load_manuscript(), n_resamples=10).table
    assert list(table["status"]) == ["not run"] * (7 + 6 + 6) and set(table["data_source"]) == {""}
    assert run_report([tmp_path], tmp_path / "results", n_resamples=10, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert text.count("not run") >= 7 + 6 + 6
    assert _read_csv(tmp_path / "results" / "detection.csv") == []


def test_cli_parser(tmp_path, runs_root):
    import argparse

    parser = argparse.ArgumentParser(prog="spinebench")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "report",
            str(runs_root / "outputs" / "detection_real"),
            "--out",
            str(tmp_path / "r"),
            "--resamples",
            "5",
            "--no-plots",
        ]
    )
    assert args.func(args) == 0
    assert len(_read_csv(tmp_path / "r" / "detection.csv")) == 1
    assert run_report([tmp_path], tmp_path / "x", manuscript=tmp_path / "missing.yaml") == 2


def test_runs_without_a_manuscript_row_are_listed_not_dropped(tmp_path):
    data = _data_block("phantom", "detection_phantom", tmp_path / "data")
    write_detection_run(tmp_path / "outputs" / "yolov8n-run", "yolov8n", "yolov8n", data, seed=4)
    table = compare([tmp_path / "outputs"], load_manuscript(), n_resamples=10).table
    row = rows(table, model="yolov8n").iloc[0]
    assert row["shown"] and row["paper_name"] == "" and row["paper_mAP50"] is None
    assert row["mAP50_ci_low"] <= row["mAP50"] <= row["mAP50_ci_high"] and row["run_dir"].endswith("yolov8n-run")
    assert run_report([tmp_path / "outputs"], tmp_path / "results", n_resamples=10, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    section = text.split("Runs of models without a manuscript row:", 1)[1]
    line = next(line for line in section.splitlines() if line.startswith("| `yolov8n`"))
    assert f"{row['mAP50']:.3f} [" in line and "yolov8n-run" in line


# ---------------------------------------------------------------- audit: what a report must never hide
def test_a_report_of_only_missing_paths_fails_and_leaves_the_old_report(tmp_path, capsys):
    """A mistyped run folder must not overwrite the results with an empty report that exits 0."""
    write_detection_run(
        tmp_path / "outputs" / "ssd300",
        "ssd300",
        "ssd300",
        _data_block("real", "detection_real", tmp_path / "data"),
        seed=9,
    )
    out = tmp_path / "results"
    assert run_report([tmp_path / "outputs"], out, n_resamples=5, plots=False) == 0
    before = {p.name: p.read_text() for p in out.iterdir()}
    capsys.readouterr()
    assert run_report([tmp_path / "nosuchdir", tmp_path / "typo"], out, n_resamples=5, plots=False) == 2
    err = capsys.readouterr().err
    assert "nosuchdir" in err and "typo" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    # one missing among existing ones (make reproduce names runs that never started) is a note, not an error
    assert run_report([tmp_path / "nosuchdir", tmp_path / "outputs"], out, n_resamples=5, plots=False) == 0
    assert "nosuchdir: skipped, no such folder" in (out / "README.md").read_text()


def test_a_zero_fps_is_shown_as_not_measured_and_named_never_a_stopped_report(tmp_path):
    from spinebench.report.implantability import scores

    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs"
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=1, fps=10.0, load=0.5)
    write_detection_run(outputs / "faster_rcnn", "faster_rcnn", "faster_rcnn", data, seed=2, fps=0.0)
    result = compare([outputs], load_manuscript(), n_resamples=5)
    frcnn = rows(result.table, model="faster_rcnn").iloc[0]
    assert frcnn["fps_cpu"] is None and frcnn["implantability_cpu"] is None and frcnn["fps_batch1"] == 0.0
    assert frcnn["notes"].startswith(f"{outputs / 'faster_rcnn'}: its cpu FPS is 0")
    assert any(n.startswith(f"{outputs / 'faster_rcnn'}: its cpu FPS is 0") for n in result.notes)
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    speed = _section((tmp_path / "results" / "README.md").read_text(), "Speed and implantability:")
    assert _table_row(speed, "Faster R-CNN")[4] == "not measured"
    ssd = cell(result.table, "implantability_cpu", model="ssd300")
    assert ssd == pytest.approx(cell(result.table, "mAP50", model="ssd300") / 2 + 1 / 4 + 0.5 / 4)
    assert scores({"a": {"accuracy": 0.5, "fps": 0, "load": 0.5}}) == {"a": None}
    # alone in its table it would be FPS_best: 0 (that stopped the whole report without naming the run)
    assert run_report([outputs / "faster_rcnn"], tmp_path / "alone", n_resamples=5, plots=False) == 0


def _hydra_folder(run: Path, model: str, data_name: str, task: str) -> None:
    """What Hydra leaves before the run writes anything: .hydra/config.yaml (unresolved) and the job's log."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"model:\n  name: {model}\n  row: {model}\ndata:\n  name: {data_name}\n  task: {task}\n  root: ${{oc.env:X}}\n"
    )
    (run / "train.log").write_text("[2026-01-01 10:00:00,000][spinebench][INFO] - started\n")


def test_unfinished_and_failed_runs_are_named_in_their_rows(tmp_path):
    """A row whose run was tried but did not finish says so (failed: the error its status.json holds), never
    "not run"; a folder from before status files (a config, or only Hydra's files) is found too."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs" / "detection_real"
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=1)
    _unfinished(
        outputs / "retinanet", "retinanet", data, error=RuntimeError("CUDA out of memory | tried to allocate 2 GiB")
    )
    killed = outputs / "ssd512"
    _unfinished(killed, "ssd512", data)
    older = outputs / "detr"  # before status.json: its config says what it was
    older.mkdir()
    (older / "config.yaml").write_text(
        "model:\n  name: detr\n  row: detr\ndata:\n  name: detection_real\n  task: detection\n"
    )
    (older / "checkpoints").mkdir()
    _hydra_folder(outputs / "yolov7", "yolov7", "detection_real", "detection")
    collection = collect_runs([tmp_path / "outputs"])
    assert {(u.path.name, u.task, u.model, u.data_name, u.state) for u in collection.unfinished} == {
        ("retinanet", "detection", "retinanet", "detection_real", "failed"),
        ("ssd512", "detection", "ssd512", "detection_real", "started"),
        ("detr", "detection", "detr", "detection_real", ""),
        ("yolov7", "detection", "yolov7", "detection_real", ""),
    }
    assert any(
        n.startswith(f"{killed}: skipped, unfinished") and "started at 2026-01-01T10:00:00" in n
        for n in collection.notes
    )
    table = compare([tmp_path / "outputs"], load_manuscript(), n_resamples=5).table
    group = rows(table, data_source="detection_real (real)")
    assert (
        cell(group, "status", model="retinanet") == "failed: RuntimeError: CUDA out of memory | tried to allocate 2 GiB"
    )
    assert cell(group, "status", model="ssd512") == cell(group, "status", model="detr") == "unfinished (see skipped)"
    assert cell(group, "status", model="yolov7") == "unfinished (see skipped)"
    assert cell(group, "status", model="yolov8m") == "not run"
    assert cell(group, "run_dir", model="retinanet") == str((outputs / "retinanet").resolve())
    assert run_report([tmp_path / "outputs"], tmp_path / "results", n_resamples=5, plots=False) == 0
    section = _section((tmp_path / "results" / "README.md").read_text(), "### Detection - detection_real (real)")
    retinanet = next(line for line in section.splitlines() if line.startswith("| RetinaNet |"))
    assert "| failed: RuntimeError: CUDA out of memory \\| tried to allocate 2 GiB |" in retinanet  # its | escaped
    # with no finished run of the dataset at all, its unfinished ones still get a table
    table = compare([killed], load_manuscript(), n_resamples=5).table
    assert (
        cell(table, "status", task="detection", data_source="detection_real", model="ssd512")
        == "unfinished (see skipped)"
    )
    assert run_report([killed], tmp_path / "only", n_resamples=5, plots=False) == 0
    assert "### Detection - detection_real - no finished runs yet" in (tmp_path / "only" / "README.md").read_text()


def test_an_unverified_run_never_sits_under_a_verified_banner(tmp_path):
    """Groups are keyed by verification too: a verified and an unverified run of one dataset get separate tables,
    and the unverified one's heading and banner say UNVERIFIED with the reason (also when the record says
    nothing of verification)."""
    outputs = tmp_path / "outputs"
    verified = _data_block("real", "detection_real", tmp_path / "data")
    unverified = {
        **verified,
        "verified": False,
        "label": "unverified folder (x)",
        "note": "2 files changed since fetch",
    }
    write_detection_run(outputs / "a-yolov8m", "yolov8m", "yolov8m", verified, seed=1)
    write_detection_run(outputs / "b-ssd300", "ssd300", "ssd300", unverified, seed=2)
    silent = {k: v for k, v in verified.items() if k != "verified"}  # "real", and nothing verified it
    write_detection_run(outputs / "c-retinanet", "retinanet", "retinanet", silent, seed=3)
    runs = {r.model: r for r in collect_runs([outputs]).runs}
    assert runs["yolov8m"].source.group == "detection_real (real)"
    assert runs["ssd300"].source.group == runs["retinanet"].source.group == "detection_real (real, UNVERIFIED)"
    assert runs["ssd300"].source.legend.startswith("ours, UNVERIFIED")
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    good, bad = (
        rows(table, data_source="detection_real (real)"),
        rows(table, data_source="detection_real (real, UNVERIFIED)"),
    )
    assert list(dict.fromkeys(table["data_source"]))[:2] == [
        "detection_real (real)",
        "detection_real (real, UNVERIFIED)",
    ]
    assert cell(good, "status", model="ssd300") == "not run" and cell(bad, "status", model="yolov8m") == "not run"
    assert cell(bad, "data_unverified_reason", model="retinanet").startswith("no verification recorded")
    assert cell(bad, "data_verified", model="ssd300") is False
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    good = _section(text, "### Detection - detection_real (real) - real data\n")
    bad = _section(text, "### Detection - detection_real (real, UNVERIFIED) - real data, UNVERIFIED")
    assert "UNVERIFIED" not in good
    assert "**UNVERIFIED**: not verified against the release manifest: 2 files changed since fetch" in bad
    assert "no verification recorded" in bad


def test_a_run_without_a_data_block_is_of_unknown_source_not_real(tmp_path):
    """Only a record from before the schema can lack a data block (its env.json without one too)."""
    run_dir = tmp_path / "outputs" / "ssd300"
    write_detection_run(run_dir, "ssd300", "ssd300", _data_block("real", "detection_real", tmp_path / "data"), seed=1)
    _as_legacy(run_dir)
    _edit(run_dir, data={})
    env = json.loads((run_dir / "env.json").read_text())
    del env["data"]
    (run_dir / "env.json").write_text(json.dumps(env))
    (run,) = collect_runs([run_dir]).runs
    assert run.source.kind == "unknown" and run.source.legend == "ours, unknown data source: ? (unknown data source)"
    table = compare([run_dir], load_manuscript(), n_resamples=5).table
    assert cell(table, "data_source", model="ssd300", status="finished") == "? (unknown data source)"
    assert run_report([run_dir], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    heading = next(line for line in text.splitlines() if line.startswith("### Detection - "))
    assert heading == "### Detection - ? (unknown data source) - unknown data source"
    assert "real data" not in _section(text, heading)
    # beside verified real data, the verified table comes first ("?" sorted before "detection_real")
    write_detection_run(
        tmp_path / "outputs" / "yolov8m",
        "yolov8m",
        "yolov8m",
        _data_block("real", "detection_real", tmp_path / "data"),
        seed=2,
    )
    table = compare([tmp_path / "outputs"], load_manuscript(), n_resamples=5).table
    assert list(dict.fromkeys(rows(table, task="detection")["data_source"])) == [
        "detection_real (real)",
        "? (unknown data source)",
    ]


def test_an_interval_moved_to_a_reported_value_is_clipped_and_named(tmp_path, capsys):
    """A metrics.json that disagrees with its prediction files: the interval is moved to the reported value,
    never beyond [0, 1], and a note names the run."""
    from spinebench.report.bootstrap import _percentile_intervals

    samples = np.linspace(0.4, 0.6, 101)
    high = _percentile_intervals({"m": 0.5}, {"m": samples}, 0.95, {"m": 0.95})["m"]
    low = _percentile_intervals({"m": 0.5}, {"m": samples}, 0.95, {"m": 0.02})["m"]
    assert high.high == 1.0 and high.low == pytest.approx(0.855) and high.shift == pytest.approx(0.45)
    assert low.low == 0.0 and 0 < low.high < 0.2
    run_dir = tmp_path / "outputs" / "ssd300"
    write_detection_run(run_dir, "ssd300", "ssd300", _data_block("real", "detection_real", tmp_path / "data"), seed=1)
    doc = json.loads((run_dir / "metrics.json").read_text())
    _edit(run_dir, metrics={**doc["metrics"], "mAP50": 0.999})
    assert run_report([run_dir], tmp_path / "results", n_resamples=20, plots=False) == 0
    (row,) = _read_csv(tmp_path / "results" / "detection.csv")
    assert 0 <= float(row["mAP50_ci_low"]) <= float(row["mAP50_ci_high"]) <= 1.0
    assert "1 metric(s) in metrics.json differ" in row["notes"]
    notes = (tmp_path / "results" / "README.md").read_text().split("## Skipped and notes")[1]
    assert f"{run_dir.resolve()}: 1 metric(s) in metrics.json differ from those recomputed" in notes
    assert "mAP50 0.9990 reported" in notes
    assert "1 note(s)" in capsys.readouterr().out  # the console says it too (it said 0 notes)


def test_runs_of_several_commits_are_flagged(tmp_path):
    from spinebench.report.markdown import commit_line, run_commits

    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs"
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=1)
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=2)
    _edit(outputs / "yolov8m", git={"commit": "fedcba9876543210", "dirty": True})
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    assert sorted(run_commits(table)) == ["0123456789ab", "fedcba987654-dirty"]
    assert commit_line(["0123456789ab"], "0123456789ab") == ""  # one commit, this checkout's: nothing to say
    assert commit_line(["0123456789ab"], "0123456789ab-dirty") == ""  # a report in a tracked folder dirties it
    assert commit_line(["0123456789ab"], "0123456") == ""  # SPINEBENCH_GIT_COMMIT in short
    assert commit_line(["0123456789ab", "0123456"], "0123456789ab") == ""  # the same commit, named in short
    assert commit_line(["0123456789ab"], "aaaaaaaaaaaa").endswith("this checkout is `aaaaaaaaaaaa`")
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert (
        "runs from 2 commits: `0123456789ab` (1 run), `fedcba987654-dirty` (1 run) "
        "(-dirty: made with uncommitted changes)"
    ) in text


def test_a_run_scored_on_part_of_the_test_split_is_flagged(tmp_path):
    """A smoke run (trainer.limit_test_images) scores a few test images: its row says how many of how many, from
    its record; an old record without the split's size takes it from the phantom's stamp, else says it is
    unknown."""
    outputs = tmp_path / "outputs"
    data = _data_block("phantom", "detection_phantom", tmp_path / "data")
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=1, test_images=2, test_split_images=4)
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=2, test_images=4, test_split_images=4)
    counted = {**data, "name": "old_phantom", "stamp": {**data["stamp"], "counts": {"train": 8, "val": 4, "test": 4}}}
    write_detection_run(outputs / "old-ssd300", "ssd300", "ssd300", counted, seed=1, test_images=2)
    _as_legacy(outputs / "old-ssd300")
    uncounted = {**data, "name": "other_phantom"}  # an old record: no counts in its stamp, no split size
    write_detection_run(outputs / "retinanet", "retinanet", "retinanet", uncounted, seed=3)
    _as_legacy(outputs / "retinanet")
    _edit(outputs / "retinanet", test_images=None)
    (outputs / "retinanet" / "config.yaml").write_text("trainer:\n  limit_test_images: 2\n")
    runs = {r.path.name: r for r in collect_runs([outputs]).runs}
    assert runs["ssd300"].partial_test == "scored on 2 of 4 test images" and runs["yolov8m"].partial_test == ""
    assert runs["old-ssd300"].partial_test == "scored on 2 of 4 test images"
    assert runs["retinanet"].partial_test == (
        "scored on at most 2 test images (trainer.limit_test_images=2; the split's size is unknown)"
    )
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    assert (
        cell(table, "partial_test", data_source="detection_phantom (phantom)", model="ssd300")
        == "scored on 2 of 4 test images"
    )
    assert cell(table, "partial_test", data_source="detection_phantom (phantom)", model="yolov8m") == ""
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    section = _section(text, "### Detection - detection_phantom")
    assert _table_row(section, "SSD300")[0] == "SSD300 **(scored on 2 of 4 test images)**"
    assert _table_row(section, "YOLOv8")[0] == "YOLOv8 (m)"
    assert "trainer.limit_test_images=2" in _table_row(_section(text, "### Detection - other_phantom"), "RetinaNet")[0]
    assert {r["run_dir"]: r["partial_test"] for r in _read_csv(tmp_path / "results" / "detection.csv")}[
        str((outputs / "ssd300").resolve())
    ] == "scored on 2 of 4 test images"


def test_a_hidden_newer_run_is_not_called_older(tmp_path):
    """pick shows the row's own model config before a newer variant filed under it: the hidden one is 'other'."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs"
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=1)
    write_detection_run(outputs / "yolov8n", "yolov8m", "yolov8n", data, seed=2)  # newer, not shown
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    assert cell(table, "others", model="yolov8m", shown=True) == 1
    assert cell(table, "model_name", model="yolov8m", shown=True) == "yolov8m"
    assert cell(table, "model_name", model="yolov8m", shown=False) == "yolov8n"
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    assert "| YOLOv8 (m) (+1 other run in the CSV) |" in text and "older run" not in text
    assert {r["model_name"]: r["shown"] for r in _read_csv(tmp_path / "results" / "detection.csv")} == {
        "yolov8m": "True",
        "yolov8n": "False",
    }


def test_the_csv_names_run_folders_relative_to_the_working_directory(tmp_path, monkeypatch):
    """results/demo's CSVs named /tmp/fresh/...: a committed table should not hold one machine's folders."""
    write_detection_run(
        tmp_path / "outputs" / "ssd300",
        "ssd300",
        "ssd300",
        _data_block("real", "detection_real", tmp_path / "data"),
        seed=1,
    )
    monkeypatch.chdir(tmp_path)
    assert run_report(["outputs"], "results", n_resamples=5, plots=False) == 0
    (row,) = _read_csv(tmp_path / "results" / "detection.csv")
    assert row["run_dir"] == "outputs/ssd300" and row["config_file"] == "outputs/ssd300/config.yaml"


def test_a_later_evaluation_on_the_training_data_does_not_replace_the_training_row(tmp_path):
    """`spinebench-eval ckpt=<run> data=<its own data>` finished last, and its row replaced the training run's."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs"
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=1)
    write_detection_run(
        outputs / "eval-ssd300", "ssd300", "ssd300", data, seed=2, checkpoint_run=str(outputs / "ssd300")
    )
    evaluation = outputs / "eval-ssd300" / "metrics.json"
    later = time.time() + 10
    os.utime(evaluation, (later, later))
    runs = collect_runs([outputs]).runs
    assert pick(runs, "ssd300")[0].path.name == "ssd300"


def test_an_unfinished_run_is_named_once_and_its_long_error_keeps_its_reason(tmp_path):
    """It sat in both the verified and the unverified table of its dataset, and a cell cut at 100 characters kept
    a long image path and lost the reason after it."""
    from spinebench.report.markdown import render_table, status_cell

    outputs = tmp_path / "outputs"
    verified = _data_block("real", "detection_real", tmp_path / "data")
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", verified, seed=1)
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", {**verified, "verified": False, "note": "x"}, seed=2)
    error = DataError(
        f"{tmp_path}/data/train/" + "pig03_post_" * 12 + ".png: unreadable image (cannot identify image file)"
    )
    _unfinished(outputs / "retinanet", "retinanet", verified, error=error)
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    retinanet = rows(table, model="retinanet")
    assert list(zip(retinanet["data_source"], retinanet["status"])) == [
        ("detection_real (real)", f"failed: {error}"),
        ("detection_real (real, UNVERIFIED)", "not run"),
    ]
    cut = status_cell(f"failed: {error}")
    assert cut.startswith("failed: ") and cut.endswith("unreadable image (cannot identify image file)")
    assert len(cut) <= 120
    long = "failed: TypeError: x" + "x" * 150 + "|" + "y" * 60  # a | in the part kept after the cut
    (line,) = render_table([{"status": long}], [("status", lambda r: status_cell(r["status"]))])[2:]
    assert "\\|" in line and "|" not in line.strip("|").replace("\\|", "")


# ---------------------------------------------------------------- the Markdown, whole
def _golden_runs(outputs: Path) -> None:
    """A small fixed set of runs covering what the Markdown says: verified, unverified and phantom data, a variant
    under its row and a hidden run, a model without a row, a partial test split, failed, killed and older
    unfinished runs, a run of another commit, both processors timed, and a zero-shot evaluation."""
    real = _data_block("real", "detection_real", Path("/data/detection_real"))
    unverified = {
        **real,
        "verified": False,
        "label": "unverified folder (/data/x)",
        "note": "2 files changed since fetch",
    }
    phantom = _data_block("phantom", "detection_phantom", Path("/data/detection_phantom"))
    det = outputs / "detection_real"
    write_detection_run(det / "yolov8m", "yolov8m", "yolov8m", real, seed=3, fps=18.0, load=0.25)
    write_detection_run(det / "yolov8n", "yolov8m", "yolov8n", real, seed=4, fps=30.0, load=0.3)
    write_detection_run(
        det / "faster_rcnn",
        "faster_rcnn",
        "faster_rcnn",
        real,
        seed=2,
        fps=2.0,
        load=0.5,
        speed={"cpu": {"fps": 2.0, "load": 0.5, "device": CPU}, "gpu": {"fps": 15.0, "load": 0.6, "device": GPU}},
    )
    write_detection_run(
        det / "custom",
        "custom_detector",
        "custom_detector",
        real,
        seed=5,
        fps=40.0,
        load=0.2,
        commit="fedcba9876543210",
    )
    write_detection_run(det / "ssd300-unverified", "ssd300", "ssd300", unverified, seed=6)
    _unfinished(
        det / "retinanet", "retinanet", real, error=RuntimeError("CUDA out of memory | tried to allocate 2 GiB")
    )
    _unfinished(det / "ssd512", "ssd512", real)
    (det / "detr").mkdir()
    (det / "detr" / "config.yaml").write_text(
        "model:\n  name: detr\ndata:\n  name: detection_real\n  task: detection\n"
    )
    write_detection_run(
        outputs / "detection_phantom" / "ssd300",
        "ssd300",
        "ssd300",
        phantom,
        seed=7,
        fps=0.0,
        test_images=2,
        test_split_images=4,
    )

    refs, _ = seg_masks(5, 4, 0.0)
    names = [f"case_{i:03d}.png" for i in range(4)]
    seg = _data_block("phantom", "segmentation_phantom", Path("/data/seg"))
    human = _data_block("phantom", "segmentation_phantom_human", Path("/data/seg_human"), domain="human")
    write_seg_run(
        outputs / "segmentation_phantom/unet", "unet", seg, 12, 0.2, names, refs, GPU, 120.0, {"cpu": 0.9, "gpu": 0.5}
    )
    write_seg_run(
        outputs / "segmentation_phantom_human/unet",
        "unet",
        human,
        13,
        0.35,
        names,
        refs,
        GPU,
        60.0,
        {"cpu": 0.9, "gpu": 0.35},
        checkpoint_run="outputs/segmentation_phantom/unet",
    )


def test_the_markdown_matches_the_golden_file(tmp_path, monkeypatch):
    """The whole README.md of `_golden_runs`: headings, banners, every table and the notes, byte for byte."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01 00:00 UTC
    monkeypatch.setenv("SPINEBENCH_GIT_COMMIT", COMMIT)
    _golden_runs(Path("outputs"))
    assert run_report(["outputs", "outputs/nosuchrun"], "results", n_resamples=20, seed=0, plots=False) == 0
    text = Path("results/README.md").read_text()
    if os.environ.get("SPINEBENCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "README.md differs from tests/data/report_golden.md (see the module's docstring)"


def test_a_smoke_runs_scores_are_labelled_as_a_pipeline_check(tmp_path):
    """A run trained under trainer.limit_train_batches (debug=smoke) scores near zero by design: every cell of its
    metrics says so, so the demo's table does not read as broken models."""
    outputs = tmp_path / "outputs"
    data = _data_block("phantom", "detection_phantom_tiny", tmp_path / "data")
    write_detection_run(outputs / "ssd300-smoke", "ssd300", "ssd300", data, seed=4, smoke_steps=1)
    write_detection_run(outputs / "retinanet", "retinanet", "retinanet", data, seed=5)
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    assert cell(table, "smoke_steps", model="ssd300", status="finished") == 1
    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    smoke = _table_row(text, "SSD300")
    assert smoke[0].endswith("**(smoke run, 1 step: a pipeline check, not a score)**")
    assert all(cell.endswith("(smoke run)") for cell in smoke[2::3])  # every score of ours says it
    assert "smoke run" not in "".join(_table_row(text, "RetinaNet"))


def test_a_segmentation_record_as_the_scorer_writes_it_is_valid():
    """The segmentation scorer's metrics block carries a text note (`averaging`) beside its numbers: the report's
    record check skipped every segmentation run for it."""
    import torch

    from spinebench.report.collect import invalid_record
    from spinebench.segmentation.metrics import SegmentationScorer

    scorer = SegmentationScorer()
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 10, (2, 16, 16))
    scorer.update(torch.as_tensor(reference), torch.as_tensor(reference))
    metrics = scorer.metrics()
    assert isinstance(metrics["averaging"], str)
    record = RunRecord(task="segmentation", model="unet", model_name="unet", data={"kind": "phantom"}, metrics=metrics)
    assert invalid_record(record) is None
    assert invalid_record(RunRecord(**{**record.__dict__, "metrics": {**metrics, "mean_dice": 7.5}})) is not None


# ---------------------------------------------------------------- the exported model's CPU speed
EPYC = "cpu (AMD EPYC, x86_64, 2 threads)"


def _export(run: Path, ort_fps: float, eager_fps: float, passed: bool | None = True, load: float | None = None):
    """What `spinebench export` leaves in a run folder: export/speed.json, and export/parity.json (none when
    `passed` is None)."""
    folder = run / "export"
    folder.mkdir(parents=True, exist_ok=True)
    ort = {"latency_ms": 1000 / ort_fps, "fps": ort_fps, "images": 8, **({"load": load} if load is not None else {})}
    speed = {"batch": 1, "threads": 2, "cpu": "AMD EPYC", "onnxruntime": ort, "pytorch_eager": {"fps": eager_fps}}
    (folder / "speed.json").write_text(json.dumps(speed))
    if passed is not None:
        (folder / "parity.json").write_text(json.dumps({"task": "detection", "passed": passed}))


def test_the_export_files_the_report_reads_are_the_exporters():
    from spinebench import export
    from spinebench.report import collect

    assert (collect.EXPORT_DIR, collect.EXPORT_SPEED_FILE, collect.EXPORT_PARITY_FILE) == (
        export.EXPORT_DIR,
        export.SPEED_FILE,
        export.PARITY_FILE,
    )


def test_an_exported_cpu_speed_is_a_second_cpu_score_among_exports(tmp_path):
    """A run with a passed export shows onnxruntime's FPS and a score whose FPS_best is the fastest exported FPS of
    the table's runs (not eager's); a run without an export reads '-'; a failed or unchecked export is not scored
    and does not set FPS_best, and the report says why."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs" / "detection_real"
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=1, device=EPYC, fps=20.0, load=0.3)
    write_detection_run(outputs / "frcnn", "faster_rcnn", "faster_rcnn", data, seed=2, device=EPYC, fps=2.0, load=0.5)
    write_detection_run(outputs / "ssd300", "ssd300", "ssd300", data, seed=3, device=EPYC, fps=9.0, load=0.4)
    write_detection_run(outputs / "retina", "retinanet", "retinanet", data, seed=4, device=EPYC, fps=1.0, load=0.5)
    write_detection_run(outputs / "ssd512", "ssd512", "ssd512", data, seed=5, device=EPYC, fps=8.0, load=0.4)
    _export(outputs / "yolov8m", ort_fps=40.0, eager_fps=21.0, load=0.6)  # speed.json records its own load
    _export(outputs / "frcnn", ort_fps=5.0, eager_fps=2.1)  # no load: the eager one, same CPU and threads
    _export(outputs / "retina", ort_fps=500.0, eager_fps=1.0, passed=False)
    _export(outputs / "ssd512", ort_fps=400.0, eager_fps=8.0, passed=None)
    result = compare([outputs], load_manuscript(), n_resamples=5)
    table = result.table
    by = {r.model: r for r in result.collection.runs}

    def exported(model: str, column: str):
        return cell(table, column, model=model, status="finished")

    assert exported("yolov8m", "fps_cpu_exported") == 40.0
    assert exported("faster_rcnn", "fps_cpu_exported") == 5.0
    assert exported("faster_rcnn", "fps_cpu_eager_beside_export") == 2.1
    assert exported("yolov8m", "load_cpu_exported") == 0.6
    assert exported("faster_rcnn", "load_cpu_exported") == 0.5
    assert exported("faster_rcnn", "load_cpu_exported_from").startswith("metrics.json")
    assert exported("faster_rcnn", "hardware_cpu_exported") == "cpu (AMD EPYC, 2 threads, onnxruntime)"
    # the paper's formula with FPS_best = the fastest passed export (40, not the failed 500 nor eager's 20)
    assert exported("yolov8m", "implantability_cpu_exported") == pytest.approx(
        by["yolov8m"].values["mAP50"] / 2 + (40.0 / 40.0) / 4 + (1 - 0.6) / 4
    )
    assert exported("faster_rcnn", "implantability_cpu_exported") == pytest.approx(
        by["faster_rcnn"].values["mAP50"] / 2 + (5.0 / 40.0) / 4 + (1 - 0.5) / 4
    )
    # the eager CPU score is unchanged by the exports: FPS_best is eager yolov8m's 20
    assert exported("faster_rcnn", "implantability_cpu") == pytest.approx(
        by["faster_rcnn"].values["mAP50"] / 2 + (2.0 / 20.0) / 4 + (1 - 0.5) / 4
    )
    for model in ("ssd300", "retinanet", "ssd512"):
        assert exported(model, "fps_cpu_exported") is None
        assert exported(model, "implantability_cpu_exported") is None
    assert any("retina: its export/speed.json is not shown" in n and "failed its parity" in n for n in result.notes)
    assert any("ssd512: its export/speed.json is not shown" in n and "parity.json" in n for n in result.notes)

    assert run_report([outputs], tmp_path / "results", n_resamples=5, plots=False) == 0
    text = (tmp_path / "results" / "README.md").read_text()
    speed = _section(text, "### Detection").split("Speed and implantability:")[1].split("Traceability")[0]
    header = next(line for line in speed.splitlines() if line.startswith("| model"))
    column = [h.strip() for h in header.strip("|").split("|")].index("CPU exported (ORT): FPS / impl.")
    assert (
        _table_row(speed, "Faster R-CNN")[column]
        == f"5.00 / {exported('faster_rcnn', 'implantability_cpu_exported'):.3f}"
    )
    assert [_table_row(speed, name)[column] for name in ("SSD300", "RetinaNet", "SSD512", "DETR")] == ["-"] * 4
    assert "*CPU exported (ORT)*" in speed and "second CPU score" in speed


def test_an_exported_speed_on_other_threads_has_its_own_fps_best(tmp_path):
    """Exported FPS timed with other threads (or on another CPU) is another hardware label: it does not set the
    FPS_best of an export timed with 2 threads, and borrows no eager load timed with 2."""
    data, outputs = _data_block("real", "detection_real", tmp_path / "data"), tmp_path / "outputs" / "detection_real"
    write_detection_run(outputs / "yolov8m", "yolov8m", "yolov8m", data, seed=1, device=EPYC, fps=20.0, load=0.3)
    write_detection_run(outputs / "frcnn", "faster_rcnn", "faster_rcnn", data, seed=2, device=EPYC, fps=2.0, load=0.5)
    _export(outputs / "yolov8m", ort_fps=40.0, eager_fps=21.0)
    _export(outputs / "frcnn", ort_fps=5.0, eager_fps=2.1)
    speed = json.loads((outputs / "yolov8m" / "export" / "speed.json").read_text())
    (outputs / "yolov8m" / "export" / "speed.json").write_text(json.dumps({**speed, "threads": 16}))
    table = compare([outputs], load_manuscript(), n_resamples=5).table
    frcnn = rows(table, model="faster_rcnn", status="finished").iloc[0]
    yolo = rows(table, model="yolov8m", status="finished").iloc[0]
    assert frcnn["implantability_cpu_exported"] == pytest.approx(frcnn["mAP50"] / 2 + 1 / 4 + (1 - 0.5) / 4)
    assert yolo["fps_cpu_exported"] == 40.0 and yolo["load_cpu_exported"] is None
    assert yolo["implantability_cpu_exported"] is None
