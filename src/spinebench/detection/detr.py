"""DETR (ResNet-50) through the spinebench engine: the `_target_` of configs/model/detr.yaml.

The network is transformers' DetrForObjectDetection on its timm ResNet-50 path (transformers' other ResNet path
freezes the whole backbone in 5.x), built offline with random weights; its Hungarian matcher and set loss are
transformers' own, with DETR's weights (class 1, L1 5, GIoU 2, no-object 0.1; `model.loss`).

Head layouts (`model.head`):
- `paper` (default): the COCO head (91 classes + no-object) followed by `Linear(92 -> 2)` (hematoma + no-object), as
  the authors' code stacks a new layer on the hub's COCO DETR-R50: 41,524,954 parameters, the paper's count.
- `one_class`: DETR's usual fine-tuning layout, the class head replaced by `Linear(256 -> 2)`: 41,501,638.

Input: every image stretched to `model.input_size` (the authors' square 256 x 256; [256, 642] keeps the aspect),
ImageNet-normalised. DETR predicts boxes relative to the image, so a stretch needs no box arithmetic. Each of the
100 queries is one detection (its hematoma probability the score).

Pretrained (`model.weights`: auto | PATH | null): a COCO DETR-R50 state dict in transformers' names (the
`facebook/detr-resnet-50` model.safetensors, or a .pth of the same keys); the tensors of matching name and shape
load, the new class layer starts at random. As DETR does, a pretrained backbone keeps its stem and first stage
frozen; frozen batch norm is transformers' (the paper's count holds no batch-norm parameter).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spinebench.contract import RunContext
from spinebench.detection.data import LABEL_OFFSET
from spinebench.detection.engine_detector import DetectorTrainModule, EngineDetector, resize_images
from spinebench.engine.config import input_size as checked_input_size
from spinebench.errors import ConfigError, WeightsError
from spinebench.weights import resolve_weights

log = logging.getLogger(__name__)

HEADS = ("paper", "one_class")
COCO_CLASSES = 91  # DETR-R50's COCO head: 91 class slots + no-object
FILES = ("detr-resnet-50.safetensors", "detr-resnet-50.pth")  # what `auto` looks for (transformers' key names)
LOSS_KEYS = ("class_cost", "bbox_cost", "giou_cost", "eos_coefficient", "bbox_loss_coefficient",
             "giou_loss_coefficient", "auxiliary_loss")  # fmt: skip
# DetrConfig's layout keys a config may change (model.architecture): the paper's row keeps transformers' defaults
# (ResNet-50, d_model 256, 6 + 6 layers of 8 heads, feed-forward 2048, 100 queries); detr_light narrows them
ARCHITECTURE_KEYS = ("backbone", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                     "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_queries")  # fmt: skip
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKBONE, FROZEN_STEM = "model.backbone.", ("conv1.", "bn1.", "layer1.")


NORMS = ("frozen", "batch")


def train_backbone_norms(model: nn.Module) -> int:
    """The backbone's frozen batch norms as trainable BatchNorm2d (fresh: scale 1, shift 0, statistics 0 / 1); how
    many. transformers freezes them for a pretrained backbone, as DETR does; from random weights a frozen norm is
    the identity, which leaves a from-scratch ResNet without normalisation."""
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DetrFrozenBatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(child.weight.numel()))
                replaced += 1
    return replaced


def build_detr(
    head: str = "paper", loss: dict | None = None, architecture: dict | None = None, backbone_norm: str = "frozen"
) -> nn.Module:
    """DetrForObjectDetection (timm ResNet-50 unless `architecture` names another timm backbone, random init) with
    the head layout `head` (module docstring) and the backbone's norms frozen (DETR's) or trained (`batch`)."""
    from transformers import DetrConfig, DetrForObjectDetection

    if head not in HEADS:
        raise ConfigError(f"model.head must be {' or '.join(HEADS)}, got {head!r}")
    config = DetrConfig(
        num_labels=COCO_CLASSES if head == "paper" else 1,
        use_timm_backbone=True,
        use_pretrained_backbone=False,
        **(loss or {}),
        **(architecture or {}),
    )
    model = DetrForObjectDetection(config)
    if backbone_norm not in NORMS:
        raise ConfigError(f"model.backbone_norm must be {' or '.join(NORMS)}, got {backbone_norm!r}")
    if backbone_norm == "batch":
        train_backbone_norms(model.model.backbone)
    if head == "paper":
        model.class_labels_classifier = nn.Sequential(model.class_labels_classifier, nn.Linear(COCO_CLASSES + 1, 2))
        model.config.num_labels = 1  # the loss sees the last layer's hematoma + no-object
    return model


def head_layout(state: dict[str, Any]) -> str | None:
    """Which head layout a DETR state dict was trained with (None: not a DETR of either)."""
    if "class_labels_classifier.1.weight" in state:
        return "paper"
    if "class_labels_classifier.weight" in state:
        return "one_class" if state["class_labels_classifier.weight"].shape[0] == 2 else "coco"
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, or a torch file read with weights_only (no code runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        what = " ".join(str(error).split()).split(". ")[0]
        raise WeightsError(
            f"model.weights={path}: cannot read it as a state dict ({type(error).__name__}: {what})"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise WeightsError(f"model.weights={path}: holds a {type(loaded).__name__}, not a state dict")
    return loaded


def load_pretrained(model: nn.Module, path: Path, head: str) -> int:
    """Tensors of matching name and shape from a COCO DETR-R50 state dict; returns how many loaded."""
    state = read_state_dict(path)
    if head == "paper" and head_layout(state) == "coco":  # the COCO head is the first layer of the paper's
        state = {k.replace("class_labels_classifier.", "class_labels_classifier.0.", 1): v for k, v in state.items()}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("model.") for k in matched):
        raise WeightsError(
            f"model.weights={path}: no DETR tensor matches (a DETR-R50 state dict in transformers' names is needed, "
            "e.g. facebook/detr-resnet-50's model.safetensors)"
        )
    model.load_state_dict(matched, strict=False)
    log.info("detr: loaded %d/%d tensors from %s", len(matched), len(own), path)
    return len(matched)


class DetrModule(DetectorTrainModule):
    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        labels = []
        for image, target in zip(images, targets):
            height, width = image.shape[-2:]
            x0, y0, x1, y1 = target["boxes"].float().unbind(-1)
            boxes = torch.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height])
            labels.append({"class_labels": target["labels"] - LABEL_OFFSET, "boxes": boxes.T.reshape(-1, 4)})
        out = self.model(pixel_values=self.benchmark.pixels(images), labels=labels)
        parts = out.loss_dict or {}
        shown = {k: v.detach() for k, v in parts.items() if k in ("loss_ce", "loss_bbox", "loss_giou")}
        return {"loss": out.loss, **shown}

    def parameter_groups(self) -> list[dict]:
        """The authors' recipe: backbone lr x backbone_lr_scale, the final class layer lr x final_lr_scale."""
        return self.benchmark.parameter_groups(self.model, self.base_lr)


class Detr(EngineDetector):
    def __init__(
        self,
        name: str = "detr",
        row: str | None = "detr",
        input_size: Sequence[int] = (256, 256),
        head: str = "paper",
        weights: str | None = "auto",
        backbone_lr_scale: float = 0.1,
        final_lr_scale: float = 5.0,
        loss: dict | None = None,
        architecture: dict | None = None,
        backbone_norm: str = "frozen",
    ):
        super().__init__(name, row, checked_input_size(input_size), weights)
        if backbone_norm not in NORMS:
            raise ConfigError(f"model.backbone_norm must be {' or '.join(NORMS)}, got {backbone_norm!r}")
        self.backbone_norm = backbone_norm
        if head not in HEADS:
            raise ConfigError(f"model.head must be {' or '.join(HEADS)}, got {head!r}")
        self.head = head
        self.loss = dict(loss or {})
        unknown = sorted(set(self.loss) - set(LOSS_KEYS))
        if unknown:
            raise ConfigError(f"unknown key model.loss.{unknown[0]} (known: {', '.join(LOSS_KEYS)})")
        self.architecture = dict(architecture or {})
        unknown = sorted(set(self.architecture) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise ConfigError(f"unknown key model.architecture.{unknown[0]} (known: {', '.join(ARCHITECTURE_KEYS)})")
        for key, value in (("backbone_lr_scale", backbone_lr_scale), ("final_lr_scale", final_lr_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"model.{key}={value!r}: must be a number >= 0")
        self.backbone_lr_scale, self.final_lr_scale = float(backbone_lr_scale), float(final_lr_scale)

    def build(self, ctx: RunContext | None, load_weights: bool) -> tuple[nn.Module, dict[str, Any]]:
        model = build_detr(self.head, self.loss, self.architecture, self.backbone_norm)
        choice = (
            resolve_weights(self.weights, FILES, ctx.cache_dir if ctx else None, self.name) if load_weights else None
        )
        if choice is not None and choice.path is not None:
            load_pretrained(model, choice.path, self.head)
            for name, parameter in model.named_parameters():  # DETR trains layer2..4 of a pretrained backbone
                if name.startswith(BACKBONE) and name.split("model.backbone.model.", 1)[-1].startswith(FROZEN_STEM):
                    parameter.requires_grad_(False)
        pretrained = bool(choice and choice.path is not None)
        return model, {"pretrained": pretrained, "pretrained_source": choice.source if pretrained else None}

    def train_module(self, model: nn.Module, val_ground_truth: dict, ctx: RunContext) -> DetrModule:
        module = DetrModule(self, model, val_ground_truth, augment=ctx.trainer.augment)
        module.base_lr = float(ctx.trainer.optimizer["lr"])
        return module

    def final_layer(self) -> str:
        return "class_labels_classifier.1." if self.head == "paper" else "class_labels_classifier."

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        groups: dict[str, list] = {"backbone": [], "final": [], "rest": []}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                part = (
                    "backbone"
                    if name.startswith(BACKBONE)
                    else "final"
                    if name.startswith(self.final_layer())
                    else "rest"
                )
                groups[part].append(parameter)
        scales = {"backbone": self.backbone_lr_scale, "final": self.final_lr_scale, "rest": 1.0}
        return [{"params": groups[part], "lr": lr * scales[part]} for part in groups if groups[part]]

    def pixels(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = resize_images(images, self.size)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        return (x - mean) / x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def detect(self, model: nn.Module, images: list[torch.Tensor]) -> list:
        out = model(pixel_values=self.pixels(images))
        probabilities = out.logits.float().softmax(-1)[..., :-1]  # the last class is no-object
        scores, labels = probabilities.max(-1)
        found = []
        for image, boxes, image_scores, image_labels in zip(images, out.pred_boxes.float(), scores, labels):
            height, width = image.shape[-2:]
            cx, cy, w, h = boxes.unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
            xyxy = (xyxy * xyxy.new_tensor([width, height, width, height])).clamp(min=0)
            xyxy = torch.minimum(xyxy, xyxy.new_tensor([width, height, width, height]))
            found.append((xyxy, image_scores, image_labels))
        return found

    def load_trained(self, model: nn.Module, state: dict, checkpoint: Path) -> None:
        layout = head_layout(state)
        if layout != self.head:
            what = f"the {layout} head layout" if layout else "no DETR head"
            raise WeightsError(
                f"{checkpoint}: a DETR checkpoint of {what}, but model.head={self.head} "
                f"(score it with model.head={layout})"
                if layout in HEADS
                else f"{checkpoint}: holds {what}"
            )
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise WeightsError(f"{checkpoint}: does not fit this DETR ({first})") from error
