"""SAMed (Zhang & Liu 2023): SAM ViT-B with a frozen image encoder, rank-r LoRA on q and v, prompt-free decoding.

- Image encoder: segment-anything's ViT-B built for `image_size` (512 default, 128 as in the authors' code);
  its position embedding (64 x 64 for 1024) and the relative-position tables of the global-attention blocks are
  interpolated to the new grid when the SAM checkpoint is loaded. Every encoder weight is frozen.
- LoRA: each block's fused `attn.qkv` Linear gets rank-r updates on its q and v thirds: qkv(x) + [B_q A_q x, 0,
  B_v A_v x]; A is Kaiming-uniform, B zero, so at step 0 the model equals plain SAM.
- Prompt encoder called without prompts (its no-mask embedding is the only dense input); mask decoder with
  SAMed's num_classes + 1 mask tokens, trained fully. SAMed counts classes without background; the release's
  index 0 is itself a drawn class, so with num_classes = 10 (as the authors ran it) tokens 0-9 are the classes
  and token 10 is never a target: its mask is dropped. This reproduces the manuscript's parameter count
  exactly (91,866,903 at image_size 256; 91,711,255 at 128, 92,473,111 at 512). Prompt encoder stays trainable
  as in SAMed (only its no-mask embedding receives gradients).
- Checkpoint: `state_dict()` holds only LoRA + prompt encoder + mask decoder (~16 MB); the frozen encoder comes
  back from the SAM checkpoint (or, without one, from the same seeded random initialisation).

The network only: which SAM file a run uses, and what that means for resuming and scoring it, is
spinebench.segmentation.samed_benchmark's. `image_size` and `sam_checkpoint` are that benchmark's settings
(model.image_size, model.sam_checkpoint), the others the model config's `network` node (model.network.rank).
"""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.engine.config import positive_int
from spinebench.errors import ConfigError, WeightsError
from spinebench.segmentation.models import NETWORK

log = logging.getLogger(__name__)
PATCH_SIZE = 16  # SAM's: the input side must be a multiple of it
SAM_VIT_B = dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))


class LoRAqkv(nn.Module):
    """A frozen fused qkv projection plus low-rank updates of its q and v outputs."""

    def __init__(self, qkv: nn.Linear, rank: int):
        super().__init__()
        self.qkv, self.dim = qkv, qkv.in_features
        self.lora_q_a, self.lora_q_b = nn.Linear(self.dim, rank, bias=False), nn.Linear(rank, self.dim, bias=False)
        self.lora_v_a, self.lora_v_b = nn.Linear(self.dim, rank, bias=False), nn.Linear(rank, self.dim, bias=False)
        for a, b in ((self.lora_q_a, self.lora_q_b), (self.lora_v_a, self.lora_v_b)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        delta_q, delta_v = self.lora_q_b(self.lora_q_a(x)), self.lora_v_b(self.lora_v_a(x))
        return torch.cat(
            [qkv[..., : self.dim] + delta_q, qkv[..., self.dim : 2 * self.dim], qkv[..., 2 * self.dim :] + delta_v],
            dim=-1,
        )


PER_MASK_TOKEN = ("mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head")  # SAMed's load_from drops these


def _resize_sam_state(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Interpolate pos_embed (1 x S x S x C) and global-attention rel_pos tables to this model's grid;
    drop the decoder's per-mask-token parts (SAM has 4 tokens, we have one per class), as SAMed does: those that
    fit in shape would give the first 4 classes SAM's heads and the others random ones."""
    out = {}
    for key, value in state.items():
        if key not in target or any(part in key for part in PER_MASK_TOKEN):
            continue
        want = target[key].shape
        if value.shape == want:
            out[key] = value
        elif key.endswith("pos_embed"):
            grid = F.interpolate(
                value.permute(0, 3, 1, 2).float(), size=want[1:3], mode="bilinear", align_corners=False
            )
            out[key] = grid.permute(0, 2, 3, 1)
        elif "rel_pos" in key:
            out[key] = F.interpolate(value.T[None].float(), size=want[0], mode="linear", align_corners=False)[0].T
        elif key.startswith("mask_decoder."):
            log.info(
                "SAM checkpoint: %s %s does not fit %s (one mask token per class): trained from scratch",
                key,
                tuple(value.shape),
                tuple(want),
            )
        else:
            raise WeightsError(f"SAM checkpoint tensor {key} has shape {tuple(value.shape)}, model needs {tuple(want)}")
    return out


def _read_sam_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The SAM checkpoint's tensors, or a WeightsError naming the file: torch's own errors for a truncated download
    or a text file name neither it nor the setting."""
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as error:  # cut short, empty, text, or pickling more than tensors
        what = " ".join(str(error).split()).split(". ")[0]  # torch's messages run on for lines: the first sentence
        raise WeightsError(
            f"model.sam_checkpoint={path}: cannot read it as SAM weights ({type(error).__name__}"
            f"{': ' + what if what else ''})"
        ) from error
    if not isinstance(state, dict):
        raise WeightsError(f"model.sam_checkpoint={path}: holds a {type(state).__name__}, not a SAM state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


class SAMed(nn.Module):
    """Grey-normalised 3-channel images (B x 3 x S x S) -> logits (B x num_classes x S x S)."""

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 512,
        rank: int = 4,
        sam_checkpoint: str | None = None,
        init_seed: int = 0,
    ):
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

        image_size, rank = positive_int(image_size, "model.image_size"), positive_int(rank, f"{NETWORK}.rank")
        init_seed = positive_int(init_seed, f"{NETWORK}.init_seed", allow_zero=True)
        if image_size % PATCH_SIZE:
            raise ConfigError(f"model.image_size={image_size}: must be a multiple of {PATCH_SIZE} (SAM's patch size)")
        sam_checkpoint = str(sam_checkpoint) if sam_checkpoint is not None else None  # =123 on the command line
        if sam_checkpoint is not None and not Path(sam_checkpoint).expanduser().is_file():
            raise WeightsError(
                f"model.sam_checkpoint={sam_checkpoint} does not exist: give the local path of "
                "sam_vit_b_01ec64.pth, or leave it unset to train from random initialisation"
            )
        self.num_classes, self.image_size, self.rank = num_classes, image_size, rank
        grid = image_size // PATCH_SIZE
        with torch.random.fork_rng(devices=[]):  # random init is reproducible from the config (it is not saved)
            torch.manual_seed(init_seed)
            self.image_encoder = ImageEncoderViT(
                img_size=image_size,
                patch_size=PATCH_SIZE,
                embed_dim=SAM_VIT_B["embed_dim"],
                depth=SAM_VIT_B["depth"],
                num_heads=SAM_VIT_B["num_heads"],
                mlp_ratio=4,
                out_chans=256,
                qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                global_attn_indexes=SAM_VIT_B["global_attn_indexes"],
                window_size=14,
            )
            self.prompt_encoder = PromptEncoder(
                embed_dim=256,
                image_embedding_size=(grid, grid),
                input_image_size=(image_size, image_size),
                mask_in_chans=16,
            )
            self.mask_decoder = MaskDecoder(
                num_multimask_outputs=num_classes,  # SAMed's num_classes + 1 tokens (see module docstring)
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            )
        self.pretrained = sam_checkpoint is not None
        self.pretrained_source = str(Path(sam_checkpoint).expanduser()) if sam_checkpoint else None
        if sam_checkpoint:
            state = _read_sam_checkpoint(sam_checkpoint)
            own = {**self.state_dict_full()}
            result = nn.Module.load_state_dict(self, _resize_sam_state(state, own), strict=False)
            missing = [k for k in result.missing_keys if not k.startswith("mask_decoder.")]
            if missing:
                raise WeightsError(
                    f"{sam_checkpoint}: not a SAM ViT-B checkpoint ({len(missing)} encoder/prompt tensors "
                    f"missing, e.g. {missing[0]})"
                )
        else:
            log.warning(
                "!" * 100 + "\nSAMed: NO SAM CHECKPOINT (model.sam_checkpoint unset): the frozen ViT-B encoder "
                "is RANDOM. Results are not SAMed's; the run records pretrained=false.\n" + "!" * 100
            )
        for p in self.image_encoder.parameters():
            p.requires_grad = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed + 1)
            for block in self.image_encoder.blocks:
                block.attn.qkv = LoRAqkv(block.attn.qkv, rank)
        self._register_state_dict_hook(_drop_frozen)
        self.register_load_state_dict_post_hook(_ignore_missing_frozen)

    def state_dict_full(self) -> dict[str, torch.Tensor]:
        """Every tensor, frozen encoder included (the SAM checkpoint's key names before LoRA wrapping)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    @staticmethod
    def is_saved(key: str) -> bool:
        return not key.startswith("image_encoder.") or ".lora_" in key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"SAMed was built for {self.image_size}x{self.image_size} inputs, got {tuple(x.shape[-2:])}"
            )
        embeddings = self.image_encoder(x)
        sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)  # batch 1, broadcast over images
        masks, _ = self.mask_decoder.predict_masks(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return F.interpolate(masks[:, : self.num_classes], size=x.shape[-2:], mode="bilinear", align_corners=False)


def _drop_frozen(module: SAMed, state: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state if k.startswith(prefix) and not SAMed.is_saved(k[len(prefix) :])]:
        del state[key]


def _ignore_missing_frozen(module: SAMed, incompatible) -> None:
    frozen = [k for k in incompatible.missing_keys if "image_encoder." in k and ".lora_" not in k]
    for key in frozen:
        incompatible.missing_keys.remove(key)


def build_samed(
    num_classes: int = 10, image_size: int = 512, rank: int = 4, sam_checkpoint: str | None = None, init_seed: int = 0
):
    """SAMed inside the common `Segmenter` wrapper (grey -> ImageNet-normalised RGB = SAM's pixel mean/std; SAMed's
    own code feeds raw [0, 1] images instead)."""
    from spinebench.segmentation.models import Segmenter

    sam = SAMed(num_classes, image_size, rank, sam_checkpoint or None, init_seed)
    model = Segmenter(sam, num_classes, pad_multiple=1)
    model.pretrained_source = sam.pretrained_source
    return model
