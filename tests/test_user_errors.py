"""Every mistake a user can make on the command line ends in one line naming it, exit 2, before any training.

One table: the command line as typed, and what its one line must say. `{tmp}` stands for the test's folder.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spinebench.entry import Entry
from spinebench.pipeline import train

from helpers.hydra import compose_cfg

DET, SEG = "data=detection_phantom_tiny", "data=segmentation_phantom_tiny"
SMOKE = "trainer=smoke"

USER_ERRORS = [  # (id, command line, what its one line says)
    ("wrong type", ["model=faster_rcnn", DET, "trainer.epochs=abc"], "trainer.epochs must be an integer, got 'abc'"),
    (
        "data on device",
        ["model=faster_rcnn", DET, SMOKE, "trainer.data_on_device=gpu"],
        "trainer.data_on_device must be auto, true or false, got 'gpu'",
    ),
    (
        "smoke preset under an experiment",
        ["experiment=paper/ssd300", DET, SMOKE],
        "experiment=paper/ssd300 sets its own trainer (epochs, batch size, run folder), which wins over trainer=smoke: "
        "for the smoke budget on a recipe give debug=smoke instead",
    ),
    ("seed", ["model=faster_rcnn", DET, SMOKE, "seed=abc"], "seed must be an integer, got 'abc'"),
    (
        "no data root",
        ["model=faster_rcnn", "data=detection_real", SMOKE],
        "data.root is not set: add data.root=<value> to the command (the folder of the release",
    ),
    (
        "no test split",
        ["model=faster_rcnn", "data=detection_real", "data.root={tmp}/no_test", SMOKE],
        "split 'test' is missing",
    ),
    ("weights path", ["model=faster_rcnn", DET, SMOKE, "model.weights={tmp}/nope.pth"], "nope.pth: file not found"),
    (  # the other bad split files: tests/test_splits.py
        "split file",
        ["model=unet_light", SEG, SMOKE, "data.splits={tmp}/splits.json"],
        "splits.json: split file not found (write one with `spinebench data resplit ",
    ),
    (
        "resize",
        ["model=faster_rcnn", DET, SMOKE, "model.resize=crop"],
        "model.resize must be short_side or stretch, got 'crop'",
    ),
    ("ssd resize", ["model=ssd300", DET, SMOKE, "model.resize=short_side"], "model.resize must be stretch"),
    *[
        (
            f"input size {model} {size}",
            [f"model={model}", data, SMOKE, f"model.input_size={size}"],
            "model.input_size must be [height, width] in pixels, got ",
        )
        for model, data in (("retinanet", DET), ("unet_light", SEG))
        for size in ("abc", "[256]", "[256,0]")
    ],
    *[
        (f"unknown key {model}", [f"model={model}", data, SMOKE, "+model.foo=1"], "unknown key model.foo: ")
        for model, data in (("faster_rcnn", DET), ("unet_light", SEG))
    ],
    (
        "pad multiple",
        ["model=unet_light", SEG, SMOKE, "model.network.pad_multiple=abc"],
        "model.network.pad_multiple=abc: must be a positive integer",
    ),
    ("loss weight", ["model=unet_light", SEG, SMOKE, "model.loss.ce=abc"], "model.loss.ce=abc: must be a number >= 0"),
    (
        "loss key",
        ["model=unet_light", SEG, SMOKE, "+model.loss.dcie=1"],
        "unknown key model.loss.dcie (known: ce, dice, aux)",
    ),
    (
        "widths",
        ["model=unet_light", SEG, SMOKE, "model.network.widths=abc"],
        "model.network.widths=abc: must be a list of positive integers",
    ),
    (
        "decoder channels",
        ["model=segformer", SEG, SMOKE, "model.network.decoder_channels=abc"],
        "model.network.decoder_channels=abc: must be a positive integer",
    ),
    (
        "lora rank",
        ["model=samed", SEG, SMOKE, "model.sam_checkpoint=null", "model.network.rank=abc"],
        "model.network.rank=abc: must be a positive integer",
    ),
    (
        "sam image size",
        ["model=samed", SEG, SMOKE, "model.sam_checkpoint=null", "model.image_size=abc"],
        "model.image_size=abc: must be a positive integer",
    ),
    (
        "smp encoder",
        ["model=unet_smp", SEG, SMOKE, "model.network.encoder_name=nope"],
        "model.network.encoder_name=nope: not an smp encoder (e.g. resnet18, ",
    ),
    (
        "timm encoder",
        ["model=unet_smp", SEG, SMOKE, "model.network.encoder_name=tu-nope"],
        "model.network.encoder_name=tu-nope: timm has no model 'nope'",
    ),
    (
        "auto weights",
        ["model=unet_light", SEG, SMOKE, "model.network.weights=auto"],
        "model.network.weights=auto: unet_light has no pretrained file of the paper",
    ),
]


@pytest.mark.parametrize("argv, says", [case[1:] for case in USER_ERRORS], ids=[case[0] for case in USER_ERRORS])
def test_a_user_error_is_one_line(argv, says, tmp_path, cache_dir, capsys, monkeypatch):
    """As `spinebench-train` runs a command: the arguments checked, then the configs composed and the task run."""
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    for split in ("train", "val"):
        (tmp_path / "no_test" / split).mkdir(parents=True, exist_ok=True)
    monkeypatch.delenv("SPINEBENCH_DETECTION_DATA", raising=False)  # configs/data/detection_real.yaml's root
    entry = Entry("spinebench-train")
    with pytest.raises(SystemExit) as ended:
        entry.check_argv(argv)
        entry.run(train, compose_cfg("train", argv, tmp_path, cache_dir))
    error = capsys.readouterr().err
    assert ended.value.code == 2 and error.count("\n") == 1 and "Traceback" not in error, error
    assert error.startswith("spinebench-train: error: ") and says in error, error
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override", ["model.network.widths=abc", "model.network.encoder_name=nope"])
def test_the_command_line_program_says_it_in_one_line_and_leaves_no_run_folder(override, tmp_path, cache_dir):
    says = next(case[2] for case in USER_ERRORS if override in case[1])
    model = "unet_smp" if "encoder_name" in override else "unet_light"
    env = {k: v for k, v in os.environ.items() if k != "SPINEBENCH_ROOT"}
    env.update(SPINEBENCH_CACHE=str(cache_dir), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "spinebench.train", f"model={model}", override, SEG, SMOKE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stderr.startswith(f"spinebench-train: error: {says}"), result.stderr[
        -2000:
    ]
    assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "outputs").exists()
