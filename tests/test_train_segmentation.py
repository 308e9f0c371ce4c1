"""End to end on the tiny phantom: zero-shot evaluation, weights, SAMed's frozen encoder, bad input.

Runs in-process through Hydra's compose API (imports are paid once), with debug=smoke (the smoke budget, which wins
over an experiment's trainer keys) and inputs shrunk to 64 px. The paper rows' smoke runs are tests/test_experiments.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image
from torch import nn
from torch.nn import functional as F

import spinebench.evaluate  # noqa: F401  (registers the spinebench.run_id resolver eval.yaml uses)
from spinebench import pipeline
from spinebench.entry import one_line, user_error
from spinebench.errors import ConfigError, DataError, WeightsError
from spinebench.segmentation.losses import SegmentationLoss
from spinebench.segmentation.samed import build_samed
from spinebench.segmentation.task import SegmentationModule

from helpers.records import check_metrics_keys_documented

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _model_of(experiment: Path) -> str | None:
    defaults = yaml.safe_load(experiment.read_text().split("\n", 1)[1] or "{}").get("defaults", [])
    return next((d["override /model"] for d in defaults if isinstance(d, dict) and "override /model" in d), None)


FAST = ["trainer.max_input_size=64", "trainer.fps_images=1", "trainer.fps_warmup=0", "trainer.limit_test_images=2"]


def smoke_overrides() -> list[str]:
    # configs/debug/smoke.yaml: the smoke budget, composed after an experiment so that it wins over its trainer keys
    return ["debug=smoke"]


def run(config: str, out: Path, cache: Path, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=config, return_hydra_config=True, overrides=overrides)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.paths.cache_dir = str(cache)
            del cfg["hydra"]  # as a running command's task gets it (Hydra's own config is HydraConfig's)
        return (pipeline.train if config == "train" else pipeline.evaluate)(cfg)


def check_run_folder(folder: Path, checkpoints: bool = True) -> dict:
    for name in ("config.yaml", "env.json", "metrics.json", "summary.json"):
        assert (folder / name).is_file(), name
    if checkpoints:
        assert (folder / "checkpoints" / "best.pt").is_file() and (folder / "checkpoints" / "last.pt").is_file()
    predictions = sorted((folder / "predictions").glob("*.png"))
    assert predictions and sorted((folder / "overlays").glob("*.png"))
    with Image.open(predictions[0]) as image:
        assert image.size == (690, 275) and image.mode == "L"
    doc = json.loads((folder / "metrics.json").read_text())
    check_metrics_keys_documented(doc)
    metrics = doc["metrics"]
    assert set(metrics["dice_per_class"]) == set(metrics["iou_per_class"]) and len(metrics["dice_per_class"]) == 10
    for key in ("mIoU", "mean_dice", "cord_iou", "cord_dice"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, key
    for value in list(metrics["dice_per_class"].values()) + list(metrics["iou_per_class"].values()):
        assert value is None or 0.0 <= value <= 1.0
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == len(predictions) and {"mean", "foreground_mean"} <= set(summary)
    assert doc["task"] == "segmentation" and doc["params"] > 0 and doc["fps_batch1"] > 0
    assert doc["speed"] == {"cpu": {"fps": doc["fps_batch1"], "load": doc["load"]["cpu"], "device": doc["device"]}}
    assert doc["data"]["kind"] == "phantom"
    return doc


def smoke_run(experiment: str, out: Path, cache_dir: Path) -> Path:
    run(
        "train",
        out,
        cache_dir,
        [f"experiment=paper/{experiment}", "data=segmentation_phantom_tiny", *smoke_overrides(), *FAST],
    )
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """The paper U-Net's smoke run, shared by the zero-shot and the bad-input tests."""
    return smoke_run("unet", tmp_path_factory.mktemp("runs") / "unet", cache_dir)


# model configs no paper experiment uses (CPU variants, other smp models): tests/test_experiments.py does not reach them
def _segmentation_model_configs() -> set[str]:
    with initialize_config_dir(config_dir=str(CONFIGS / "model"), version_base="1.3"):
        return {
            p.stem
            for p in (CONFIGS / "model").glob("*.yaml")
            if compose(config_name=p.stem)["_target_"].startswith("spinebench.segmentation.")
        }


OTHER_MODELS = sorted(
    _segmentation_model_configs() - {_model_of(p) for p in (CONFIGS / "experiment" / "paper").glob("*.yaml")}
)


def test_other_segmentation_model_configs_exist():
    assert OTHER_MODELS == ["deeplabv3_light", "swin_unet_light", "transunet_light", "unet_light", "unet_smp"]


@pytest.mark.parametrize("name", OTHER_MODELS)
def test_every_other_segmentation_model_config_builds_a_network_that_segments(name):
    """Each builds its network from the config as it stands and maps a grey image at the release's aspect to one
    logit map per class at its size."""
    from spinebench.build import build

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        benchmark = build(compose(config_name="train", overrides=[f"model={name}"]).model, "model")
    from spinebench.segmentation.sized_benchmark import SizedSegmentationBenchmark

    net = benchmark.build_model(None).eval()
    # a network built for one input size (its windows, its position embedding) sees the size the run resizes to
    size = tuple(benchmark.input_size) if isinstance(benchmark, SizedSegmentationBenchmark) else (70, 176)
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 10, *size)


def test_deeplabv3_runs_its_aux_head_in_training_only_and_scores_with_torchvision_s_main_output():
    """torchvision runs the FCN aux head in eval mode too; spinebench's test images and FPS timing skip it, and
    the logits it returns are still torchvision's own `out`, bit for bit."""
    from spinebench.segmentation.models import build_deeplabv3

    torch.manual_seed(0)
    model = build_deeplabv3(num_classes=10, pad_multiple=8)
    calls = []
    model.net.aux_classifier.register_forward_hook(lambda *_: calls.append(1))
    image = torch.rand(2, 1, 70, 176)
    model.train()
    logits, aux = model(image)
    assert logits.shape == aux.shape == (2, 10, 70, 176) and len(calls) == 1
    model.eval()
    with torch.no_grad():
        scored = model(image)
        stem = (image.expand(-1, 3, -1, -1) - model.mean) / model.std
        reference = model.net(F.pad(stem, (0, 0, 0, 2), mode="replicate"))["out"][..., :70, :176]
    assert len(calls) == 2  # the reference call above ran it once; the scored call did not
    assert torch.equal(scored, reference)


def test_an_smp_architecture_that_does_not_exist_is_one_line(tmp_path):
    """model.network.smp_arch is any smp architecture by name: a misspelt one is refused naming the ones there are."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinebench.train",
            "model=unet_smp",
            "model.network.smp_arch=UnetPlusPluss",
            "data=segmentation_phantom_tiny",
            "trainer=smoke",
            f"paths.root_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "spinebench-train: error: model.network.smp_arch=UnetPlusPluss is not an smp "
        "architecture (one of Unet, UnetPlusPlus, "
    )


def test_validation_runs_under_trainer_amp_and_the_test_split_in_float32(
    tmp_path, cache_dir, monkeypatch, bf16_autocast_on_cpu
):
    """As for the detectors: trainer.amp covers training and validation, the test split is scored in float32.
    The CPU's bf16 autocast stands in for a GPU's; each prediction records whether autocast was on."""
    real_predict, autocast_on = SegmentationModule.predict, []

    def recording(self, images):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return real_predict(self, images)

    monkeypatch.setattr(SegmentationModule, "predict", recording)
    doc = check_run_folder(smoke_run("unet", tmp_path / "unet", cache_dir))
    assert doc["test_precision"] == "float32"
    # validation's batches, then the test split (its 2 images, trainer.limit_test_images, in one batch), then the
    # batch-1 FPS pass (trainer.fps_images=1), timed in float32 as the paper's protocol has it
    assert autocast_on[0] and autocast_on[-2:] == [False, False]
    assert autocast_on == sorted(autocast_on, reverse=True)


def test_zero_shot_eval(trained, tmp_path, cache_dir):
    check_run_folder(trained)
    out = tmp_path / "zero_shot"
    doc = run(
        "eval",
        out,
        cache_dir,
        [
            f"ckpt={trained}",
            "data=segmentation_human_phantom",
            "trainer.limit_test_images=2",
            "trainer.fps_images=1",
            "trainer.fps_warmup=0",
        ],
    )
    check_run_folder(out, checkpoints=False)
    assert doc["checkpoint_run"] == str(trained.resolve()) and doc["data"]["stamp"]["domain"] == "human"
    assert doc["trained_on"]["kind"] == "phantom" and doc["trained_on"]["stamp"]["domain"] == "porcine"
    assert not (out / "checkpoints").exists()


def test_eval_without_data_says_so_and_help_works(trained, tmp_path, cache_dir):
    with pytest.raises(ConfigError, match=r"no data selected: add data=<name>"):
        run("eval", tmp_path / "eval", cache_dir, [f"ckpt={trained}"])
    help_text = subprocess.run(
        [sys.executable, "-m", "spinebench.evaluate", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "segmentation_human_phantom" in help_text.stdout, help_text.stderr[-500:]


def test_checkpoint_with_other_class_count_fails_clearly(trained, tmp_path, cache_dir):
    bad = tmp_path / "bad_run"
    (bad / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "metrics.json"):  # a finished run's (spinebench-eval refuses an unfinished one)
        (bad / name).write_text((trained / name).read_text())
    state = torch.load(trained / "checkpoints" / "best.pt", weights_only=False)
    state["model"]["net.head.weight"] = state["model"]["net.head.weight"][:4]
    state["model"]["net.head.bias"] = state["model"]["net.head.bias"][:4]
    torch.save(state, bad / "checkpoints" / "best.pt")
    with pytest.raises(WeightsError, match="trained for 4 classes"):
        run("eval", tmp_path / "eval", cache_dir, [f"ckpt={bad}", "data=segmentation_phantom_tiny"])


def test_mask_size_mismatch_fails_clearly(tmp_path, cache_dir):
    from spinebench.data.phantom import write_phantom
    from spinebench.segmentation.data import SegmentationSplit

    root = tmp_path / "phantom"
    write_phantom("segmentation", root, n_train=2, n_val=1, n_test=1, seed=3)
    mask = sorted((root / "train_masks").glob("*.png"))[0]
    with Image.open(mask) as image:
        image.crop((0, 0, 600, 275)).save(mask)
    with pytest.raises(DataError, match=f"{mask.name}: mask is 600x275"):
        SegmentationSplit(root, "train", cache_dir)


def test_masks_not_in_the_palette_are_refused_and_a_few_stray_colours_only_reported(tmp_path, cache_dir, caplog):
    """Masks saved as class indices (grey k for class k) are not the release's format: nearly every labelled pixel
    would become ignore and the run would learn nothing. The split is refused naming a mask and its colours. A few
    anti-aliased edge pixels are the release's own: they are ignored and reported, not refused."""
    from spinebench.data.phantom import write_phantom
    from spinebench.data.segmentation import read_mask
    from spinebench.segmentation.data import SegmentationSplit

    root = tmp_path / "phantom"
    write_phantom("segmentation", root, n_train=3, n_val=1, n_test=1, seed=3)
    masks = sorted((root / "train_masks").glob("*.png"))
    edge = np.array(Image.open(masks[0]).convert("RGB"))
    edge[100, :50] = (7, 7, 7)  # 50 stray pixels
    Image.fromarray(edge).save(masks[0])
    with caplog.at_level("WARNING"):
        split = SegmentationSplit(root, "train", cache_dir)
    assert int((split.masks[0] == 255).sum()) == 50 and "outside the VOC palette" in caplog.text
    for mask in masks:  # every mask re-saved as class indices
        Image.fromarray(read_mask(mask)).save(mask)
    refused = rf"{masks[0].name}: 100% of its labelled pixels are not colours of the VOC palette \(most common: \(\d, "
    with pytest.raises(DataError, match=refused):
        SegmentationSplit(root, "train", cache_dir)


MIT_B0 = "smp-hub/mit_b0.imagenet/model.safetensors"  # smp's ImageNet MiT-B0, as a weights folder holds it


def _pretrained_file(arch: str, path: Path) -> None:
    """A file of the row's pretrained format at `path`, made from the untrained network (nothing is downloaded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if arch == "samed":
        from test_samed import _fake_sam_checkpoint

        from spinebench.segmentation.samed import SAMed

        _fake_sam_checkpoint(SAMed(num_classes=10, image_size=128, rank=4), path)
    elif arch == "segformer":
        import segmentation_models_pytorch as smp
        from safetensors.torch import save_file

        save_file(smp.Segformer("mit_b0", encoder_weights=None).encoder.state_dict(), str(path))
    else:
        from torchvision.models import resnet50

        torch.save(resnet50(weights=None).state_dict(), path)


# (the row's network settings, its benchmark's own settings, the pretrained file `auto` finds in a weights folder)
AUTO_ROWS = {
    "deeplabv3": ({"backbone_weights": "auto"}, {}, "resnet50-0676ba61.pth"),
    "samed": ({"rank": 4}, {"sam_checkpoint": "auto", "image_size": 128, "input_size": None}, "sam_vit_b_01ec64.pth"),
    "segformer": ({"encoder_weights": "auto", "encoder_name": "mit_b0", "decoder_channels": 256}, {}, MIT_B0),
}


def _benchmark(arch: str, network: dict, settings: dict):
    """The row's benchmark as its model config builds it: `network` its builder's settings (model.network.*),
    `settings` the benchmark's own (model.*)."""
    from spinebench.segmentation import models
    from spinebench.segmentation.benchmark import SegmentationBenchmark
    from spinebench.segmentation.samed_benchmark import SamedBenchmark

    if arch == "samed":
        return SamedBenchmark(arch, partial(build_samed, **network), **settings)
    return SegmentationBenchmark(arch, partial(getattr(models, f"build_{arch}"), **network), **settings)


@pytest.mark.parametrize("arch", sorted(AUTO_ROWS))
def test_auto_weights_come_from_the_weights_folder_or_the_run_says_scratch(arch, tmp_path, monkeypatch, caplog):
    """`auto` (the paper configs' default) finds the row's pretrained file in $SPINEBENCH_WEIGHTS (what
    `make reproduce WEIGHTS=...` sets); with no such file the model trains from scratch and records it, and the
    banner names every place searched (SegFormer's Hugging Face cache included)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("SPINEBENCH_WEIGHTS", str(folder))
    monkeypatch.chdir(tmp_path)  # the working dir is searched too: keep it empty
    network, settings, file = AUTO_ROWS[arch]
    bench = _benchmark(arch, network, settings)
    with caplog.at_level("WARNING", logger="spinebench.weights"):
        assert bench._pretrained(bench.build_model()) == {"pretrained": False, "pretrained_source": None}
    banner = next(r.getMessage() for r in caplog.records if "NO PRETRAINED WEIGHTS FOUND" in r.getMessage())
    assert str(folder) in banner and ("the Hugging Face cache" in banner) == (arch == "segformer")
    _pretrained_file(arch, folder / file)
    assert bench._pretrained(bench.build_model()) == {"pretrained": True, "pretrained_source": str(folder / file)}


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "weights .*nope.safetensors do not exist"),
        (b"not a safetensors file", "nope.safetensors: cannot read smp Segformer encoder mit_b0 weights"),
        ("resnet50", "nope.safetensors: no tensor matches smp Segformer encoder mit_b0"),
    ],
)
def test_a_bad_encoder_weights_file_is_refused_naming_it(content, says, tmp_path):
    """model.network.encoder_weights=PATH: a missing file, an unreadable one (a truncated download) and another
    model's; each a WeightsError (a user error: one line, exit 2)."""
    path = tmp_path / "nope.safetensors"
    if content == "resnet50":
        from safetensors.torch import save_file
        from torchvision.models import resnet18

        save_file(resnet18(weights=None).state_dict(), str(path))
    elif content is not None:
        path.write_bytes(content)
    network = {**AUTO_ROWS["segformer"][0], "encoder_weights": str(path)}
    with pytest.raises(WeightsError, match=says):
        _benchmark("segformer", network, {}).build_model()


def test_segformer_auto_takes_smps_own_encoder_file_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """Where smp's encoder_weights="imagenet" downloads it: found there without the network, and loaded."""
    from huggingface_hub import constants
    from segmentation_models_pytorch.encoders import encoders

    revision = encoders["mit_b0"]["pretrained_settings"]["imagenet"]["revision"]
    cached = tmp_path / "hub" / "models--smp-hub--mit_b0.imagenet" / "snapshots" / revision / "model.safetensors"
    _pretrained_file("segformer", cached)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    bench = _benchmark("segformer", *AUTO_ROWS["segformer"][:2])
    model = bench.build_model()
    assert bench._pretrained(model) == {"pretrained": True, "pretrained_source": str(cached)}
    from safetensors.torch import load_file

    stored = load_file(str(cached))
    encoder = model.net.encoder.state_dict()
    assert all(torch.equal(encoder[k], stored[k]) for k in stored)


@pytest.mark.slow
def test_a_samed_run_from_an_auto_found_sam_file_is_scored_with_that_file(tmp_path, cache_dir, monkeypatch):
    """SAMed's checkpoint lacks the frozen encoder, which only the SAM file holds: scoring the run later rebuilds
    it from the file its training found (recorded in the checkpoint), and fails naming that file when it is gone,
    rather than scoring a random encoder."""
    from test_samed import _fake_sam_checkpoint

    from spinebench.segmentation.samed import SAMed

    folder = tmp_path / "weights"
    folder.mkdir()
    sam_file = folder / "sam_vit_b_01ec64.pth"
    _fake_sam_checkpoint(SAMed(num_classes=10, image_size=128, rank=4), sam_file)
    monkeypatch.setenv("SPINEBENCH_WEIGHTS", str(folder))
    trained = run(
        "train",
        tmp_path / "samed",
        cache_dir,
        ["experiment=paper/samed", "data=segmentation_phantom_tiny", *smoke_overrides(), *FAST],
    )
    assert trained["pretrained"] is True and trained["pretrained_source"] == str(sam_file)
    evaluation = [
        "data=segmentation_phantom_tiny",
        f"ckpt={tmp_path / 'samed'}",
        "trainer.limit_test_images=2",
        "trainer.fps_images=1",
        "trainer.fps_warmup=0",
    ]
    monkeypatch.delenv("SPINEBENCH_WEIGHTS")  # the folder is not searched any more: the recorded path is used
    again = run("eval", tmp_path / "again", cache_dir, evaluation)
    assert again["metrics"]["mean_dice"] == pytest.approx(trained["metrics"]["mean_dice"])
    sam_file.rename(tmp_path / "elsewhere.pth")
    with pytest.raises(
        WeightsError,
        match=f"^{sam_file}: the SAM checkpoint this SAMed run was trained from is "
        "not there any more; the run's checkpoints hold only LoRA",
    ):
        run("eval", tmp_path / "gone", cache_dir, evaluation)
    # the same command again finds no SAM file now: resuming (here: a finished run, tested again) would rebuild a
    # random frozen encoder under the LoRA and decoder trained on SAM's
    with pytest.raises(
        ConfigError,
        match=r"this run's frozen weights \(not in its checkpoints\) came from "
        r"sam_vit_b_01ec64.pth, \d+ bytes; this start found none",
    ):
        run(
            "train",
            tmp_path / "samed",
            cache_dir,
            ["experiment=paper/samed", "data=segmentation_phantom_tiny", *smoke_overrides(), *FAST],
        )
    assert (tmp_path / "samed" / "metrics.json").is_file()  # refused before training: the finished result stays
    # the same file in another weights folder (another machine's): the redo resumes and is scored with it; it was
    # refused at test() for the old path, after the finished result had been set aside
    moved = tmp_path / "other_weights"
    moved.mkdir()
    (tmp_path / "elsewhere.pth").rename(moved / "sam_vit_b_01ec64.pth")
    monkeypatch.setenv("SPINEBENCH_WEIGHTS", str(moved))
    redone = run(
        "train",
        tmp_path / "samed",
        cache_dir,
        ["experiment=paper/samed", "data=segmentation_phantom_tiny", *smoke_overrides(), *FAST],
    )
    assert redone["metrics"]["mean_dice"] == pytest.approx(trained["metrics"]["mean_dice"])


def test_missing_sam_checkpoint_given_explicitly_fails_clearly(tmp_path, cache_dir):
    with pytest.raises(Exception, match="does not exist") as info:
        run(
            "train",
            tmp_path / "samed",
            cache_dir,
            [
                "model=samed",
                "data=segmentation_phantom_tiny",
                *smoke_overrides(),
                *FAST,
                f"model.sam_checkpoint={tmp_path / 'sam_vit_b_01ec64.pth'}",
            ],
        )
    cause = user_error(info.value)
    assert isinstance(cause, WeightsError) and "sam_vit_b_01ec64.pth" in one_line(cause)


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.main, self.aux = nn.Conv2d(1, 10, 3, padding=1), nn.Conv2d(1, 10, 1)

    def forward(self, x):
        return self.main(x), self.aux(x)


def _step_on(device: torch.device, debug_sync: bool = False):
    """A full segmentation training step (device augmentation, resize, CE + Dice with the ignore index, aux head,
    backward) on `device`; with debug_sync, under torch's CUDA sync debug mode (raises on a synchronizing call)."""
    model = TwoHeads().to(device)
    module = SegmentationModule(model, SegmentationLoss(10, ce_weight=0.2, dice_weight=0.8, aux_weight=0.4), (32, 64))
    batch = (
        torch.randint(0, 256, (2, 40, 80), dtype=torch.uint8),
        torch.randint(0, 10, (2, 40, 80), dtype=torch.uint8),
        torch.tensor([0, 1]),
    )
    if debug_sync:
        torch.cuda.set_sync_debug_mode("error")
    try:
        parts = module.training_step(batch, device)
        parts["loss"].backward()
    finally:
        if debug_sync:
            torch.cuda.set_sync_debug_mode("default")
    return model, parts


def test_a_training_step_never_waits_for_the_device():
    """On the meta device any read of a value raises: the step runs there, so on a GPU it queues without a host
    sync."""
    model, parts = _step_on(torch.device("meta"))
    assert set(parts) == {"ce", "dice", "aux", "loss"} and parts["loss"].device.type == "meta"
    assert model.main.weight.grad is not None and model.main.weight.grad.device.type == "meta"


@pytest.mark.gpu
def test_a_training_step_on_a_gpu_makes_no_synchronizing_call():
    model, parts = _step_on(torch.device("cuda"), debug_sync=True)
    assert parts["loss"].is_cuda and model.main.weight.grad is not None


@pytest.mark.slow
def test_a_sweep_runs_every_job_and_fails_when_one_does(tmp_path, cache_dir):
    """`spinebench-train -m` as `make reproduce` calls it, from a working directory with no paths overridden: the
    sweep folder used to need ${hydra:runtime.cwd} before Hydra had set it, and every sweep stopped at its start.
    A failed job does not stop the others, and the sweep exits 2 naming it (a script sees it failed)."""
    env = {k: v for k, v in os.environ.items() if k != "SPINEBENCH_ROOT"}
    env.update(SPINEBENCH_CACHE=str(cache_dir), HF_HUB_OFFLINE="1")
    sweep = [
        sys.executable,
        "-m",
        "spinebench.train",
        "-m",
        "model=unet_light",
        "data=segmentation_phantom_tiny",
        "trainer=smoke",
        "trainer.fps_images=1",
    ]
    result = subprocess.run([*sweep, "seed=0,1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = tmp_path / "outputs" / "segmentation_phantom_tiny"
    assert all((runs / f"unet_light-smoke-s{seed}" / "metrics.json").is_file() for seed in (0, 1))
    result = subprocess.run(
        [*sweep, "seed=2,3", "trainer.monitor=nope"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "spinebench-train: error: 2 job(s) of the sweep failed (the others ran)"
    )
    assert f"{runs / 'unet_light-smoke-s2'}: trainer.monitor='nope' is not a validation metric" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr  # a user error is one line in a sweep too
    assert "is not a validation metric" in (runs / "unet_light-smoke-s2" / "train.log").read_text()  # kept: named


def test_a_run_stopped_by_a_user_error_after_writing_its_config_leaves_no_folder(tmp_path, cache_dir):
    """trainer.monitor is checked after config.yaml and env.json are written: the folder still goes, and the
    report finds no unfinished run there."""
    env = {k: v for k, v in os.environ.items() if k != "SPINEBENCH_ROOT"}
    env.update(SPINEBENCH_CACHE=str(cache_dir), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinebench.train",
            "model=unet_light",
            "data=segmentation_phantom_tiny",
            "trainer=smoke",
            "trainer.monitor=nope",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2 and "trainer.monitor='nope' is not a validation metric" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("case", ["deeplabv3 state dict as backbone_weights", "no tensor of the net", "other widths"])
def test_weights_that_do_not_fit_the_network_are_refused_naming_the_file(case, tmp_path):
    """A state dict none of whose tensors the network has would load nothing and still record `pretrained: true`
    (BatchNorm's loader never reports `num_batches_tracked` missing, so a count of missing keys never reached
    every key); one of the right names but other shapes is one line, not load_state_dict's line per tensor."""
    from spinebench.segmentation import models

    path = tmp_path / "weights.pth"
    if case.startswith("deeplabv3"):  # the whole net's keys (backbone.*, classifier.*), not its backbone's
        torch.save(models.build_deeplabv3(num_classes=10).net.state_dict(), path)
        build, says = (
            lambda: models.build_deeplabv3(backbone_weights=str(path)),
            r"no tensor matches DeepLabv3 backbone \(ResNet-50\) \(none of its \d+ tensors is in the file",
        )
    elif case == "no tensor of the net":
        torch.save({"foo": torch.zeros(3)}, path)
        build, says = (
            lambda: models.build_plain_unet(weights=str(path), widths=[4, 8]),
            r"no tensor matches plain U-Net \(none of its \d+ tensors is in the file, whose 1 have other",
        )
    else:
        torch.save(models.PlainUNet(3, 10, (4, 16)).state_dict(), path)
        build, says = (
            lambda: models.build_plain_unet(weights=str(path), widths=[4, 8]),
            r"\d+ of its tensors do not fit plain U-Net \(e.g. down.1.0.weight: \(16, 4, 3, 3\) in the file, "
            r"\(8, 4, 3, 3\) in the model\)",
        )
    with pytest.raises(WeightsError, match=rf"^{path}: {says}") as info:
        build()
    assert "\n" not in str(info.value)


def test_a_run_trained_from_a_weights_file_is_scored_without_it(tmp_path, cache_dir):
    """The checkpoint holds every trained weight: scoring the run later (spinebench-eval ckpt=RUN) does not read
    model.network.weights again, so it works after that file has moved."""
    from spinebench.segmentation.models import PlainUNet

    start = tmp_path / "start.pth"
    torch.save(PlainUNet(3, 10, (16, 32, 64, 128, 256)).state_dict(), start)
    trained = run(
        "train",
        tmp_path / "unet",
        cache_dir,
        [
            "model=unet_light",
            "data=segmentation_phantom_tiny",
            *smoke_overrides(),
            *FAST,
            f"model.network.weights={start}",
        ],
    )
    assert trained["pretrained"] is True and trained["pretrained_source"] == str(start)
    start.unlink()
    again = run(
        "eval",
        tmp_path / "eval",
        cache_dir,
        [
            f"ckpt={tmp_path / 'unet'}",
            "data=segmentation_phantom_tiny",
            "trainer.limit_test_images=2",
            "trainer.fps_images=1",
            "trainer.fps_warmup=0",
        ],
    )
    assert again["metrics"]["mean_dice"] == pytest.approx(trained["metrics"]["mean_dice"])
    assert again["pretrained"] is True  # the training run's record


def test_an_smp_model_refuses_a_key_smp_would_drop():
    """smp's constructors take **kwargs and, for a non-timm encoder, drop unknown ones: `+model.foo=1` trained
    with rc 0 and was recorded in the config label as if it had mattered."""
    from spinebench.segmentation.models import build_smp

    with pytest.raises(ConfigError, match=r"unknown key model.network.foo: smp's Unet does not take it \(it takes "):
        build_smp("Unet", "resnet18", num_classes=10, foo=1)
    assert build_smp("Unet", "resnet18", num_classes=10, decoder_channels=[32, 16, 8, 8, 8]).num_classes == 10


def test_an_smp_key_smp_reads_from_its_kwargs_is_taken():
    """decoder_use_batchnorm is read out of **kwargs by smp's Unet: refusing it refused a working option."""
    from spinebench.segmentation.models import build_smp

    plain = build_smp("Unet", "resnet18", num_classes=10)
    without_bn = build_smp("Unet", "resnet18", num_classes=10, decoder_use_batchnorm=False)
    assert sum(p.numel() for p in without_bn.parameters()) != sum(p.numel() for p in plain.parameters())
