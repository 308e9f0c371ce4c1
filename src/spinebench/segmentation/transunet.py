"""TransUNet (Chen et al. 2021): timm's hybrid ResNet-50 + ViT-B/16 encoder and the paper's cascaded upsampler.

The layout is the authors' R50-ViT-B_16 with three skips (`n_skip 3`): at 256 x 256 and 10 classes it has
105,323,306 parameters, the manuscript's count exactly (the position embedding grows with the input: 105,175,850
at the authors' code default of 128, so the paper's model saw 256).

- Encoder: timm's `vit_base_r50_s16_224` built for the run's size without a class token: the ResNet-50 root and
  its stages (3, 4, 9 bottlenecks, weight-standardised convs with GroupNorm, output stride 16), a 1 x 1 patch
  projection to 768 channels, 12 transformer blocks and a final norm (97,934,656 parameters at 256).
- Decoder (ours): a 3 x 3 conv from the 768 tokens to 512 channels, then four blocks, each a 2x bilinear upsampling,
  a concatenated skip (the ResNet's 1/8, 1/4 and 1/2 features, 512, 256 and 64 channels; none at the last block)
  and two 3 x 3 conv + BatchNorm + ReLU, to widths 256, 128, 64, 16 (`decoder_channels`); a 3 x 3 head to classes.
- Pretrained: the ImageNet-21k `R50+ViT-B_16.npz` TransUNet starts from (read by timm's own `.npz` loader), or a
  state dict of timm's model (.pth / .safetensors), into the encoder; the decoder starts from scratch, as theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.engine.config import input_size as checked_input_size
from spinebench.engine.config import positive_ints
from spinebench.errors import ConfigError, WeightsError
from spinebench.segmentation.models import NETWORK, Segmenter, load_matching, read_weights, takes_pretrained
from spinebench.segmentation.sized_benchmark import built_for_input

# the ViT's keys a config may narrow (network.transformer): the paper's row keeps ViT-B (768 wide, 12 blocks of 12
# heads); transunet_light narrows them
TRANSFORMER_KEYS = ("depth", "embed_dim", "num_heads", "mlp_ratio")
PATCH = 16  # the ResNet's output stride: one token per 16 x 16 pixels
SKIP_CHANNELS = (512, 256, 64)  # the ResNet's 1/8 (stage 2), 1/4 (stage 1) and 1/2 (root) features
# the file TransUNet's README points to (Google's ViT release), and timm's copy of the same weights
PRETRAINED_FILES = ("R50+ViT-B_16.npz", "imagenet21k_R50+ViT-B_16.npz", "vit_base_r50_s16_224.orig_in21k.safetensors")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """2x bilinear upsampling, the skip concatenated (if any), two conv + BN + ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1, self.conv2 = _conv_bn_relu(cin + skip, cout), _conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    """3-channel images (B x 3 x H x W, sides multiples of 16, the size it was built for) -> logits at H x W."""

    def __init__(
        self,
        num_classes: int = 10,
        img_size: Sequence[int] = (256, 256),
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        vit: str = "vit_base_r50_s16_224",
        transformer: dict | None = None,
    ):
        super().__init__()
        import timm

        self.encoder = timm.create_model(
            vit,
            pretrained=False,
            num_classes=0,
            img_size=tuple(img_size),
            class_token=False,
            global_pool="",
            **(transformer or {}),
        )
        backbone = self.encoder.patch_embed.backbone
        if len(backbone.stages) != 3:
            raise ConfigError(f"{NETWORK}.vit={vit}: TransUNet takes a hybrid ResNet (3 stages) + ViT of timm")
        hidden = self.encoder.embed_dim
        self.conv_more = _conv_bn_relu(hidden, 512)
        skips = (*SKIP_CHANNELS, 0)
        widths = (512, *decoder_channels)
        self.blocks = nn.ModuleList(UpBlock(widths[i], skips[i], widths[i + 1]) for i in range(4))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder's tokens as a 1/16 map (B x 768 x H/16 x W/16) and the ResNet skips, deepest first."""
        backbone = self.encoder.patch_embed.backbone
        stem = backbone.stem
        x = stem.norm(stem.conv(x))
        skips = [x]  # 1/2, before the max pooling
        x = stem.pool(x)
        for stage in backbone.stages:
            x = stage(x)
            skips.append(x)  # 1/4, 1/8, 1/16 (the last feeds the transformer, not the decoder)
        x = self.encoder.patch_embed.proj(backbone.norm(x))
        grid = x.shape[-2:]
        tokens = self.encoder.pos_drop(x.flatten(2).transpose(1, 2) + self.encoder.pos_embed)  # no class token
        tokens = self.encoder.norm_pre(tokens)
        tokens = self.encoder.norm(self.encoder.blocks(tokens))
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid), skips[2::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.features(x)
        x = self.conv_more(x)
        for block, skip in zip(self.blocks, [*skips, None]):
            x = block(x, skip)
        return self.head(x)


def load_encoder(model: TransUNet, path: str | Path | None) -> str | None:
    """The pretrained encoder from a local file: Google's `.npz` (timm reads it, resampling the position
    embedding to the grid) or a state dict of timm's model, whose position embedding is resampled here."""
    if not path:
        return None
    what = "TransUNet encoder (R50+ViT-B/16)"
    path = Path(str(path)).expanduser()
    if path.suffix != ".npz":
        path, state = read_weights(path, what)
        state = _fit_position_embedding(state, model.encoder)
        load_matching(model.encoder, state, path, what)
        return str(path)
    if not path.is_file():
        raise WeightsError(f"{what} weights {path} do not exist (give a local file; nothing is downloaded)")
    try:
        model.encoder.load_pretrained(str(path))
    except Exception as error:  # timm's KeyError names an npz key, not what is wrong
        raise WeightsError(
            f"{path}: cannot load it into the {what} ({type(error).__name__}: {error}): is this the R50+ViT-B_16 "
            ".npz of Google's ViT release?"
        ) from error
    return str(path)


def _fit_position_embedding(state: dict[str, torch.Tensor], vit: nn.Module) -> dict[str, torch.Tensor]:
    """A timm state dict's position embedding for this encoder: without the class token's position (none here)
    and resampled to this grid (timm's own files are for 224 x 224, a 14 x 14 grid)."""
    from timm.layers import resample_abs_pos_embed

    state = {k: v for k, v in state.items() if k != "cls_token"}
    pos, own = state.get("pos_embed"), vit.pos_embed
    if pos is None or pos.ndim != 3 or pos.shape == own.shape or pos.shape[-1] != own.shape[-1]:
        return state  # none, or not timm's layout: the shape check reports it
    tokens = pos.shape[1]
    side = int(round((tokens - 1) ** 0.5))
    prefix = 1 if side * side == tokens - 1 else 0
    side = int(round((tokens - prefix) ** 0.5))
    if side * side != tokens - prefix:
        return state
    state["pos_embed"] = resample_abs_pos_embed(
        pos, new_size=list(vit.patch_embed.grid_size), old_size=[side, side], num_prefix_tokens=prefix
    )[:, prefix:]
    return state


@built_for_input(PATCH)
@takes_pretrained("encoder_weights", files=PRETRAINED_FILES)
def build_transunet(
    num_classes: int = 10,
    img_size: Sequence[int] = (256, 256),
    decoder_channels: Sequence[int] = (256, 128, 64, 16),
    encoder_weights: str | None = None,
    transformer: dict | None = None,
) -> Segmenter:
    """TransUNet R50-ViT-B/16 for `img_size` (set by the benchmark from model.input_size); `decoder_channels`
    narrower for a lighter decoder, `transformer` (depth, embed_dim, num_heads, mlp_ratio) for a smaller ViT
    than ViT-B (the ResNet stays R50)."""
    size = checked_input_size(img_size)
    if any(side % PATCH for side in size):
        raise ConfigError(
            f"model.input_size={size}: TransUNet's sides must be multiples of {PATCH} (its ResNet's output stride, "
            f"one token per {PATCH} x {PATCH} pixels), e.g. [256, 256]"
        )
    channels = positive_ints(decoder_channels, f"{NETWORK}.decoder_channels")
    if len(channels) != 4:
        raise ConfigError(f"{NETWORK}.decoder_channels={list(channels)}: TransUNet has four upsampling blocks")
    transformer = dict(transformer or {})
    unknown = sorted(set(transformer) - set(TRANSFORMER_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {NETWORK}.transformer.{unknown[0]} (known: {', '.join(TRANSFORMER_KEYS)})")
    width, heads = transformer.get("embed_dim", 768), transformer.get("num_heads", 12)
    if width % heads:
        raise ConfigError(f"{NETWORK}.transformer: embed_dim {width} is not a multiple of num_heads {heads}")
    net = TransUNet(num_classes, size, channels, transformer=transformer)
    model = Segmenter(net, num_classes, PATCH)
    model.pretrained_source = load_encoder(net, encoder_weights)
    return model
