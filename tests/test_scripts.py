"""The scripts check what they are given before any work (the learning-run script every model name, so that a
typo does not cost an hour; the detection benchmarks the models of --profile; the GPU check its knobs), the training
benchmark measures every rate it reports, and the operator count of a training step says what it claims."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spinebench.engine import fit

pytestmark = pytest.mark.slow  # the benchmark-script checks: make test-all
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_learning_script_refuses_an_unknown_model_before_running_any(tmp_path):
    logs = tmp_path / "logs"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "learn_detection_cpu.sh"), "retinanet", "retinanett"],
        env={**os.environ, "LOG_DIR": str(logs)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "unknown model retinanett (yolov8n faster_rcnn retinanet ssd300 ssd512 yolov7_tiny detr_light)"
    )
    assert list(logs.iterdir()) == []  # retinanet, named first, did not start


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_segmentation_learning_script_refuses_an_unknown_model_before_running_any(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "learn_segmentation_cpu.sh"), "transunet_light", "swin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "unknown model swin (unet_light deeplabv3_light swin_unet_light transunet_light)"


@pytest.mark.parametrize(
    "script, good", [("bench_detection_train.py", "retinanet"), ("bench_detection_infer.py", "faster_rcnn")]
)
def test_benchmarks_refuse_to_profile_what_they_cannot(script, good):
    """--profile names torchvision detectors only: a YOLO or a misspelt name stops before any work, in one line."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--profile", f"{good},yolov8m,ssd301"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "error: argument --profile: cannot profile yolov8m, ssd301: one of faster_rcnn, retinanet, ssd300, ssd512"
        )
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "knob, value, says",
    [
        ("GPU_CHECK_DET_S", "5m", "is not a whole number above 0"),
        ("LEARN_EPOCHS", "0", "is not a whole number above 0"),
        ("GPU_CHECK_DEVICE", "gpu", "is not cuda or cpu"),
        ("GPU_CHECK_DDP_S", "2m", "is not a whole number above 0"),
        (
            "GPU_CHECK_STAGES",
            "detection,detr",
            "names detr, not a stage (detection inference learn segmentation detr-yolov7 transunet-swin ddp)",
        ),
    ],
)
def test_gpu_check_refuses_a_bad_knob_before_any_work(tmp_path, knob, value, says):
    """A typo in a time knob used to become a 5 s slot in silence, and an unknown device the CPU settings."""
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(out), knob: value},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"scripts/gpu_check.sh: {knob}={value} {says}"
    assert not out.exists()  # nothing installed, measured or written


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_stops_at_once_without_torch(tmp_path):
    """Without the carried wheels the device's python has no torch: every stage would fail in turn on lent device
    time. The script stops first, saying what to carry."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DEVICE": "cpu", "PY": "false"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2 and "failed" not in result.stdout
    assert result.stderr.startswith("scripts/gpu_check.sh: false cannot import torch") and ".whl" in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "selected, stages",
    [
        (
            None,  # the default: the first call's stages
            [
                "detection benchmark",
                "inference benchmark",
                "learning run",
                "tests",
                "segmentation benchmark unet_light",
            ],
        ),
        (
            "ddp,detr-yolov7,transunet-swin",  # the second call's, in the script's order whatever the order named
            [
                "detection benchmark detr, yolov7",
                "segmentation benchmark transunet_light",
                "segmentation benchmark swin_unet_light",
                "ddp benchmark",
            ],
        ),
    ],
)
def test_gpu_check_exits_non_zero_naming_every_stage_that_failed(tmp_path, selected, stages):
    """A device call reports its exit status: the script used to exit 0 with every stage failed. Here each stage's
    python fails at once (it only answers the torch check); the script still runs every stage asked for (and no
    other), says each failure and lists them."""
    python = tmp_path / "python"
    python.write_text('#!/usr/bin/env bash\n[ "$1" = - ] && exit 0\nexit 1\n')  # `python - <<script` succeeds
    python.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DEVICE": "cpu", "PY": str(python)}
    env.pop("GPU_CHECK_STAGES", None)
    if selected:
        env["GPU_CHECK_STAGES"] = selected
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert result.stdout.count(" failed (") == len(stages), result.stdout
    assert all(f"{stage} failed (exit 1)" in result.stdout for stage in stages), result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"failed stages: {','.join(stages)}"


def test_training_benchmark_measures_every_rate_it_reports(tmp_path, cache_dir, capsys):
    """benchmarks/bench_detection_train.py end to end for one torchvision detector on the CPU: each rate is a
    measurement (finite, above 0), and the row's rate and ratio are what they claim to be."""
    doc = _ssd300_row(
        "bench_detection_train",
        ["--steps", "2", "--data-on-device", "true"],
        tmp_path,
        cache_dir,
        timed=DETECTOR_RATES,
    )
    assert doc["meta"]["data"].startswith("PHANTOM") and doc["meta"]["data"].endswith(": data=detection_phantom_tiny")
    assert doc["meta"]["device"].startswith("cpu")
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]
    assert (
        header.split()[:10]
        == ["model", "input", "batch", "spinebench", "reference", "ratio", "held", "data", "path", "(workers)"]
        and "nan" not in row
    )


def test_the_profiled_engine_epoch_trains_but_writes_no_checkpoint(tmp_path):
    """--profile's engine epoch is the steps alone: on a GPU its checkpoint write (every weight and optimizer buffer
    copied to the host, each copy a sync) would bury the steps' own syncs in the op table."""
    from test_engine import ToyModule, _cfg, _loaders

    result = _benchmark("bench_detection_train").without_checkpoints(
        lambda: fit(ToyModule(), _loaders()[0], None, _cfg(1), tmp_path, monitor="none")
    )()
    assert len(result.history) == 1 and result.history[0]["images_per_s"] > 0
    assert not (tmp_path / "checkpoints").exists()


def test_inference_benchmark_measures_every_rate_it_reports(tmp_path, cache_dir, capsys):
    """benchmarks/bench_detection_infer.py end to end for one torchvision detector on the CPU: the scoring path is
    timed before and after the reference, and the row's rate and ratio are what they claim to be."""
    doc = _ssd300_row(
        "bench_detection_infer",
        ["--passes", "1"],
        tmp_path,
        cache_dir,
        timed=["images_per_s_before_reference", "images_per_s_after_reference", "reference_images_per_s"],
    )
    assert doc["meta"]["data"].startswith("PHANTOM") and doc["meta"]["device"].startswith("cpu")
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]  # no column for rates it does not measure
    assert header.split()[:7] == ["model", "input", "batch", "spinebench", "reference", "ratio", "(cpu"]
    assert "nan" not in row and row.endswith("vs compute-only")


def test_segmentation_benchmark_measures_every_rate_it_reports(tmp_path):
    """benchmarks/bench_segmentation_train.py end to end on the CPU (a light U-Net at 64 x 160): each rate is a
    measurement, each ratio is its two rates, and the labels say what ran on which data."""
    out = tmp_path / "seg.json"
    assert (
        _benchmark("bench_segmentation_train").main(
            [
                "--model",
                "unet_light",
                "--batch",
                "2",
                "--size",
                "64",
                "160",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    rates = [
        "compute_only_images_per_s",
        "spinebench_images_per_s",
        "infer_spinebench_images_per_s",
        "infer_compute_only_images_per_s",
    ]
    assert all(math.isfinite(doc[key]) and doc[key] > 0 for key in rates), {key: doc[key] for key in rates}
    assert doc["ratio"] == pytest.approx(doc["spinebench_images_per_s"] / doc["compute_only_images_per_s"])
    for prefix in ("", "infer_"):  # timed before and after the reference, the mean taken
        timed = [doc[f"{prefix}spinebench_images_per_s_{when}_reference"] for when in ("before", "after")]
        assert all(math.isfinite(rate) and rate > 0 for rate in timed)
        assert doc[f"{prefix}spinebench_images_per_s"] == pytest.approx(sum(timed) / 2)
    assert doc["infer_ratio"] == pytest.approx(
        doc["infer_spinebench_images_per_s"] / doc["infer_compute_only_images_per_s"]
    )
    assert (doc["model"], doc["input_size"], doc["batch"]) == ("unet_light", [64, 160], 2)
    assert doc["data"].startswith("PHANTOM") and doc["device"].startswith("cpu")
    assert doc["precision"] == doc["infer_precision"] == "float32"  # no autocast on the CPU


def _ssd300_row(
    script: str, extra: list[str], tmp_path: Path, cache_dir: Path, timed: list[str], model: str = "ssd300"
) -> dict:
    """A detection benchmark's JSON for SSD300 (or `model`) at 160 x 160 on the tiny phantom, batch 2, on the CPU,
    once its row is checked: every `timed` rate measured (finite, above 0), the row's rate the mean of the first two
    (timed before and after the reference), and its ratio that rate over the reference's."""
    out = tmp_path / f"{script}.json"
    _benchmark(script).main(
        [
            "--models",
            model,
            "--device",
            "cpu",
            "--data",
            "detection_phantom_tiny",
            "--cache",
            str(cache_dir),
            "--batch",
            "2",
            "--max-input-size",
            "160",
            "--workers",
            "0",
            *extra,
            "--json",
            str(out),
        ]
    )
    doc = json.loads(out.read_text())
    row = doc["rows"][0]
    assert all(math.isfinite(row[key]) and row[key] > 0 for key in timed), {key: row[key] for key in timed}
    assert row["images_per_s"] == pytest.approx((row[timed[0]] + row[timed[1]]) / 2)
    assert row["ratio"] == pytest.approx(row["images_per_s"] / row["reference_images_per_s"])
    assert (row["model"], row["input_size"], row["batch"]) == (model, [160, 160], 2)
    return doc


DETECTOR_RATES = [
    "images_per_s_before_reference",
    "images_per_s_after_reference",
    "engine_on_held_batches_images_per_s",
    "reference_images_per_s",
    "data_path_images_per_s",
    "data_path_workers_images_per_s",
]


@pytest.mark.parametrize("model", ["detr_light", "yolov7_tiny"])
def test_training_benchmark_times_detr_and_yolov7_against_their_own_step(model, tmp_path, cache_dir, capsys):
    """Issue 28: DETR and YOLOv7 (EngineDetectors, outside torchvision's API) get the torchvision detectors' rows:
    the engine before and after its compute-only reference (their TrainModule's own losses, with the optimizer fit()
    builds from their parameter groups), the engine on held batches, the data path."""
    if model == "yolov7_tiny":
        pytest.importorskip("sas_yolov7", reason="the [yolov7] extra")
    bench = _benchmark("bench_detection_train")
    assert bench.is_engine_detector(model) and not bench.is_engine_detector("faster_rcnn")
    assert not bench.is_engine_detector("yolov8n")  # ultralytics' own loop: the YOLOv8 row
    doc = _ssd300_row(
        "bench_detection_train",
        ["--steps", "2", "--data-on-device", "true"],
        tmp_path,
        cache_dir,
        timed=DETECTOR_RATES,
        model=model,
    )
    assert doc["rows"][0]["path"] == "spinebench engine" and doc["rows"][0]["reference"] == "compute-only"
    header, row = capsys.readouterr().out.strip().splitlines()[-2:]
    assert header.split()[:7] == ["model", "input", "batch", "spinebench", "reference", "ratio", "held"]
    assert row.startswith(model) and "nan" not in row


def test_detection_benchmarks_refuse_a_model_they_cannot_time_before_any_work(tmp_path):
    """A misspelt model, or DETR given to the inference benchmark (which times torchvision and YOLOv8 only), stops
    in one line before the phantom is made."""
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit, match=r"^no model config detrr \(configs/model/<name>.yaml\)$"):
        _benchmark("bench_detection_train").main(["--models", "faster_rcnn,detrr", "--cache", str(cache)])
    with pytest.raises(
        SystemExit, match="^detr_light: this benchmark times the torchvision detectors and YOLOv8 only$"
    ):
        _benchmark("bench_detection_infer").main(["--models", "detr_light", "--cache", str(cache)])
    assert not cache.exists()


@pytest.mark.parametrize("model", ["transunet_light", "swin_unet_light"])
def test_segmentation_benchmark_times_the_segmenters_built_for_one_input_size(model, tmp_path):
    """Issue 29: TransUNet and Swin-UNet (SizedSegmentationBenchmark: the network built for --size) through the
    segmentation benchmark, each rate measured and each ratio its two rates."""
    out = tmp_path / "seg.json"
    argv = ["--model", model, "--batch", "2", "--size", "64", "64", "--steps", "1", "--device", "cpu"]
    assert _benchmark("bench_segmentation_train").main([*argv, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    rates = ["compute_only_images_per_s", "spinebench_images_per_s", "infer_compute_only_images_per_s"]
    assert all(math.isfinite(doc[key]) and doc[key] > 0 for key in rates), {key: doc[key] for key in rates}
    assert doc["ratio"] == pytest.approx(doc["spinebench_images_per_s"] / doc["compute_only_images_per_s"])
    assert (doc["model"], doc["input_size"], doc["batch"]) == (model, [64, 64], 2)


def test_ddp_benchmark_times_one_process_and_the_ddp_path_in_fresh_processes(tmp_path, cache_dir):
    """benchmarks/bench_ddp.py on the CPU (gloo): one process, torchrun at world size 1 with the engine's DDP path
    made to run (its steps through DistributedDataParallel), torchrun with 2 ranks (the engine's own join), one
    process again; each ratio is its two rates."""
    out = tmp_path / "ddp.json"
    argv = ["--device", "cpu", "--model", "unet_light", "--data", "segmentation_phantom_tiny", "--batch", "4"]
    argv += ["--size", "64", "64", "--steps", "2", "--epochs", "1", "--workers", "0", "--ranks", "1,2"]
    assert _benchmark("bench_ddp").main([*argv, "--cache", str(cache_dir), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    runs = {run["label"]: run for run in doc["runs"]}
    assert list(runs) == ["one process", "torchrun DDP, 1 rank", "torchrun DDP, 2 ranks", "one process, again"]
    ddp = [r["trained_through"] == ["DistributedDataParallel"] for r in runs.values()]
    assert [(r["world_size"], r["forced_ddp"]) for r in runs.values()] == [
        (1, False),
        (1, True),
        (2, False),
        (1, False),
    ]
    assert ddp == [False, True, True, False] and all(len(r["trained_through"]) == 1 for r in runs.values())
    assert [r["rank_batch"] for r in runs.values()] == [4, 4, 2, 4]  # the global batch shared among the ranks
    assert all(math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0 for r in runs.values())
    two = runs["torchrun DDP, 2 ranks"]
    assert two["per_rank_images_per_s"] == pytest.approx(two["images_per_s"] / 2)
    single = (runs["one process"]["images_per_s"] + runs["one process, again"]["images_per_s"]) / 2
    assert doc["single_images_per_s"] == pytest.approx(single)
    assert doc["ratio"] == pytest.approx(runs["torchrun DDP, 1 rank"]["images_per_s"] / single)
    assert doc["ddp_cost"] == pytest.approx(1 - doc["ratio"])
    assert doc["data"].startswith("PHANTOM") and doc["device"].startswith("cpu") and doc["input_size"] == [64, 64]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--ranks", "0"], "argument --ranks: '0': comma-separated world sizes >= 1, e.g. 1 or 1,2"),
        (["--ranks", "1,2", "--batch", "3", "--device", "cpu"], "--batch 3 (the global batch) does not divide"),
        (["--force-ddp"], "--force-ddp is for the measurements this script starts itself"),
    ],
)
def test_ddp_benchmark_refuses_what_it_cannot_time_before_any_work(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        _benchmark("bench_ddp").main([*argv, "--cache", str(tmp_path / "cache")])
    assert stopped.value.code == 2
    assert says in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "cache").exists()


def test_step_op_counts_grow_with_the_images_holding_a_box_and_the_data_path_never_syncs(tmp_path, cache_dir):
    """benchmarks/count_step_ops.py: RetinaNet's loss matches anchors per image with a box (more operators, one
    more host sync each); the engine's data path (to_device with augmentation) makes no host sync at all."""
    count_step_ops = _benchmark("count_step_ops")
    out = tmp_path / "ops.json"
    assert (
        count_step_ops.main(
            [
                "--models",
                "retinanet",
                "--data",
                "detection_phantom_tiny",
                "--cache",
                str(cache_dir),
                "--batch",
                "2",
                "--max-input-size",
                "64",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    rows = doc["models"][0]["rows"]
    assert [r["images_with_a_box"] for r in rows] == [0, 1, 2]
    steps = [r["step"] for r in rows]
    assert steps[0]["ops"] < steps[1]["ops"] < steps[2]["ops"]
    assert steps[0]["host_syncs"] < steps[1]["host_syncs"] < steps[2]["host_syncs"]
    assert all(r["data_path"]["host_syncs"] == 0 and r["data_path"]["ops"] > 0 for r in rows)
    assert doc["meta"]["data"].startswith("PHANTOM")


def test_a_boolean_mask_counts_as_a_host_sync_and_indices_do_not():
    """What a GPU syncs on, seen from the CPU: a mask's indexing (nonzero runs inside it, below the dispatcher,
    forward and backward), .item(), a repeat_interleave without its output size; not integer indexing."""
    count_step_ops = _benchmark("count_step_ops")
    x = torch.arange(6.0, requires_grad=True)
    with count_step_ops.OpCounter() as counter:
        y = x[x > 2]
        y.sum().backward()
        x.detach()[torch.tensor([0, 1])].sum().item()
        torch.tensor([1, 2]).repeat_interleave(torch.tensor([2, 1]))
        torch.tensor([1, 2]).repeat_interleave(torch.tensor([2, 1]), output_size=3)
    assert counter.summary()["host_syncs_by_op"] == {
        "aten.index.Tensor": 1,
        "aten.index_put.default": 1,
        "aten._local_scalar_dense.default": 1,
        "aten.repeat_interleave.Tensor": 1,
    }


def test_scoring_host_bench_times_both_collector_modes_on_the_same_entries(tmp_path):
    """benchmarks/bench_scoring_host.py: each mode turns the same synthetic outputs into the same number of COCO
    entries a pass, and the collector's time is part of the pass it is reported for."""
    bench = _benchmark("bench_scoring_host")
    out = tmp_path / "host.json"
    assert (
        bench.main(["--images", "20", "--detections", "10", "--batch", "8", "--passes", "2", "--json", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    assert [r["collector"] for r in doc["rows"]] == ["running", "paused"]
    for row in doc["rows"]:
        assert row["entries_per_pass"] == 200 and len(row["collections_per_pass"]) == 3
        assert 0 <= sum(row["collector_ms_per_pass"]) <= row["ms_per_pass"]
        assert row["ms_per_batch"] == pytest.approx(row["ms_per_pass"] / 3)
    assert doc["meta"]["objects_tracked"] > 0


def test_step_op_count_refuses_what_it_cannot_count(cache_dir, capsys):
    """A YOLO name (its steps run inside ultralytics), and a phantom too small for the batch asked for."""
    count_step_ops = _benchmark("count_step_ops")
    with pytest.raises(SystemExit) as stopped:
        count_step_ops.main(["--models", "retinanet,yolov8m"])
    assert stopped.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("error: argument --models: cannot count yolov8m: one of faster_rcnn, retinanet, ssd300, ssd512")
    )
    with pytest.raises(
        SystemExit, match="^detection_phantom_tiny: needs 16 training images with a box and 16 without$"
    ):
        count_step_ops.main(["--models", "retinanet", "--data", "detection_phantom_tiny", "--cache", str(cache_dir)])


def _benchmark(name: str):
    """A script of benchmarks/ imported as a module (they import each other by their file names)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_decode_precision_scores_a_finished_run_three_ways(tmp_path, cache_dir):
    """benchmarks/decode_precision.py: under bf16 autocast torchvision builds anchors and decodes deltas in bf16
    (what spinebench's float32 box geometry avoids: if a torchvision release stops doing so, this fails and the
    hooks can go), and a finished Faster R-CNN smoke run's best checkpoint is scored by the one evaluator in each
    of the three modes."""
    from test_train_detection import compose_cfg  # the smoke runs' Hydra composition

    from spinebench.pipeline import train

    smoke = ["model=faster_rcnn", "trainer=smoke", "data=detection_phantom_tiny"]
    train(compose_cfg("train", smoke, tmp_path, cache_dir))
    decode_precision = _benchmark("decode_precision")
    out = tmp_path / "decode.json"
    assert decode_precision.main([str(tmp_path / "run"), "--boxes", "2000", "--batch", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["args"]["boxes"] == "2000" and doc["meta"]["device"].startswith("cpu")
    assert doc["decode"]["mean_px"] > 0.1 and doc["decode"]["min_iou"] < 0.95
    assert all(anchors["max_px"] >= 1 for anchors in doc["anchors"].values())  # bf16's grid, torchvision as it is
    scores = doc["scores"]
    assert list(scores["scores"]) == list(decode_precision.MODES)
    assert all(0.0 <= value <= 1.0 for mode in scores["scores"].values() for value in mode.values())
    assert [("top_box_iou_with_fp32" in mode) for mode in scores["scores"].values()] == [False, True, True]
    assert scores["arch"] == "faster_rcnn" and scores["checkpoint_epoch"] == 1 and scores["data"].startswith("PHANTOM")
    with pytest.raises(SystemExit, match="no config.yaml and checkpoints/best.pt"):
        decode_precision.main([str(tmp_path)])
    config = tmp_path / "run" / "config.yaml"
    torchvision = "spinebench.detection.torchvision_benchmark.TorchvisionDetector"
    yolo = "spinebench.detection.yolo.YoloV8"
    assert f"_target_: {torchvision}" in config.read_text()
    config.write_text(config.read_text().replace(torchvision, yolo))
    with pytest.raises(SystemExit, match=f"model._target_={yolo} is not a torchvision detector"):
        decode_precision.main([str(tmp_path / "run")])
