"""TransUNet and Swin-UNet: the paper configs' parameter counts (built from the real config files), forward shapes
at the run's sizes, one-line errors for a size their grid cannot take and for a pretrained file of another
architecture (raised when the network is built, before training), and pretrained files of the right kind loading.

TransUNet is ViT-B (105M parameters): built twice here (256 and 64), forward passes at those sizes only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml
from test_experiments import compose_train

from spinebench.build import build
from spinebench.errors import ConfigError, WeightsError
from spinebench.runinfo import count_parameters
from spinebench.segmentation.swin_unet import build_swin_unet
from spinebench.segmentation.transunet import _fit_position_embedding, build_transunet, load_encoder

ROOT = Path(__file__).resolve().parents[1]
MANUSCRIPT = yaml.safe_load((ROOT / "benchmarks" / "manuscript.yaml").read_text())
PAPER_PARAMS = {row: MANUSCRIPT["tasks"]["segmentation"]["rows"][row]["params"] for row in ("transunet", "swin_unet")}


def benchmark_of(experiment: str, *overrides: str):
    """The model of `spinebench-train experiment=paper/<experiment> <overrides>`, as the pipeline instantiates it."""
    return build(compose_train([f"experiment=paper/{experiment}", *overrides]).model, "model")


def paper_network(experiment: str, *overrides: str) -> torch.nn.Module:
    """The paper config's network at its own input size, built as training builds it (no pretrained file)."""
    benchmark = benchmark_of(experiment, "model.network.encoder_weights=null", *overrides)
    return benchmark.build_model(), benchmark


def grey(batch: int, size: list[int]) -> torch.Tensor:
    return torch.rand(batch, 1, *size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def transunet_paper():
    return paper_network("transunet")


def test_transunet_paper_config_is_the_manuscript_s_model(transunet_paper):
    model, benchmark = transunet_paper
    assert benchmark.input_size == [256, 256] and benchmark.row == "transunet"
    assert count_parameters(model) == PAPER_PARAMS["transunet"] == 105_323_306
    assert count_parameters(model.net.encoder) == 97_934_656  # timm's R50 + ViT-B/16 at 256, no class token
    with torch.no_grad():
        assert model.eval()(grey(1, [256, 256])).shape == (1, 10, 256, 256)


@pytest.mark.parametrize("size", [[128, 128], [256, 256]])
def test_swin_unet_paper_config_is_the_manuscript_s_model_at_128_and_256(size):
    model, benchmark = paper_network("swin_unet", f"model.input_size=[{size[0]},{size[1]}]")
    assert benchmark.input_size == size
    assert count_parameters(model) == PAPER_PARAMS["swin_unet"] == 27_153_156
    assert count_parameters(model.net.encoder) == 20_402_586
    assert [block.window_size for block in model.net.encoder.layers[3].blocks] == [(4, 4), (4, 4)]
    with torch.no_grad():
        assert model.eval()(grey(1, size)).shape == (1, 10, *size)


def test_swin_unet_paper_default_is_128():
    assert benchmark_of("swin_unet").input_size == [128, 128]


@pytest.fixture(scope="module")
def transunet_64():
    """TransUNet built for the smoke runs' 64 x 64, with a narrow decoder (the encoder is ViT-B whatever)."""
    return build_transunet(img_size=[64, 64], decoder_channels=[16, 16, 16, 16])


@pytest.mark.parametrize("experiment", ["transunet", "swin_unet"])
def test_the_smoke_cap_gives_each_network_a_size_its_grid_takes(experiment):
    """debug=smoke's trainer.max_input_size (64 in tests/test_experiments.py, 160 by default) is rounded to the
    network's multiple, and the size is the one the network is built for."""
    from types import SimpleNamespace

    benchmark = benchmark_of(experiment, "model.network.encoder_weights=null")
    for cap, size in {64: [64, 64], 160: [160, 160] if experiment == "transunet" else [128, 128]}.items():
        ctx = SimpleNamespace(trainer=SimpleNamespace(max_input_size=cap), cache_dir=None)
        assert benchmark.effective_size(ctx) == size
        assert benchmark._network_arguments(ctx, None, search=False)["img_size"] == size


@pytest.mark.slow  # a ViT-B backward pass (~20 s on 2 cores); the smoke runs train a step of each
def test_every_trainable_tensor_learns_at_the_smoke_size(transunet_64):
    small_swin = build_swin_unet(img_size=[64, 64], embed_dim=24)
    for model in (transunet_64, small_swin):
        model.train().zero_grad()
        logits = model(grey(2, [64, 64]))
        assert logits.shape == (2, 10, 64, 64)
        logits.logsumexp(1).mean().backward()
        missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:3]
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_swin_unet_takes_a_non_square_size():
    model = build_swin_unet(img_size=[128, 256], embed_dim=24).eval()
    with torch.no_grad():
        assert model(grey(1, [128, 256])).shape == (1, 10, 128, 256)


@pytest.mark.parametrize(
    ("experiment", "override", "says"),
    [
        ("swin_unet", "model.input_size=[100,100]", "multiples of 32"),
        ("swin_unet", "model.input_size=[160,160]", "does not tile into 4 x 4 windows"),
        ("transunet", "model.input_size=[100,100]", "multiples of 16"),
    ],
)
def test_a_size_the_grid_cannot_take_is_one_line_before_training(experiment, override, says):
    benchmark = benchmark_of(experiment, override, "model.network.encoder_weights=null")
    with pytest.raises(ConfigError, match=says) as error:
        benchmark.check_settings()  # the pipeline's build of the network, before fit()
    assert "\n" not in str(error.value) and "model.input_size" in str(error.value)


@pytest.mark.parametrize("experiment", ["transunet", "swin_unet"])
def test_the_native_size_and_a_network_img_size_are_refused(experiment):
    with pytest.raises(ConfigError, match="built for one input size"):
        benchmark_of(experiment, "model.input_size=null")
    with pytest.raises(ConfigError, match="model.network.img_size"):
        benchmark_of(experiment, "+model.network.img_size=[64,64]")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A state dict of another architecture (a torchvision ResNet-18)."""
    from torchvision.models import resnet18

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def test_a_pretrained_file_of_another_architecture_is_one_line_before_training(resnet_file, transunet_64):
    benchmark = benchmark_of("swin_unet", f"model.network.encoder_weights={resnet_file}")
    with pytest.raises(WeightsError, match="no tensor matches") as error:
        benchmark.check_settings()  # the pipeline's build of the network, before fit()
    assert "\n" not in str(error.value) and str(resnet_file) in str(error.value)
    with pytest.raises(WeightsError, match="no tensor matches") as error:
        load_encoder(transunet_64.net, resnet_file)  # what build_transunet does with model.network.encoder_weights
    assert "\n" not in str(error.value) and str(resnet_file) in str(error.value)


def test_a_swin_of_another_width_is_refused(tmp_path):
    path = tmp_path / "swin_narrow.pth"
    torch.save(timm.create_model("swin_tiny_patch4_window7_224", embed_dim=32, num_classes=0).state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_swin_unet(img_size=[128, 128], encoder_weights=str(path))


def test_swin_t_weights_start_the_encoder_and_the_decoder_as_the_authors_code(tmp_path):
    """Swin-T ([2, 2, 6, 2], window 7): its stages' tensors fill the lite encoder (bias tables resampled to
    window 4) and each encoder stage's blocks start the decoder stage of the same width."""
    swin_t = timm.create_model("swin_tiny_patch4_window7_224", num_classes=1000)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": swin_t.state_dict()}, path)
    model = build_swin_unet(img_size=[128, 128], encoder_weights=str(path))
    assert model.pretrained_source == str(path)
    net, source = model.net, swin_t.state_dict()
    own = net.encoder.state_dict()
    for key in ("patch_embed.proj.weight", "layers.2.downsample.reduction.weight", "layers.3.blocks.1.mlp.fc2.weight"):
        torch.testing.assert_close(own[key], source[key])
    table = own["layers.0.blocks.0.attn.relative_position_bias_table"]
    assert table.shape == (49, 3) and source["layers.0.blocks.0.attn.relative_position_bias_table"].shape == (169, 3)
    for encoder_blocks, decoder_blocks in net.decoder_pairs():
        for key, value in encoder_blocks.state_dict().items():
            torch.testing.assert_close(decoder_blocks.state_dict()[key], value)


def test_a_timm_vit_position_embedding_is_fitted_to_the_grid(transunet_64):
    """timm's R50+ViT-B/16 files hold a class token and a 14 x 14 (224 px) position grid: the class token's
    position is dropped and the grid resampled to the encoder's (here 64 px: 4 x 4)."""
    net = transunet_64.net
    grid = torch.arange(14.0).repeat(14).view(1, 196, 1).expand(1, 196, 768)
    state = {"cls_token": torch.zeros(1, 1, 768), "pos_embed": torch.cat([torch.full((1, 1, 768), 99.0), grid], 1)}
    fitted = _fit_position_embedding(state, net.encoder)
    assert "cls_token" not in fitted and fitted["pos_embed"].shape == net.encoder.pos_embed.shape == (1, 16, 768)
    columns = fitted["pos_embed"][0, :4, 0]  # the first row of the 4 x 4 grid: x from left to right, no 99
    assert torch.all(columns[1:] > columns[:-1]) and columns.max() < 14


def test_a_broken_npz_is_one_line(tmp_path, transunet_64):
    import numpy as np

    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(WeightsError, match="R50\\+ViT-B_16") as error:
        load_encoder(transunet_64.net, path)
    assert "\n" not in str(error.value)


def test_transunet_light_narrows_the_vit_and_refuses_keys_it_does_not_take():
    """transunet_light (CPU learning runs): the same R50 and skips, a 4-block ViT of width 192."""
    model, benchmark = paper_network("transunet", "model=transunet_light", "model.input_size=[64,128]")
    assert benchmark.name == "transunet_light" and len(model.net.encoder.blocks) == 4
    assert model.net.encoder.embed_dim == 192 and count_parameters(model) == 16_403_946
    with torch.no_grad():
        assert model.eval()(grey(1, [64, 128])).shape == (1, 10, 64, 128)
    with pytest.raises(ConfigError, match=r"unknown key model.network.transformer.width \(known: depth"):
        build_transunet(img_size=[64, 64], transformer={"width": 8})
    with pytest.raises(ConfigError, match="embed_dim 100 is not a multiple of num_heads 3"):
        build_transunet(img_size=[64, 64], transformer={"embed_dim": 100, "num_heads": 3})
