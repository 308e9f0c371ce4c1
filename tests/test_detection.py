"""Detection building blocks: models build and train a step on CPU, pretrained-weight rules, the decoded-image
cache, device augmentation, the YOLO export, and ultralytics' offline containment (a real CLI run)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from spinebench.data.cache import cache_key, decoded_cache
from spinebench.data.detection import read_detection_split
from spinebench.data.source import prepare_dataset
from spinebench.detection import models as detectors
from spinebench.detection.data import build_dataset, collate, detection_loader, to_device
from spinebench.detection.models import load_pretrained
from spinebench.detection.yolo import export_yolo_dataset
from spinebench.engine import ConfigError
from spinebench.errors import DataError
from spinebench.weights import WeightsError, resolve_weights

from helpers.files import write_png

REPO = Path(__file__).resolve().parents[1]
TINY = {"n_train": 8, "n_val": 4, "n_test": 4, "seed": 0, "domain": "porcine"}


@pytest.fixture(scope="session")
def tiny_detection(cache_dir):
    """The session's tiny detection phantom (same folder as `data=detection_phantom_tiny` with this cache)."""
    return prepare_dataset(
        "detection_phantom_tiny", "detection", cache_dir / "phantom" / "detection-porcine-s0-8-4-4", phantom=TINY
    )


def _build(arch: str, *args, **kwargs) -> torch.nn.Module:
    """The detector of `arch` (its builder is models.build_<arch>), as a model config's network node builds it."""
    return getattr(detectors, f"build_{arch}")(*args, **kwargs)


def _anchor_generator(model: torch.nn.Module) -> torch.nn.Module:
    from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

    return next(m for m in model.modules() if isinstance(m, (AnchorGenerator, DefaultBoxGenerator)))


def _targets():
    return [
        {"boxes": torch.tensor([[40.0, 20.0, 120.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


@pytest.mark.parametrize(
    "arch, size",
    [("faster_rcnn", (64, 160)), ("retinanet", (64, 160)), ("ssd", (300, 300)), ("ssd_multiscale", (300, 300))],
)
def test_detector_builds_and_trains_a_step(arch, size):
    torch.manual_seed(0)
    model = _build(arch, num_classes=2, input_size=size)
    images = [torch.rand(3, 64, 160) for _ in range(2)]
    losses = model(images, _targets())  # the backward pass is covered by the smoke runs
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        out = model(images[:1])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    assert out["boxes"].shape[1] == 4 and (out["boxes"][:, 2] <= 160 + 1e-3).all()  # back in image coordinates


@pytest.mark.parametrize(
    "arch, size",
    [("faster_rcnn", (64, 160)), ("retinanet", (64, 160)), ("ssd", (128, 128)), ("ssd_multiscale", (300, 300))],
)
def test_anchors_and_boxes_stay_float32_under_bf16_autocast(arch, size):
    """On a GPU the engine trains and validates under bf16 autocast, where torchvision would build the anchors and
    decode the boxes in bf16 (coordinates on a 2-4 px grid). The CPU's bf16 autocast shows the same: the anchors
    must equal float32's, and the boxes come out in float32, off bf16's grid."""
    torch.manual_seed(0)
    model = _build(arch, num_classes=2, input_size=size)
    anchors = []
    _anchor_generator(model).register_forward_hook(lambda _m, _i, out: anchors.append(out[0]))
    images = [torch.rand(3, 64, 160) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, _targets())
        model.eval()
        with torch.no_grad():
            boxes = model(images[:1])[0]["boxes"]
    with torch.no_grad():
        model(images[:1])  # float32: the reference anchors
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert anchors[1].dtype == torch.float32 and torch.equal(anchors[1], anchors[2])
    assert boxes.dtype == torch.float32 and len(boxes)
    assert (boxes.bfloat16().float() != boxes).any()  # bf16 arithmetic would leave every coordinate on its grid


def test_paper_parameter_count_faster_rcnn():
    """Pretrained (frozen-BN) Faster R-CNN R50-FPN with 2 classes has the paper's 41,299,161 parameters."""
    model = _build("faster_rcnn", 2, (256, 642), pretrained=True)
    assert sum(p.numel() for p in model.parameters()) == 41_299_161


def test_paper_parameter_count_retinanet():
    """RetinaNet in torchvision's v2 layout with 2 classes has the paper's 36,352,630 parameters."""
    model = _build("retinanet", 2, (256, 642))
    assert sum(p.numel() for p in model.parameters()) == 36_352_630


@pytest.mark.parametrize("size", [(300, 300), (512, 512)])
@pytest.mark.parametrize("pretrained", [False, True])
def test_paper_parameter_count_ssd(size, pretrained):
    """The authors' SSD (whole ResNet-50 trunk, six-level head) has the paper's 24,641,780 parameters at both
    sizes, pretrained or not (their code trains every layer, batch norm included)."""
    model = _build("ssd", 2, size, pretrained=pretrained)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 24_641_780


@pytest.mark.parametrize(
    "arch, size, anchors",
    [("ssd", (300, 300), 10 * 10 * 4), ("ssd", (512, 512), 16 * 16 * 4), ("ssd_multiscale", (300, 300), 8732)],
)
def test_ssd_layouts_predict_from_their_anchors(arch, size, anchors):
    """The authors' SSD predicts from one stride-32 map (4 anchors a cell); the multi-scale one from six maps."""
    model = _build(arch, 2, size).eval()
    with torch.no_grad():
        features = list(model.backbone(torch.rand(1, 3, *size)).values())
        out = model.head(features)
    assert out["bbox_regression"].shape == (1, anchors, 4) and out["cls_logits"].shape == (1, anchors, 2)
    assert len(features) == (1 if arch == "ssd" else 6)


@pytest.mark.parametrize(
    "arch, size, resize, expected",
    [
        ("faster_rcnn", (48, 400), "short_side", (48, 120)),  # 64 x 160 scaled by 48/64, aspect kept
        ("faster_rcnn", (96, 128), "stretch", (96, 128)),
        ("retinanet", (96, 128), "stretch", (96, 128)),
        ("ssd", (96, 160), None, (96, 160)),  # height first, as everywhere in spinebench (torchvision's is width first)
    ],
)
def test_detectors_resize_as_configured(arch, size, resize, expected):
    model = _build(arch, 2, size, resize=resize).eval()
    images, _ = model.transform([torch.rand(3, 64, 160)])
    assert tuple(images.image_sizes[0]) == expected


def test_resize_rejects_what_a_detector_cannot_do():
    """By the builder, and by the benchmark before anything is built (a one-line user error)."""
    from functools import partial

    from spinebench.detection.torchvision_benchmark import TorchvisionDetector

    with pytest.raises(ConfigError, match="short_side or stretch"):
        _build("faster_rcnn", 2, (64, 160), resize="crop")
    with pytest.raises(ConfigError, match="SSD resizes every image"):
        _build("ssd", 2, (300, 300), resize="short_side")
    with pytest.raises(
        ConfigError, match="^SSD resizes every image to model.input_size: model.resize must be stretch$"
    ):
        TorchvisionDetector("ssd300", partial(detectors.build_ssd), input_size=(300, 300), resize="short_side")
    assert TorchvisionDetector("ssd300", partial(detectors.build_ssd), input_size=(300, 300)).resize == "stretch"
    assert TorchvisionDetector("retinanet", partial(detectors.build_retinanet)).resize == "short_side"


def test_a_network_node_that_is_not_a_detector_builder_is_one_line():
    """The benchmark reads the builder's facts (weights files, resize modes) before building: another callable
    there (a segmentation network, say) is named, not met as a TypeError mid-run."""
    from functools import partial

    from spinebench.detection.torchvision_benchmark import TorchvisionDetector
    from spinebench.segmentation.models import build_plain_unet

    with pytest.raises(ConfigError, match=r"^model.network=.*build_plain_unet.*: not a detector builder"):
        TorchvisionDetector("x", partial(build_plain_unet))


def test_a_smoke_cap_stops_at_the_smallest_input_a_detector_takes():
    """trainer.max_input_size shrinks the input keeping its aspect, except below what the layers take (the
    multi-scale SSD's extra blocks need 300 px)."""
    from functools import partial
    from types import SimpleNamespace

    from spinebench.detection.torchvision_benchmark import TorchvisionDetector

    ctx = SimpleNamespace(trainer=SimpleNamespace(max_input_size=160))
    assert TorchvisionDetector("r", partial(detectors.build_retinanet)).effective_size(ctx) == [64, 160]
    multiscale = TorchvisionDetector("m", partial(detectors.build_ssd_multiscale), input_size=(512, 512))
    assert multiscale.effective_size(ctx) == [300, 300]


def test_weights_rules(tmp_path, caplog):
    with pytest.raises(WeightsError, match="file not found"):
        resolve_weights(str(tmp_path / "missing.pth"), ["x.pth"], tmp_path, "faster_rcnn")
    choice = resolve_weights("auto", ["nothing-here.pth"], tmp_path, "faster_rcnn")
    assert choice.pretrained is False and choice.path is None
    assert "TRAINING FROM SCRATCH" in caplog.text  # said loudly, never silently
    # an ImageNet ResNet-50 state dict found in <cache>/weights goes into the backbone
    from torchvision.models import resnet50

    (tmp_path / "weights").mkdir()
    torch.save(resnet50().state_dict(), tmp_path / "weights" / "resnet50-0676ba61.pth")
    choice = resolve_weights("auto", ["resnet50-0676ba61.pth"], tmp_path, "faster_rcnn")
    assert choice.pretrained and choice.path.name == "resnet50-0676ba61.pth"
    counts = load_pretrained(_build("faster_rcnn", 2, (64, 160), pretrained=True), choice.path)
    assert counts["loaded"] > 250
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")  # a file of nothing this model has
    with pytest.raises(WeightsError, match=r"other.pth: no tensor matches this model"):
        load_pretrained(_build("faster_rcnn", 2, (64, 160)), tmp_path / "other.pth")


def _grey_pngs(folder: Path, arrays) -> list[Path]:
    """0.png, 1.png, ... in `folder`, one per array: the files a decode-cache test builds its cache from."""
    paths = [folder / f"{i}.png" for i in range(len(arrays))]
    for path, array in zip(paths, arrays):
        write_png(path, array)
    return paths


def test_decoded_cache_is_built_once_and_rebuilt_on_change(tmp_path):
    paths = _grey_pngs(tmp_path, [np.full((5, 7), i * 10, np.uint8) for i in range(3)])
    cache = decoded_cache(paths, tmp_path / "cache")
    assert cache[2].shape == (5, 7) and int(cache[2][0, 0]) == 20
    again = decoded_cache(paths, tmp_path / "cache")
    assert again.data_path == cache.data_path  # reused, not decoded again
    time.sleep(0.01)
    Image.fromarray(np.full((5, 7), 99, np.uint8)).save(paths[2])
    os.utime(paths[2], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = decoded_cache(paths, tmp_path / "cache")
    assert changed.data_path != cache.data_path and int(changed[2][0, 0]) == 99


@pytest.mark.parametrize("damage", ["index", "data"])
def test_a_damaged_cache_is_built_again_not_read(damage, tmp_path):
    """The cache is derived data: an index that cannot be read or a data file of the wrong size (a disk, a copy)
    is built again from the PNGs, where reading it would fail or hand out wrong pixels."""
    paths = _grey_pngs(tmp_path, [np.full((5, 7), i * 10, np.uint8) for i in range(3)])
    cache = decoded_cache(paths, tmp_path / "cache")
    damaged = cache.data_path.with_suffix(".json") if damage == "index" else cache.data_path
    damaged.write_bytes(damaged.read_bytes()[:-3])
    again = decoded_cache(paths, tmp_path / "cache")
    assert [int(again[i][0, 0]) for i in range(3)] == [0, 10, 20] and again.data_path.stat().st_size == 3 * 35


def test_a_truncated_png_stops_the_cache_build_naming_it_and_leaves_no_partial_file(tmp_path):
    """A release can hold a truncated PNG that only a full decode finds. The build stops naming it, and leaves
    nothing in the cache: each retry would otherwise leave a partial file the size of the split (GBs)."""
    noise = [np.random.default_rng(i).integers(0, 255, (50, 70), dtype=np.uint8) for i in range(3)]
    paths = _grey_pngs(tmp_path, noise)
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # header intact, image data cut short
    with pytest.raises(
        DataError,
        match=r"1\.png: unreadable or truncated image .*; `spinebench data check <release "
        r"folder>` lists every such file",
    ):
        decoded_cache(paths, tmp_path / "cache", workers=1)
    assert not list((tmp_path / "cache").rglob("*.*"))


def test_a_cache_build_clears_what_a_killed_build_of_the_same_files_left_and_nothing_else(tmp_path):
    """A build killed outright (OOM, SIGKILL) cannot clean up: the next build of the same files removes the
    partial file of a process that no longer runs, and keeps one that a running build is still writing."""
    paths = _grey_pngs(tmp_path, [np.zeros((5, 7), np.uint8)])
    folder = tmp_path / "cache" / "decoded"
    folder.mkdir(parents=True)
    key = cache_key(paths, "spinebench.data.images.read_gray")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host, gone = socket.gethostname(), int(finished.stdout)
    dead = [folder / f"{key}.u8.{host}.{gone}.tmp", folder / f"{key}.json.{host}.{gone}.tmp"]
    kept = [
        folder / f"{key}.u8.{host}.{os.getppid()}.tmp",  # a build still running
        folder / f"{key}.u8.other-node.{gone}.tmp",  # another host's process: its pid means nothing here
        folder / f"{'0' * 24}.u8.{host}.{gone}.tmp",
    ]  # another file list's cache: not this build's to judge
    for path in dead + kept:
        path.write_bytes(b"partial")
    decoded_cache(paths, tmp_path / "cache")
    assert not any(path.exists() for path in dead) and all(path.exists() for path in kept)


@pytest.mark.gpu
def test_moving_a_batch_to_a_gpu_makes_no_synchronizing_call(tiny_detection, cache_dir):
    """The CUDA form of the meta-device test: torch's sync debug mode raises on any synchronizing call."""
    samples = read_detection_split(tiny_detection.root, "train")
    loader = detection_loader(build_dataset(samples, cache_dir), 4, True, 0, torch.device("cuda"))
    batch = next(iter(loader))  # pinned, as in training
    torch.cuda.set_sync_debug_mode("error")
    try:
        images, targets, _ = to_device(batch, torch.device("cuda"), augment=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert images[0].is_cuda and len(targets) == 4


def test_a_batch_crosses_from_a_loader_worker_as_three_tensors(tiny_detection, cache_dir):
    """Each tensor costs the main process a shared-memory segment to open: the batch packs its targets."""
    samples = read_detection_split(tiny_detection.root, "train")
    loader = detection_loader(build_dataset(samples, cache_dir), 4, True, 1, torch.device("cpu"))
    batch = next(iter(loader))
    tensors = [t for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)]
    assert len(tensors) == 3 and all(t.is_shared() for t in tensors)
    assert batch[0].shape == (4, 275, 690) and sum(batch[1]["counts"]) == len(batch[1]["boxes"])


@pytest.mark.parametrize("stacked", [True, False])
def test_device_augmentation_flips_boxes_with_their_own_image(tiny_detection, cache_dir, stacked):
    samples = read_detection_split(tiny_detection.root, "train")
    dataset = build_dataset(samples, cache_dir)
    images, packed, indices = collate([dataset[i] for i in range(len(dataset))])
    batch = (images if stacked else list(images), packed, indices)
    plain, plain_targets, _ = to_device(batch, torch.device("cpu"), augment=False)
    for target, sample in zip(plain_targets, samples):  # unpacked per image, labels in torchvision's convention
        assert torch.equal(target["boxes"], torch.from_numpy(sample.boxes).float().reshape(-1, 4))
        assert torch.equal(target["labels"], torch.from_numpy(sample.labels).long() + 1)
    torch.manual_seed(0)
    augmented, targets, _ = to_device(batch, torch.device("cpu"), augment=True)
    assert augmented[0].shape == (3, 275, 690) and 0 <= float(augmented[0].min()) and float(augmented[0].max()) <= 1
    n_flipped = 0
    for image, target, original, original_target in zip(augmented, targets, plain, plain_targets):
        a, b = image[0].flatten(), original[0]
        mirrored = bool(
            torch.corrcoef(torch.stack([a, b.flip(-1).flatten()]))[0, 1]
            > torch.corrcoef(torch.stack([a, b.flatten()]))[0, 1]
        )
        mirror_boxes = torch.stack(
            [
                690 - original_target["boxes"][:, 2],
                original_target["boxes"][:, 1],
                690 - original_target["boxes"][:, 0],
                original_target["boxes"][:, 3],
            ],
            1,
        )
        assert torch.equal(target["boxes"], mirror_boxes if mirrored else original_target["boxes"])
        n_flipped += mirrored and len(target["boxes"]) > 0
    assert n_flipped, "expected at least one flipped image with a box"


def test_detector_sees_hematoma_as_foreground(tiny_detection, cache_dir):
    """torchvision reserves label 0 for background: the hematoma boxes of a batch must reach the ROI head as a
    foreground class, else Faster R-CNN trains to a low loss and never detects anything."""
    samples = read_detection_split(tiny_detection.root, "train")
    batch = collate([build_dataset(samples, cache_dir)[i] for i in range(len(samples))])
    _, targets, _ = to_device(batch, torch.device("cpu"), augment=False)
    with_boxes = [t for t in targets if len(t["boxes"])]
    assert with_boxes
    model = _build("faster_rcnn", 2, (64, 160)).train()
    _, _, labels, _ = model.roi_heads.select_training_samples([t["boxes"] for t in with_boxes], with_boxes)
    assert all(int(lab.max()) == 1 for lab in labels)  # the ground-truth boxes themselves are sampled as class 1


def test_predict_gives_each_image_its_own_detections(tiny_detection, cache_dir):
    """predict copies a batch's outputs to the host in one piece and splits them back per image."""
    from spinebench.detection.coco import detections_to_coco
    from spinebench.detection.torchvision_benchmark import predict

    samples = read_detection_split(tiny_detection.root, "test")
    loader = detection_loader(build_dataset(samples, cache_dir), 3, False, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = _build("faster_rcnn", 2, (64, 160)).eval()
    detections, seen = predict(model, loader, torch.device("cpu"))
    expected = []
    with torch.no_grad():
        for batch in loader:
            images, _, indices = to_device(batch, torch.device("cpu"))
            for index, out in zip(indices, model(images)):
                expected += detections_to_coco(
                    index + 1, out["boxes"].numpy(), out["scores"].tolist(), (out["labels"] - 1).tolist()
                )
    assert seen == list(range(1, len(samples) + 1)) and len(expected) > 0
    assert [(d["image_id"], d["category_id"]) for d in detections] == [
        (d["image_id"], d["category_id"]) for d in expected
    ]
    assert np.allclose([d["bbox"] + [d["score"]] for d in detections], [d["bbox"] + [d["score"]] for d in expected])


def test_predict_pauses_the_garbage_collector_and_gives_it_back_as_it_was(tiny_detection, cache_dir):
    """Off while the model runs (the entries predict keeps would trigger full collections between batches); on
    again afterwards, also when the model raises, and left off when the caller had it off."""
    import gc

    from spinebench.detection.torchvision_benchmark import predict

    samples = read_detection_split(tiny_detection.root, "test")
    loader = detection_loader(build_dataset(samples, cache_dir), 2, False, 0, torch.device("cpu"))
    model = _build("faster_rcnn", 2, (64, 160))
    collecting = []
    model.register_forward_pre_hook(lambda *_: collecting.append(gc.isenabled()))
    assert gc.isenabled()
    predict(model, loader, torch.device("cpu"))
    assert collecting and not any(collecting) and gc.isenabled()

    def fail(*_):
        raise RuntimeError("out of memory")

    handle = model.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict(model, loader, torch.device("cpu"))
    assert gc.isenabled()
    handle.remove()
    gc.disable()
    try:
        predict(model, loader, torch.device("cpu"), limit=1)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_yolo_export_links_not_copies(tiny_detection, tmp_path):
    data_yaml = export_yolo_dataset(tiny_detection.root, tmp_path / "yolo_data")
    data = yaml.safe_load(data_yaml.read_text())
    assert Path(data["path"]).is_absolute() and data["names"] == {0: "hematoma"}
    images = sorted((tmp_path / "yolo_data" / "images" / "train").iterdir())
    assert len(images) == 8 and all(p.is_symlink() for p in images)
    labels = sorted((tmp_path / "yolo_data" / "labels" / "train").iterdir())
    assert len(labels) == 8  # negatives get an empty label file
    lines = [line for p in labels for line in p.read_text().splitlines()]
    assert lines and all(line.startswith("0 ") and all(0 <= float(v) <= 1 for v in line.split()[1:]) for line in lines)


def test_yolo_cli_run_is_offline_and_contained(tiny_detection, cache_dir, tmp_path):
    """The real entry point with a fresh HOME and working dir: ultralytics writes nothing to ./runs or ~/.config."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR",)}
    env.update(
        HOME=str(home),
        SPINEBENCH_ROOT=str(work),
        SPINEBENCH_CACHE=str(cache_dir),
        YOLO_OFFLINE="1",
        MPLCONFIGDIR=str(tmp_path / "mpl"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench.train", "model=yolov8n", "data=detection_phantom_tiny", "trainer=smoke"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = work / "outputs" / "detection_phantom_tiny" / "yolov8n-smoke-s0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pretrained"] is False and metrics["model"] == "yolov8n"
    assert "ultralytics_mAP50" in metrics and 0 <= metrics["metrics"]["mAP50"] <= 1
    assert (run / "checkpoints" / "best.pt").is_file()
    assert not (work / "runs").exists() and not (home / ".config" / "Ultralytics").exists()
    assert (cache_dir / "ultralytics" / "Ultralytics" / "Arial.ttf").is_file()
    assert all(p.is_symlink() for p in (run / "yolo_data" / "images" / "train").iterdir())


def test_yolo_predictions_reach_their_own_image(tiny_detection, cache_dir):
    """predict_coco streams the files through ultralytics in batches of its `batch`; every image gets its own
    detections, whatever order the samples come in."""
    from spinebench.detection.yolo import keep_torch_threads, predict_coco, ultralytics_env

    ultralytics_env(cache_dir)
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    for branch in model.model.model[-1].cv3:  # class logits up: an untrained head then keeps boxes on every image
        branch[-1].bias.data.normal_(0.0, 2.0)
    samples = read_detection_split(tiny_detection.root, "train")
    with keep_torch_threads():  # ultralytics' predict resets torch's threads process-wide
        batched = predict_coco(model, samples, 160, "cpu", 3)
        batch_size = model.predictor.dataset.bs  # honoured: a Python list of files would be read as one batch of 8
        backwards = predict_coco(model, samples[::-1], 160, "cpu", 3)  # ultralytics sorts its input files
        alone = {
            index: predict_coco(model, samples[index : index + 1], 160, "cpu", 1) for index in (0, len(samples) - 1)
        }
    assert {d["image_id"] for d in batched} == set(range(1, len(samples) + 1))
    assert batch_size == 3

    def by_file(detections, order):
        return sorted((order[d["image_id"] - 1].image.name, d["bbox"], d["score"]) for d in detections)

    assert by_file(backwards, samples[::-1]) == by_file(batched, samples)  # the same batches: bit for bit
    for index, own in alone.items():  # the same detections as predicting that file alone
        mine = [d for d in batched if d["image_id"] == index + 1]
        assert len(mine) == len(own) > 0
        assert np.allclose([d["bbox"] for d in mine], [d["bbox"] for d in own], atol=1e-3)


def test_a_misspelt_or_mistyped_ultralytics_argument_is_one_line_before_training(cache_dir):
    from spinebench.detection.yolo import YoloV8, ultralytics_env

    ultralytics_env(cache_dir)
    with pytest.raises(ConfigError, match=r"model.args.mosaik is not an ultralytics argument \(close: mosaic"):
        YoloV8("yolov8n", size="n", args={"mosaik": 0}).check_args()
    with pytest.raises(ConfigError, match="model.args: 'mosaic=abc' is of invalid type str"):
        YoloV8("yolov8n", size="n", args={"mosaic": "abc"}).check_args()
    YoloV8("yolov8n", size="n", args={"mosaic": 0, "close_mosaic": 0}).check_args()
    YoloV8("yolov8n", size="n", args={"half": True}).check_args()  # an old name ultralytics still takes


def test_yolo_names_ultralytics_last_pt_as_what_a_restart_resumes_from(tmp_path):
    """ultralytics writes its own last.pt each epoch (the runner does not know where): a folder holding it has
    trained, and the copy in checkpoints/ of a finished run counts too."""
    from spinebench.detection.yolo import YoloV8

    bench = YoloV8("yolov8n", size="n")
    assert bench.resume_files(tmp_path) == []
    last = tmp_path / "yolo" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"0")
    assert bench.resume_files(tmp_path) == [last]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"0")
    assert bench.resume_files(tmp_path) == [last, tmp_path / "checkpoints" / "last.pt"]


def test_ultralytics_thread_reset_does_not_leak():
    """ultralytics' select_device sets torch to cpu_count - 1 threads process-wide; YoloV8 restores them."""
    import torch
    from ultralytics.utils.torch_utils import select_device

    from spinebench.detection.yolo import keep_torch_threads

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with keep_torch_threads():
            select_device("cpu", verbose=False)
            assert torch.get_num_threads() != 3 or (os.cpu_count() or 1) - 1 == 3
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("stacked", [True, False])
def test_moving_a_batch_to_the_device_never_waits_for_the_device(tiny_detection, cache_dir, stacked):
    """On the meta device any read of a value (.item(), bool(), nonzero, .cpu()) raises: to_device passing there
    means on a GPU it queues its copies and augmentation without a host sync, so the CPU can run ahead of the
    GPU (the engine's contract, spinebench.engine)."""
    samples = read_detection_split(tiny_detection.root, "train")
    images, targets, indices = collate([build_dataset(samples, cache_dir)[i] for i in range(len(samples))])
    with pytest.raises((RuntimeError, NotImplementedError)):  # the premise: reading a meta value fails
        torch.ones(1, device="meta").item()
    batch = (images if stacked else list(images), targets, indices)
    moved, moved_targets, _ = to_device(batch, torch.device("meta"), augment=True)
    assert moved[0].device.type == "meta" and moved[0].shape == (3, 275, 690)
    assert [t["boxes"].shape[0] for t in moved_targets] == [len(s.boxes) for s in samples]


def test_a_checkpoint_is_rebuilt_in_the_layout_it_was_trained_in():
    """Pretrained Faster R-CNN trains with frozen batch norm (41,299,161 parameters), from scratch with ordinary
    BN (41,352,281): the test-time rebuild must take the checkpoint's own layout, every key loaded, the outputs
    those of the model that trained."""
    from spinebench.detection.models import built_pretrained

    torch.manual_seed(0)
    images = [torch.rand(3, 64, 160)]
    for pretrained, params in ((True, 41_299_161), (False, 41_352_281)):
        trained = _build("faster_rcnn", 2, (64, 160), pretrained=pretrained).eval()
        state = trained.state_dict()
        assert built_pretrained(state) is pretrained
        rebuilt = _build("faster_rcnn", 2, (64, 160), pretrained=built_pretrained(state)).eval()
        rebuilt.load_state_dict(state, strict=True)
        assert rebuilt.state_dict().keys() == state.keys()
        assert sum(p.numel() for p in rebuilt.parameters()) == params
        with torch.no_grad():
            want, got = trained(images)[0], rebuilt(images)[0]
        assert all(torch.equal(want[key], got[key]) for key in ("boxes", "scores", "labels"))
    assert built_pretrained(_build("ssd_multiscale", 2, (300, 300), pretrained=True).state_dict())
    assert not built_pretrained(_build("ssd", 2, (300, 300), pretrained=True).state_dict())  # BN always


def test_a_pretrained_run_records_the_parameters_of_the_model_it_trained(tmp_path, cache_dir):
    """metrics.json said pretrained: true with the from-scratch build's 41,352,281 parameters: test() rebuilt the
    model without frozen batch norm. An ImageNet ResNet-50 state dict (random here: nothing is downloaded) makes
    the run pretrained; its evaluation elsewhere counts the same model."""
    from test_train_detection import compose_cfg
    from torchvision.models import resnet50

    from spinebench.pipeline import evaluate, train

    weights = tmp_path / "resnet50-local.pth"
    torch.save(resnet50().state_dict(), weights)
    cfg = compose_cfg(
        "train",
        ["model=faster_rcnn", "trainer=smoke", "data=detection_phantom_tiny", f"model.weights={weights}"],
        tmp_path,
        cache_dir,
    )
    doc = train(cfg)
    assert doc["pretrained"] is True and doc["pretrained_source"] == str(weights.resolve())
    assert doc["params"] == 41_299_161  # the paper's count, frozen BN's
    again = evaluate(
        compose_cfg(
            "eval",
            [f"ckpt={tmp_path / 'run'}", "data=detection_phantom_tiny", "trainer.limit_test_images=2"],
            tmp_path / "e",
            cache_dir,
        )
    )
    assert again["params"] == 41_299_161 and again["metrics"] == doc["metrics"]


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated", "not_a_state_dict"])
def test_a_weights_file_that_cannot_be_read_is_named_with_its_setting(tmp_path, content):
    """torch.load's own errors name neither the file nor model.weights (a text file: `invalid literal for int()
    with base 10: 'arbage\\n'`); a file torch reads but that holds no state dict said only `not a state dict`."""
    path = tmp_path / "weights.pth"
    if content == "garbage":
        path.write_text("garbage\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":  # a download cut short
        torch.save({"backbone.fpn.layer_blocks.0.weight": torch.zeros(256, 256, 3, 3)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save([1, 2, 3], path)
    says = (
        "holds a list, not a state dict"
        if content == "not_a_state_dict"
        else r"cannot read it as a PyTorch checkpoint \((ValueError|EOFError|RuntimeError|UnpicklingError): [^\n]+\)"
    )
    model = _build("faster_rcnn", 2, (64, 160), pretrained=True)
    with pytest.raises(WeightsError, match=rf"^model\.weights={re.escape(str(path))}: {says}$"):
        load_pretrained(model, path)
