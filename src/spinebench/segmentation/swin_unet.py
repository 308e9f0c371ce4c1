"""Swin-UNet (Cao et al. 2022): timm's Swin Transformer encoder and a symmetric decoder of timm Swin blocks.

The layout is the authors' "lite" configuration the paper's count comes from: embedding 96, depths [2, 2, 2, 2]
(not Swin-T's [2, 2, 6, 2]), heads [3, 6, 12, 24], window 4: 27,153,156 parameters at 10 classes, at 128 x 128
and at 256 x 256 (the count does not depend on the size while each stage's grid is at least the window).

- Encoder: timm's `SwinTransformer` (patch 4, three 2x patch merges; 20,402,586 parameters) built for the run's
  size.
- Decoder (ours, the authors' parameter shapes): a patch expanding (linear to 2x channels, rearranged to a 2x
  grid of half the channels, LayerNorm) from the bottleneck, then for each of the three shallower stages the skip
  concatenated and projected back (linear 2C -> C), two Swin blocks (window, then shifted window) and, but for the
  last, a patch expanding; a LayerNorm, a 4x patch expanding to the input grid and a 1 x 1 conv to classes.
- The skips are each stage's input (the patch embedding's output, then each patch merging's), as in the authors'
  code, which takes them before a stage's blocks.
- Pretrained: a Swin ImageNet state dict (Microsoft's `swin_tiny_patch4_window7_224.pth` or timm's) into the
  encoder's layers that exist (timm's filter renames the original layout and resamples the window-7 position
  bias tables to window 4; Swin-T's blocks 3-6 of its third stage have no place here), and each encoder stage's
  blocks copied into the decoder stage of the same width, as the authors' code starts its decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from spinebench.engine.config import input_size as checked_input_size
from spinebench.engine.config import positive_int, positive_ints
from spinebench.errors import ConfigError, WeightsError
from spinebench.segmentation.models import NETWORK, Segmenter, load_matching, read_weights, takes_pretrained
from spinebench.segmentation.sized_benchmark import built_for_input

PATCH = 4
PRETRAINED_FILES = ("swin_tiny_patch4_window7_224.pth", "swin_tiny_patch4_window7_224.ms_in1k.safetensors")


class PatchExpand(nn.Module):
    """B x H x W x C -> B x sH x sW x C': a linear layer to s*s*C' channels, each pixel's channels spread over an
    s x s cell (in the authors' (s, s, C') order), then LayerNorm over C'."""

    def __init__(self, dim: int, scale: int, out_dim: int):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s, c = self.scale, self.out_dim
        x = self.expand(x).view(b, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)
        return self.norm(x)


class SwinUNet(nn.Module):
    """3-channel images (B x 3 x H x W, the size it was built for) -> logits at H x W."""

    def __init__(
        self,
        num_classes: int = 10,
        img_size: Sequence[int] = (128, 128),
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 4,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock

        self.encoder = SwinTransformer(
            img_size=tuple(img_size),
            patch_size=PATCH,
            num_classes=0,
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            drop_path_rate=drop_path_rate,
        )
        stages = len(depths)
        dims = [embed_dim * 2**i for i in range(stages)]
        grids = [(img_size[0] // (PATCH * 2**i), img_size[1] // (PATCH * 2**i)) for i in range(stages)]
        self.expand = nn.ModuleList()  # the decoder's patch expanding after each stage, deepest first
        self.fuse = nn.ModuleList()  # skip concatenated -> back to the stage's width
        self.stages = nn.ModuleList()
        for i in reversed(range(stages - 1)):
            self.expand.append(PatchExpand(dims[i + 1], 2, dims[i]))
            self.fuse.append(nn.Linear(2 * dims[i], dims[i]))
            self.stages.append(
                nn.Sequential(
                    *(
                        SwinTransformerBlock(
                            dims[i],
                            grids[i],
                            num_heads=num_heads[i],
                            window_size=window_size,
                            shift_size=0 if j % 2 == 0 else window_size // 2,
                            drop_path=_drop_path(self.encoder.layers[i].blocks[j]),  # the encoder stage's
                        )
                        for j in range(depths[i])
                    )
                )
            )
        self.norm = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, PATCH, embed_dim)
        self.head = nn.Conv2d(embed_dim, num_classes, 1, bias=False)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The normed bottleneck (B x H/32 x W/32 x 8C) and each stage's input, shallowest first (NHWC)."""
        x = self.encoder.patch_embed(x)
        skips = []
        for stage in self.encoder.layers:
            x = stage.downsample(x)
            skips.append(x)
            x = stage.blocks(x)
        return self.encoder.norm(x), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.features(x)
        for expand, fuse, stage, skip in zip(self.expand, self.fuse, self.stages, reversed(skips[:-1])):
            x = stage(fuse(torch.cat([expand(x), skip], dim=-1)))
        x = self.final_expand(self.norm(x))
        return self.head(x.permute(0, 3, 1, 2))

    def decoder_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(encoder stage's blocks, decoder stage's blocks) of the same width, deepest first."""
        return [(self.encoder.layers[len(self.stages) - 1 - k].blocks, stage) for k, stage in enumerate(self.stages)]


def _drop_path(block: nn.Module) -> float:
    return float(getattr(block.drop_path1, "drop_prob", 0.0))


def load_encoder(model: SwinUNet, path: str | Path | None) -> str | None:
    """A Swin ImageNet state dict into the encoder (through timm's filter) and the encoder's stages into the
    decoder's (the authors' start)."""
    if not path:
        return None
    from timm.models.swin_transformer import checkpoint_filter_fn

    what = "Swin-UNet encoder (Swin)"
    path, state = read_weights(path, what)
    # timm's filter resamples each bias table in place of its block's: Swin-T's blocks that the lite layout lacks
    # (its third stage's 3-6) are dropped first
    blocks = {name for name, _ in model.encoder.named_modules()}
    table = ".attn.relative_position_bias_table"
    state = {k: v for k, v in state.items() if not k.endswith(table) or k[: -len(table)] in blocks}
    try:
        state = checkpoint_filter_fn(state, model.encoder)
    except Exception as error:  # a bias table under a name that is no attention module of this encoder, say
        raise WeightsError(
            f"{path}: cannot map it onto the {what} ({type(error).__name__}: {error}): is it a Swin state dict?"
        ) from error
    load_matching(model.encoder, state, path, what)
    with torch.no_grad():
        for encoder_blocks, decoder_blocks in model.decoder_pairs():
            decoder_blocks.load_state_dict(encoder_blocks.state_dict())
    return str(path)


@built_for_input(PATCH * 8)
@takes_pretrained("encoder_weights", files=PRETRAINED_FILES)
def build_swin_unet(
    num_classes: int = 10,
    img_size: Sequence[int] = (128, 128),
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 4,
    drop_path_rate: float = 0.1,
    encoder_weights: str | None = None,
) -> Segmenter:
    """Swin-UNet for `img_size` (set by the benchmark from model.input_size); a smaller `embed_dim` gives the same
    design lighter."""
    size = checked_input_size(img_size)
    embed_dim = positive_int(embed_dim, f"{NETWORK}.embed_dim")
    depths = positive_ints(depths, f"{NETWORK}.depths")
    num_heads = positive_ints(num_heads, f"{NETWORK}.num_heads")
    window_size = positive_int(window_size, f"{NETWORK}.window_size")
    if len(depths) != 4 or len(num_heads) != 4:
        raise ConfigError(f"{NETWORK}.depths and num_heads: four stages each, got {list(depths)}, {list(num_heads)}")
    if any((embed_dim * 2**i) % heads for i, heads in enumerate(num_heads)):
        raise ConfigError(f"{NETWORK}.embed_dim={embed_dim}: each stage's width must split into its num_heads")
    if not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
        raise ConfigError(f"{NETWORK}.drop_path_rate={drop_path_rate}: must be in [0, 1)")
    multiple = PATCH * 8  # the patch, then three 2x merges the decoder expands back exactly
    if any(side % multiple for side in size):
        raise ConfigError(
            f"model.input_size={size}: Swin-UNet's sides must be multiples of {multiple} (patch {PATCH}, three 2x "
            f"patch merges), e.g. [128, 128]"
        )
    # a grid no larger than the window is one window (timm's, and the authors', rule); a larger one must tile
    grids = [[side // (PATCH * 2**i) for side in size] for i in range(4)]
    untiled = [grid for grid in grids if any(g > window_size and g % window_size for g in grid)]
    if untiled:
        raise ConfigError(
            f"model.input_size={size}: a stage's grid, {untiled[0][0]} x {untiled[0][1]}, does not tile into "
            f"{window_size} x {window_size} windows; give sides that are multiples of {multiple * window_size}, or "
            f"at most {multiple * window_size}"
        )
    net = SwinUNet(num_classes, size, embed_dim, depths, num_heads, window_size, float(drop_path_rate))
    model = Segmenter(net, num_classes, multiple)
    model.pretrained_source = load_encoder(net, encoder_weights)
    return model
