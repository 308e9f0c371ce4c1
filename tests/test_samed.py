"""SAMed: frozen encoder, LoRA zero start, small checkpoint, SAM-checkpoint loading at other sizes; and its
benchmark's rules (square input, 16-pixel size cap, the frozen encoder's file on resume and when scoring).

SAM ViT-B is built untrained on the CPU (92M parameters); forward passes only at 128 x 128.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from spinebench.errors import ConfigError, WeightsError
from spinebench.segmentation.samed import SAMed, build_samed

torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def samed():
    return SAMed(num_classes=10, image_size=128, rank=4).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def test_only_lora_decoder_and_prompt_encoder_train(samed):
    trainable = {n for n, p in samed.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    for name in trainable:
        assert ".lora_" in name or name.startswith(("mask_decoder.", "prompt_encoder.")), name
    assert sum(".lora_" in n for n in trainable) == 12 * 4  # q and v, A and B, in each of the 12 blocks
    assert all(not p.requires_grad for n, p in samed.image_encoder.named_parameters() if ".lora_" not in n)
    lora = samed.image_encoder.blocks[0].attn.qkv
    assert lora.lora_q_a.weight.shape == (4, 768) and lora.lora_v_b.weight.shape == (768, 4)


def test_zero_initialised_b_equals_plain_sam(samed, images):
    with torch.no_grad():
        with_lora = samed(images)
        wrappers = [block.attn.qkv for block in samed.image_encoder.blocks]
        for block, wrapper in zip(samed.image_encoder.blocks, wrappers):
            block.attn.qkv = wrapper.qkv  # the plain frozen SAM projection
        try:
            plain = samed(images)
        finally:
            for block, wrapper in zip(samed.image_encoder.blocks, wrappers):
                block.attn.qkv = wrapper
    assert with_lora.shape == (2, 10, 128, 128)
    torch.testing.assert_close(with_lora, plain)


def test_checkpoint_holds_only_small_tensors_and_round_trips(samed, images):
    state = samed.state_dict()
    assert all(not k.startswith("image_encoder.") or ".lora_" in k for k in state)
    saved = sum(v.numel() for v in state.values())
    assert saved < 0.07 * sum(p.numel() for p in samed.parameters())  # ~5M of 92M
    with torch.no_grad():
        for block in samed.image_encoder.blocks:  # make LoRA matter, then reload into a fresh model
            block.attn.qkv.lora_v_b.weight.normal_(0, 0.01)
        expected = samed(images)
        fresh = SAMed(num_classes=10, image_size=128, rank=4).eval()
        fresh.load_state_dict(samed.state_dict())  # frozen encoder comes from the same seeded initialisation
        torch.testing.assert_close(fresh(images), expected)
        for block in samed.image_encoder.blocks:
            block.attn.qkv.lora_v_b.weight.zero_()


def _fake_sam_checkpoint(model: SAMed, path):
    """A state dict shaped like sam_vit_b_01ec64.pth (1024 input: 64 x 64 pos_embed, 127-row global rel_pos,
    4 mask tokens) built from the model's own tensors."""
    full = {
        k.replace(".qkv.qkv.", ".qkv."): v.detach().clone()
        for k, v in model.state_dict_full().items()
        if ".lora_" not in k
    }
    full["image_encoder.pos_embed"] = torch.randn(1, 64, 64, 768)
    for i in (2, 5, 8, 11):
        for axis in "hw":
            full[f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"] = torch.randn(127, 64)
    full["mask_decoder.mask_tokens.weight"] = torch.randn(4, 256)
    for key in [k for k in full if "output_hypernetworks_mlps" in k or "iou_prediction_head" in k]:
        full[key] = torch.randn_like(full[key])  # SAM's own heads, different from a fresh model's
    torch.save(full, path)
    return full


@pytest.mark.parametrize("size", [128, 512])
def test_sam_checkpoint_pos_embed_interpolated(samed, tmp_path, size):
    path = tmp_path / "sam_vit_b_fake.pth"
    full = _fake_sam_checkpoint(samed, path)
    model = SAMed(num_classes=10, image_size=size, rank=4, sam_checkpoint=str(path))
    grid = size // 16
    expected = F.interpolate(
        full["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(grid, grid), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(model.image_encoder.pos_embed.data, expected)
    assert model.image_encoder.blocks[2].attn.rel_pos_h.shape == (2 * grid - 1, 64)
    assert model.image_encoder.blocks[0].attn.rel_pos_h.shape == (27, 64)  # window blocks keep their 14 x 14 table
    torch.testing.assert_close(
        model.image_encoder.blocks[3].attn.qkv.qkv.weight, full["image_encoder.blocks.3.attn.qkv.weight"]
    )
    assert model.pretrained and model.mask_decoder.mask_tokens.weight.shape == (11, 256)
    # the per-mask-token heads start fresh for every class, as SAMed's (SAM's would fit the first 4 in shape)
    head = "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight"
    assert not torch.equal(model.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight, full[head])
    torch.testing.assert_close(
        model.mask_decoder.output_upscaling[0].weight, full["mask_decoder.output_upscaling.0.weight"]
    )


def test_missing_sam_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(WeightsError, match="sam_vit_b_01ec64.pth"):
        build_samed(num_classes=10, image_size=128, sam_checkpoint=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("content", ["truncated", "text"])
def test_an_unreadable_sam_checkpoint_is_refused_naming_it(content, tmp_path):
    """A SAM file cut short (an interrupted download) or a text file (an HTML error page saved as .pth): one line
    naming the setting and the file, a WeightsError as the detectors' (the CLI's user errors: exit 2), not torch's
    RuntimeError or UnpicklingError."""
    from spinebench.entry import one_line
    from spinebench.errors import SpinebenchError

    path = tmp_path / "sam_vit_b_01ec64.pth"
    if content == "truncated":
        torch.save({"image_encoder.pos_embed": torch.zeros(1, 8, 8, 768)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("<html><body>404 Not Found</body></html>\n")
    with pytest.raises(WeightsError, match=rf"^model.sam_checkpoint={path}: cannot read it as SAM weights \(") as info:
        build_samed(num_classes=10, image_size=128, sam_checkpoint=str(path))
    assert "\n" not in one_line(info.value) and isinstance(info.value, SpinebenchError)


def _may_differ(rules, saved: dict, current: dict) -> set[str]:
    """The keys a resume may change under `rules` (each raises when the two must not be resumed into each other)."""
    return {key for rule in rules for key in rule(saved, current)}


def test_a_resume_that_would_change_the_frozen_encoder_is_refused(tmp_path):
    """SAMed's checkpoints lack the frozen encoder: a resume rebuilds it from the SAM file found now. A file where
    the run had none (or none where it had one, or another file) would swap the encoder under the trained LoRA and
    decoder, so SAMed's resume rule refuses it; the same file found in another folder resumes (weights_source, its
    path, stays neutral). A checkpoint that does not record the file is not compared."""
    from spinebench.segmentation.samed_benchmark import FROZEN_WEIGHTS, SamedBenchmark, frozen_weights

    rules = SamedBenchmark("samed", partial(build_samed), sam_checkpoint=None).resume_rules()
    sam = tmp_path / "a" / "sam_vit_b_01ec64.pth"
    sam.parent.mkdir()
    sam.write_bytes(b"x" * 100)
    moved = tmp_path / "b" / sam.name
    moved.parent.mkdir()
    moved.write_bytes(b"x" * 100)
    assert frozen_weights(str(sam)) == frozen_weights(str(moved)) == "sam_vit_b_01ec64.pth, 100 bytes"
    random = {"model.network.rank": 4, "weights_source": None, FROZEN_WEIGHTS: None}
    found = {"model.network.rank": 4, "weights_source": str(sam), FROZEN_WEIGHTS: frozen_weights(str(sam))}
    with pytest.raises(
        ConfigError,
        match=r"^this run's frozen weights \(not in its checkpoints\) came from none \(its "
        r"seeded random initialisation\); this start found sam_vit_b_01ec64.pth, 100 "
        r"bytes, and resuming would change the frozen",
    ):
        _may_differ(rules, random, found)
    with pytest.raises(ConfigError, match="this start found none"):
        _may_differ(rules, found, random)
    assert _may_differ(rules, found, {**found, "weights_source": str(moved)}) == {"weights_source"}  # elsewhere
    old = {k: v for k, v in random.items() if k != FROZEN_WEIGHTS}  # a checkpoint that does not record it
    assert _may_differ(rules, old, found) == {"weights_source", FROZEN_WEIGHTS}


def _run_context(cap: int | None):
    return SimpleNamespace(trainer=SimpleNamespace(max_input_size=cap), cache_dir=None)


def test_samed_takes_square_inputs_capped_to_its_patch_multiple():
    """model.image_size sets the square input; model.input_size may only repeat it; a smoke run's size cap keeps
    a multiple of SAM's 16-pixel patch, where another segmenter's is the cap itself."""
    from spinebench.segmentation.benchmark import SegmentationBenchmark
    from spinebench.segmentation.models import build_plain_unet
    from spinebench.segmentation.samed_benchmark import SamedBenchmark

    samed = SamedBenchmark("samed", partial(build_samed, rank=4), image_size=128, input_size=[128, 128])
    assert samed.input_size == [128, 128] and samed.effective_size(_run_context(None)) == [128, 128]
    assert samed.effective_size(_run_context(70)) == [64, 64]
    assert SegmentationBenchmark("unet", partial(build_plain_unet)).effective_size(_run_context(70)) == [70, 70]
    with pytest.raises(
        ConfigError,
        match=r"SAMed takes square 128x128 inputs \(model.image_size\); "
        r"model.input_size=\[128, 256\] disagrees",
    ):
        SamedBenchmark("samed", partial(build_samed), image_size=128, input_size=[128, 256])
    with pytest.raises(ConfigError, match=r"model.image_size=120: must be a multiple of 16"):
        SamedBenchmark("samed", partial(build_samed), image_size=120)
    with pytest.raises(ConfigError, match=r"model.network.sam_checkpoint: SAMed's is model.sam_checkpoint"):
        SamedBenchmark("samed", partial(build_samed, sam_checkpoint="x.pth"))


def test_samed_checkpoints_record_the_frozen_encoder_and_its_model_config_builds_samed(tmp_path):
    from spinebench.segmentation.samed_benchmark import FROZEN_WEIGHTS, SamedBenchmark

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "model" / "samed.yaml").read_text())
    assert config["_target_"] == "spinebench.segmentation.samed_benchmark.SamedBenchmark"
    sam = tmp_path / "sam_vit_b_01ec64.pth"
    sam.write_bytes(b"x" * 7)
    keys = SamedBenchmark("samed", partial(build_samed)).checkpoint_keys(str(sam))
    assert keys == {"weights_source": str(sam), FROZEN_WEIGHTS: "sam_vit_b_01ec64.pth, 7 bytes"}


def test_a_finished_run_is_rebuilt_from_its_recorded_sam_file_found_again_by_name_and_size(tmp_path, monkeypatch):
    """Scoring a finished run needs the SAM file it trained on (its checkpoints lack the frozen encoder): the path
    recorded, or the same file (name and size) found now in the weights folders; gone, a WeightsError names it."""
    from spinebench.segmentation.samed_benchmark import FROZEN_WEIGHTS, SamedBenchmark, frozen_weights

    recorded = tmp_path / "old" / "sam_vit_b_01ec64.pth"
    recorded.parent.mkdir()
    recorded.write_bytes(b"x" * 9)
    trained = {"weights_source": str(recorded), FROZEN_WEIGHTS: frozen_weights(str(recorded))}
    bench = SamedBenchmark("samed", partial(build_samed))
    assert bench._trained_weights(trained, "auto") == str(recorded)
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("SPINEBENCH_WEIGHTS", str(folder))
    monkeypatch.chdir(tmp_path)
    recorded.rename(folder / recorded.name)
    assert bench._trained_weights(trained, "auto") == str(folder / recorded.name)
    (folder / recorded.name).write_bytes(b"x" * 8)  # another file of that name
    with pytest.raises(WeightsError, match=rf"^{recorded}: the SAM checkpoint this SAMed run was trained from is not"):
        bench._trained_weights(trained, "auto")
    assert bench._trained_weights({"weights_source": None, FROZEN_WEIGHTS: None}, "auto") is None  # random init
