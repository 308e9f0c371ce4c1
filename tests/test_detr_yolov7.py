"""DETR and YOLOv7, the two detectors trained by the engine outside torchvision: the paper's parameter counts from
the real config files, the box arithmetic between an image and each network's input, YOLOv7's optional extra, and
the bad inputs that end in one line. (Their smoke runs through experiment=paper/<row> are tests/test_experiments.py's.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from spinebench.build import build
from spinebench.contract import RunContext
from spinebench.detection import detr as detr_module
from spinebench.detection.yolov7 import INSTALL
from spinebench.engine import TrainerConfig
from spinebench.entry import Entry
from spinebench.errors import WeightsError
from spinebench.pipeline import train
from spinebench.run_folder import START_FILES
from spinebench.runinfo import count_parameters

from helpers.hydra import compose_cfg

HAS_YOLOV7 = importlib.util.find_spec("sas_yolov7") is not None
needs_yolov7 = pytest.mark.skipif(not HAS_YOLOV7, reason=f"sas_yolov7 is not installed: {INSTALL}")
DET, SMOKE = "data=detection_phantom_tiny", "debug=smoke"
PAPER_DETR, ONE_CLASS_DETR, PAPER_YOLOV7 = 41_524_954, 41_501_638, 37_196_556


def benchmark_of(overrides: list[str], tmp_path: Path, cache_dir: Path):
    """The model config composed as the command line would, built through its `_target_`."""
    return build(compose_cfg("train", overrides, tmp_path, cache_dir).model, "model")


def context(tmp_path: Path, cache_dir: Path) -> RunContext:
    trainer = TrainerConfig.from_config(None, device="cpu", max_input_size=160)
    return RunContext(tmp_path / "run", cache_dir, trainer, torch.device("cpu"), 0, {})


@pytest.fixture(scope="module")
def paper_detr(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("detr")
    benchmark = benchmark_of(["experiment=paper/detr"], tmp, cache_dir)
    return benchmark, benchmark.build(None, load_weights=False)[0]


def test_detr_paper_config_has_the_paper_s_parameter_count_and_the_one_class_head_its_own(
    paper_detr, tmp_path, cache_dir
):
    benchmark, model = paper_detr
    assert benchmark.head == "paper" and count_parameters(model) == PAPER_DETR
    assert model.class_labels_classifier[1].out_features == 2 and model.config.num_labels == 1
    one_class = benchmark_of(["experiment=paper/detr", "model.head=one_class"], tmp_path, cache_dir)
    assert count_parameters(one_class.build(None, load_weights=False)[0]) == ONE_CLASS_DETR


def test_detr_parameter_groups_follow_the_authors_lr_scales(paper_detr):
    benchmark, model = paper_detr
    groups = benchmark.parameter_groups(model, lr=1e-4)
    by_lr = {round(group["lr"], 12): sum(p.numel() for p in group["params"]) for group in groups}
    final = model.class_labels_classifier[1]
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.backbone."))
    rest = PAPER_DETR - backbone - 186
    assert by_lr == {5e-4: final.weight.numel() + final.bias.numel(), 1e-5: backbone, 1e-4: rest}  # 186: 92 -> 2


def test_detr_detections_are_in_the_original_image_s_pixels():
    """A query predicting a box relative to the stretched input lands on that box in the 275 x 690 image."""
    benchmark = detr_module.Detr(input_size=[64, 64], weights=None)
    box = torch.tensor([100.0, 50.0, 300.0, 150.0])  # xyxy in a 690 x 275 image
    relative = torch.tensor([(100 + 300) / 2 / 690, (50 + 150) / 2 / 275, 200 / 690, 100 / 275])

    def fake(pixel_values):
        assert pixel_values.shape == (1, 3, 64, 64)
        logits = torch.tensor([[[4.0, 0.0]]])  # one query, hematoma vs no-object
        return SimpleNamespace(logits=logits, pred_boxes=relative.view(1, 1, 4))

    ((boxes, scores, labels),) = benchmark.detect(fake, [torch.rand(3, 275, 690)])
    assert torch.allclose(boxes[0], box, atol=1e-3) and labels.tolist() == [0]
    assert scores[0] == pytest.approx(torch.tensor([4.0, 0.0]).softmax(0)[0].item())


def test_a_detr_checkpoint_of_the_other_head_layout_is_one_line_and_writes_nothing(paper_detr, tmp_path, cache_dir):
    benchmark, _ = paper_detr
    other = detr_module.build_detr("one_class")
    checkpoint = tmp_path / "best.pt"
    torch.save({"model": other.state_dict(), "epoch": 1}, checkpoint)
    ctx = context(tmp_path, cache_dir)
    with pytest.raises(WeightsError) as error:
        benchmark.test(ctx, None, checkpoint)
    assert "\n" not in str(error.value) and "one_class head layout" in str(error.value), error.value
    assert "model.head=paper" in str(error.value)
    assert not ctx.run_dir.exists()


def run_command(argv: list[str], tmp_path: Path, cache_dir: Path, capsys) -> str:
    """As `spinebench-train` runs a command line; its one line of error."""
    entry = Entry("spinebench-train")
    with pytest.raises(SystemExit) as ended:
        entry.check_argv(argv)
        entry.run(train, compose_cfg("train", argv, tmp_path, cache_dir))
    error = capsys.readouterr().err
    assert ended.value.code == 2 and error.count("\n") == 1 and "Traceback" not in error, error
    # at most what a run writes before any work, which the program drops when it ends (RunFolder.drop_if_untouched)
    left = {p.name for p in (tmp_path / "run").iterdir()} if (tmp_path / "run").exists() else set()
    assert left <= START_FILES, sorted(left)
    return error


def test_without_the_extra_yolov7_stops_in_one_line_naming_the_install_command(
    tmp_path, cache_dir, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "sas_yolov7", None)  # import fails as when the package is absent
    error = run_command(["experiment=paper/yolov7", DET, SMOKE], tmp_path, cache_dir, capsys)
    assert "sas-yolov7" in error and INSTALL in error and "GPL-3.0" in error, error


def test_a_detr_head_that_does_not_exist_is_one_line(tmp_path, cache_dir, capsys):
    error = run_command(["experiment=paper/detr", DET, SMOKE, "model.head=coco"], tmp_path, cache_dir, capsys)
    assert "model.head must be paper or one_class, got 'coco'" in error


@needs_yolov7
def test_yolov7_paper_config_has_the_paper_s_parameter_count(tmp_path, cache_dir):
    benchmark = benchmark_of(["experiment=paper/yolov7"], tmp_path, cache_dir)
    assert benchmark.size == [320, 320]
    assert count_parameters(benchmark.build(None, load_weights=False)[0]) == PAPER_YOLOV7


@needs_yolov7
def test_an_input_size_off_yolov7_s_stride_is_one_line(tmp_path, cache_dir, capsys):
    error = run_command(["experiment=paper/yolov7", DET, SMOKE, "model.imgsz=300"], tmp_path, cache_dir, capsys)
    assert "model.imgsz=300: YOLOv7 needs a multiple of its stride 32" in error


@needs_yolov7
def test_a_pickled_yolov7_weights_file_is_refused_in_one_line(tmp_path, cache_dir, capsys):
    """The official release pickles a Model object: it is never unpickled here (weights_only)."""
    weights = tmp_path / "yolov7_training.pt"
    torch.save(nn.Linear(2, 2), weights)
    error = run_command(
        ["experiment=paper/yolov7", DET, SMOKE, f"model.weights={weights}"], tmp_path, cache_dir, capsys
    )
    assert "holds a pickled model" in error and "state_dict" in error


@pytest.mark.slow
@needs_yolov7
def test_yolov7_weights_for_another_nc_are_one_line_and_write_nothing(tmp_path, cache_dir):
    from spinebench.detection.yolov7 import YoloV7, build_yolov7

    checkpoint = tmp_path / "best.pt"
    torch.save({"model": build_yolov7(nc=2).state_dict(), "epoch": 1}, checkpoint)
    ctx = context(tmp_path, cache_dir)
    with pytest.raises(WeightsError) as error:
        YoloV7(weights=None).test(ctx, None, checkpoint)
    assert "\n" not in str(error.value) and "for nc=2" in str(error.value) and "num_classes=1" in str(error.value)
    assert not ctx.run_dir.exists()


@needs_yolov7
def test_yolov7_letterbox_and_detections_invert_each_other():
    """A box letterboxed into the square input, predicted back there, lands on itself in the original image."""
    from spinebench.detection.yolov7 import YoloV7

    benchmark = YoloV7(imgsz=320, weights=None)
    image = torch.rand(3, 275, 690)
    box = torch.tensor([[100.0, 50.0, 300.0, 150.0]])
    x, rows = benchmark.letterbox([image], [{"boxes": box, "labels": torch.tensor([1])}])
    assert x.shape == (1, 3, 320, 320) and rows[0, :2].tolist() == [0.0, 0.0]  # image 0, class 0
    assert x[0, :, 0, 0].allclose(torch.full((3,), 114 / 255))  # the padding band above the image
    cx, cy, w, h = (rows[0, 2:] * 320).tolist()
    prediction = torch.tensor([[[cx, cy, w, h, 0.9, 1.0]]])
    ((boxes, scores, labels),) = benchmark.detect(lambda _: (prediction, None), [image])
    assert torch.allclose(boxes, box, atol=1e-3) and scores.tolist() == pytest.approx([0.9])


@pytest.mark.slow
@needs_yolov7
def test_yolov7_loss_of_a_batch_without_boxes_is_finite_on_the_cpu():
    """Only negative images: the package's assigner would build its empty assignments on cuda:0."""
    from spinebench.detection.yolov7 import YoloV7, YoloV7Module, build_yolov7

    benchmark = YoloV7(imgsz=64, weights=None)
    benchmark.size = [64, 64]
    model = build_yolov7(1)
    model.imgsz = 64
    module = YoloV7Module(benchmark, model.train(), {})
    no_boxes = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    out = module.losses([torch.rand(3, 64, 80), torch.rand(3, 64, 80)], no_boxes)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    one_box = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1])}, no_boxes[0]]
    assert torch.isfinite(module.losses([torch.rand(3, 64, 80)] * 2, one_box)["loss"])


def test_detr_light_is_a_narrow_detr_with_trainable_backbone_norms(tmp_path, cache_dir):
    """detr_light (CPU learning runs): ResNet-18, d_model 128, 20 queries, and the backbone's norms trainable
    BatchNorm2d (from scratch DETR's frozen ones are identities); the paper's DETR keeps them frozen."""
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    light = benchmark_of(["model=detr_light", DET], tmp_path, cache_dir)
    model, _ = light.build(None, load_weights=False)
    assert count_parameters(model) == 12_667_334 and model.config.num_queries == 20 and model.config.d_model == 128
    norms = [m for m in model.model.backbone.modules() if isinstance(m, (nn.BatchNorm2d, DetrFrozenBatchNorm2d))]
    assert norms and all(type(m) is nn.BatchNorm2d and m.weight.requires_grad for m in norms)
    paper = detr_module.build_detr("paper")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.model.backbone.modules())


@pytest.mark.parametrize(
    "override, says",
    [
        ("model.backbone_norm=group", "model.backbone_norm must be frozen or batch, got 'group'"),
        ("+model.architecture.d_ff=8", "unknown key model.architecture.d_ff (known: backbone, d_model"),
    ],
)
def test_a_detr_layout_setting_that_does_not_exist_is_one_line(override, says, tmp_path, cache_dir):
    with pytest.raises(Exception) as raised:
        benchmark_of(["model=detr_light", DET, override], tmp_path, cache_dir)
    assert says in str(raised.value)


@needs_yolov7
def test_yolov7_tiny_is_the_package_s_tiny_network_and_another_file_is_refused(tmp_path, cache_dir):
    tiny = benchmark_of(["model=yolov7_tiny", DET], tmp_path, cache_dir)
    model, facts = tiny.build(None, load_weights=False)
    assert count_parameters(model) == 6_014_988 and facts["pretrained"] is False
    with pytest.raises(Exception) as raised:
        benchmark_of(["model=yolov7", DET, "model.cfg=cfg/training/yolov7-x.yaml"], tmp_path, cache_dir)
    assert "model.cfg='cfg/training/yolov7-x.yaml': one of cfg/training/yolov7.yaml" in str(raised.value)
