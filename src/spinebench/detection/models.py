"""torchvision detectors of the manuscript: Faster R-CNN R50-FPN, RetinaNet R50-FPN (v2), SSD300/SSD512 (ResNet-50).

One builder per detector, `build_<detector>(num_classes=2, input_size=..., pretrained=False, resize=...)`, named
by a model config's `network` node (`_target_: spinebench.detection.models.build_retinanet, _partial_: true`);
`@detector(...)` tells the benchmark what it needs before building (the files `model.weights: auto` looks for,
the resize modes, the smallest input). `load_pretrained` loads a local file into it (a full detector checkpoint
-> every tensor of matching shape, the class-specific heads are re-initialised; an ImageNet ResNet-50 -> the
backbone). Pretrained Faster R-CNN, RetinaNet and
multi-scale SSD use frozen batch norm and train the last 3 ResNet stages (torchvision's recipe); from scratch
everything trains with ordinary BN. The paper's SSD always trains every layer (below).

Input size (`resize`): "short_side", Faster R-CNN's and RetinaNet's default, scales the short side to
`input_size[0]` with the long side at most `input_size[1]` (256 -> 256 x 642); "stretch", SSD's only mode,
resizes every image to exactly `input_size` (SSD300: 300 x 300), as the authors' code does for every detector.
Native = 275 x 690.
SSD, `build_ssd`, is the authors' model (HematomaDetectionSSD/model.py of their code; 24,641,780 parameters as
in the paper): the whole ResNet-50 trunk as one backbone, so a single 2048-channel map at stride 32, under a
torchvision SSDHead built for six maps. torchvision's SSD runs the head and the anchor generator only over the
maps the backbone returns, so only the first level predicts: 4 anchors per cell (scales 0.15 and 0.21 of the
input, aspect 1, 2, 1/2) on a 10 x 10 grid at 300 and 16 x 16 at 512. The other five levels' convolutions
(691,356 parameters) are counted but never used. Every layer trains, with ordinary batch norm, pretrained or
not (as in the authors' code). `build_ssd_multiscale` is the usual multi-scale SSD instead: NVIDIA's SSD300 v1.1
ResNet-50 layout (conv1..layer3 with layer3 at stride 1, plus 5 extra blocks; 8,732 anchors at 300).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNetHead, _default_anchorgen
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from spinebench.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)

SSD_ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
PAPER_SSD_HEAD_CHANNELS = [2048, 1024, 512, 256, 256, 256]  # the authors' SSDHead; only the first level is fed
SCORE_THRESH = 0.001  # keep low-confidence boxes: COCO mAP integrates over the whole PR curve
DETECTIONS_PER_IMAGE = 100

TORCHVISION_URL = "https://download.pytorch.org/models/"  # where torchvision serves its files, by the same names
RESNET50 = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")  # torchvision's ImageNet ResNet-50, V1 and V2
RESIZE_MODES = ("short_side", "stretch")


@dataclass(frozen=True)
class DetectorFacts:
    """What the benchmark knows of a detector builder before building it."""

    label: str  # in messages
    files: tuple[str, ...]  # local files (torchvision's names) `model.weights: auto` looks for, best first
    resize: tuple[str, ...] = RESIZE_MODES  # the resize modes it takes, its default first
    min_size: int = 0  # the smallest input side its layers take: a smoke run's size cap stops there


def detector(label: str, files: Sequence[str], resize: Sequence[str] = RESIZE_MODES, min_size: int = 0) -> Callable:
    """Mark a builder with its DetectorFacts."""

    def mark(builder: Callable) -> Callable:
        builder.facts = DetectorFacts(label, tuple(files), tuple(resize), min_size)
        return builder

    return mark


def detector_facts(network: Callable) -> DetectorFacts:
    """The facts of a builder or of a functools.partial of one (a config's `_partial_` node)."""
    facts = getattr(getattr(network, "func", network), "facts", None)
    if not isinstance(facts, DetectorFacts):
        raise ConfigError(
            f"model.network={network!r}: not a detector builder (_target_: "
            "spinebench.detection.models.build_..., _partial_: true)"
        )
    return facts


def _resnet_body(pretrained: bool) -> nn.Module:
    return resnet50(weights=None, norm_layer=misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d)


class ResNetTrunk(nn.Module):
    """The authors' SSD backbone: ResNet-50 conv1..layer4, one 2048-channel feature map at stride 32."""

    def __init__(self):
        super().__init__()
        resnet = resnet50(weights=None)
        self.body = nn.Sequential(
            OrderedDict(
                conv1=resnet.conv1,
                bn1=resnet.bn1,
                relu=resnet.relu,
                maxpool=resnet.maxpool,
                layer1=resnet.layer1,
                layer2=resnet.layer2,
                layer3=resnet.layer3,
                layer4=resnet.layer4,
            )
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.body(x))])


class ResNetSSDBackbone(nn.Module):
    """ResNet-50 conv1..layer3 (layer3 at stride 1: 38 x 38 at 300) + extra blocks -> 6 feature maps."""

    def __init__(self, pretrained: bool = False):
        super().__init__()
        resnet = _resnet_body(pretrained)
        block = resnet.layer3[0]
        block.conv2.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
        self.body = nn.Sequential(
            OrderedDict(
                conv1=resnet.conv1,
                bn1=resnet.bn1,
                relu=resnet.relu,
                maxpool=resnet.maxpool,
                layer1=resnet.layer1,
                layer2=resnet.layer2,
                layer3=resnet.layer3,
            )
        )
        if pretrained:  # train layer2..3 like torchvision's trainable_layers=3 (layer4 is not used by SSD)
            for name, parameter in self.body.named_parameters():
                if not name.startswith(("layer2", "layer3")):
                    parameter.requires_grad_(False)
        channels, mids = [1024, 512, 512, 256, 256, 256], [256, 256, 128, 128, 128]
        extras = []
        for i, (cin, cout, mid) in enumerate(zip(channels[:-1], channels[1:], mids)):
            stride, padding = (2, 1) if i < 3 else (1, 0)
            extras.append(
                nn.Sequential(
                    nn.Conv2d(cin, mid, 1, bias=False),
                    nn.BatchNorm2d(mid),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, cout, 3, stride=stride, padding=padding, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                )
            )
        self.extras = nn.ModuleList(extras)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.body(x)
        features = OrderedDict([("0", x)])
        for i, layer in enumerate(self.extras, start=1):
            x = layer(x)
            features[str(i)] = x
        return features


def _float32(output):
    """`output` (a tensor, or a tuple, list or dict of them) with its floating tensors in float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, dict):
        return {key: _float32(value) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_float32(value) for value in output)
    return output


def _float32_shapes(_module: nn.Module, args: tuple) -> tuple:
    """An anchor generator's (images, feature maps) with each map replaced by a float32 stand-in of its shape that
    holds no memory (a zero-stride view of one uninitialised element: the generators read nothing of a map but its
    shape, dtype and device, so no kernel need fill it on every forward)."""
    images, features = args
    element = torch.empty((), dtype=torch.float32, device=features[0].device)
    return images, [element.expand(f.shape) for f in features]


def boxes_in_float32(model: nn.Module, anchor_generator: str, box_heads: Sequence[str]) -> nn.Module:
    """Keep a detector's box geometry in float32 under bf16 autocast (training and validation on a GPU); the
    backbone and heads keep bf16's speed. torchvision builds the anchors in the feature maps' dtype and decodes the
    heads' deltas in theirs (AnchorGenerator, BoxCoder.decode_single), so under bf16 both land on bf16's grid, with
    a step of 2 px from 256 and 4 px from 512. On a 256 x 642 input that puts RetinaNet's anchors up to 4 px off
    (37% of them by 1 px or more) and the decoded boxes 0.7 px off on average, up to 7.6 px. The anchor generators
    get float32 stand-ins for the feature maps, and the box heads' outputs leave in float32. `anchor_generator`
    and `box_heads` name the submodules where torchvision computes box geometry: the anchor generator, and the
    heads whose outputs it decodes into boxes (box deltas, with the scores beside them)."""
    model.get_submodule(anchor_generator).register_forward_pre_hook(_float32_shapes)
    for name in box_heads:
        model.get_submodule(name).register_forward_hook(lambda _module, _inputs, output: _float32(output))
    return model


def resolve_resize(facts: DetectorFacts, resize: str | None) -> str:
    """`resize`, or the detector's own when None: SSD always stretches, the others scale the short side."""
    resize = resize or facts.resize[0]
    if resize not in RESIZE_MODES:
        raise ConfigError(f"model.resize must be short_side or stretch, got {resize!r}")
    if resize not in facts.resize:
        raise ConfigError(
            f"{facts.label} resizes every image to model.input_size: model.resize must be {' or '.join(facts.resize)}"
        )
    return resize


def _sizes(facts: DetectorFacts, input_size: Sequence[int], resize: str | None) -> tuple[int, int, dict]:
    """(height, width, torchvision's size arguments) of `input_size` under `resize`."""
    height, width = int(input_size[0]), int(input_size[1])
    sizes = {"min_size": height, "max_size": max(height, width)}
    if resolve_resize(facts, resize) == "stretch":  # torchvision's fixed_size is (width, height)
        sizes["fixed_size"] = (width, height)
    return height, width, sizes


# Every builder: `num_classes` including background (2 = background + hematoma), its anchors and boxes in float32
# under autocast too (boxes_in_float32; `float32_boxes=False`: torchvision as it is).
@detector("Faster R-CNN", files=["fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", *RESNET50])
def build_faster_rcnn(
    num_classes: int = 2,
    input_size: Sequence[int] = (256, 642),
    pretrained: bool = False,
    resize: str | None = None,
    float32_boxes: bool = True,
) -> nn.Module:
    _, _, sizes = _sizes(build_faster_rcnn.facts, input_size, resize)
    backbone = _resnet_fpn_extractor(_resnet_body(pretrained), 3 if pretrained else 5)
    model = FasterRCNN(
        backbone,
        num_classes=num_classes,
        box_score_thresh=SCORE_THRESH,
        box_detections_per_img=DETECTIONS_PER_IMAGE,
        **sizes,
    )
    if float32_boxes:
        boxes_in_float32(model, "rpn.anchor_generator", ("rpn.head", "roi_heads.box_predictor"))
    return model


@detector("RetinaNet", files=["retinanet_resnet50_fpn_v2_coco-5905b1c5.pth", *reversed(RESNET50)])
def build_retinanet(
    num_classes: int = 2,
    input_size: Sequence[int] = (256, 642),
    pretrained: bool = False,
    resize: str | None = None,
    float32_boxes: bool = True,
) -> nn.Module:
    """torchvision's v2 layout (P6 from C5, GroupNorm head, GIoU): the paper's 36,352,630 parameters."""
    _, _, sizes = _sizes(build_retinanet.facts, input_size, resize)
    backbone = _resnet_fpn_extractor(
        _resnet_body(pretrained),
        3 if pretrained else 5,
        returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(2048, 256),
    )
    anchors = _default_anchorgen()
    head = RetinaNetHead(
        backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32)
    )
    head.regression_head._loss_type = "giou"
    model = RetinaNet(
        backbone,
        num_classes=num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=SCORE_THRESH,
        detections_per_img=DETECTIONS_PER_IMAGE,
        **sizes,
    )
    return boxes_in_float32(model, "anchor_generator", ("head",)) if float32_boxes else model


def _ssd(
    facts: DetectorFacts,
    backbone: nn.Module,
    channels: Sequence[int],
    num_classes: int,
    input_size: Sequence[int],
    resize: str | None,
    float32_boxes: bool,
) -> nn.Module:
    height, width, _ = _sizes(facts, input_size, resize)
    anchors = DefaultBoxGenerator(SSD_ASPECT_RATIOS, min_ratio=0.15, max_ratio=0.9)
    head = SSDHead(list(channels), anchors.num_anchors_per_location(), num_classes)
    model = SSD(
        backbone,
        anchors,
        (width, height),
        num_classes,
        head=head,  # SSD passes size on as fixed_size
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        score_thresh=SCORE_THRESH,
        detections_per_img=DETECTIONS_PER_IMAGE,
        topk_candidates=400,
    )
    return boxes_in_float32(model, "anchor_generator", ("head",)) if float32_boxes else model


@detector("SSD", files=RESNET50, resize=["stretch"])
def build_ssd(
    num_classes: int = 2,
    input_size: Sequence[int] = (300, 300),
    pretrained: bool = False,
    resize: str | None = None,
    float32_boxes: bool = True,
) -> nn.Module:
    """The authors' SSD (see the module docstring); every layer trains with ordinary BN, pretrained or not."""
    return _ssd(build_ssd.facts, ResNetTrunk(), PAPER_SSD_HEAD_CHANNELS, num_classes, input_size, resize, float32_boxes)


@detector("SSD", files=RESNET50, resize=["stretch"], min_size=300)  # its extra blocks need >= 300 px
def build_ssd_multiscale(
    num_classes: int = 2,
    input_size: Sequence[int] = (300, 300),
    pretrained: bool = False,
    resize: str | None = None,
    float32_boxes: bool = True,
) -> nn.Module:
    """The usual six-level SSD (NVIDIA's SSD300 v1.1 ResNet-50 layout)."""
    backbone = ResNetSSDBackbone(pretrained)
    return _ssd(
        build_ssd_multiscale.facts, backbone, backbone.out_channels, num_classes, input_size, resize, float32_boxes
    )


def _state_dict_of(obj) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    return None


def built_pretrained(state: dict[str, torch.Tensor]) -> bool:
    """Whether a detector's state dict comes from the pretrained build: its ResNet body has frozen batch norm, which
    keeps no `num_batches_tracked` (ordinary BN does). The build sets the parameter count (FrozenBN's affine
    tensors are buffers: Faster R-CNN 41,299,161 vs 41,352,281), so a checkpoint is rebuilt as it was trained."""
    body = [key for key in state if key.startswith("backbone.body.")]
    return bool(body) and not any(key.endswith(".num_batches_tracked") for key in body)


def load_pretrained(model: nn.Module, path: Path | str) -> dict[str, int]:
    """Load every tensor of matching name and shape; return counts. Fails if nothing matched, and names the file
    and model.weights when it cannot be read (torch's own errors name neither: a text file gives `invalid literal
    for int()`)."""
    try:  # tensors and plain values only: a pickled object in a file someone handed over runs no code
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a checkpoint, empty, cut short, or a pickled object weights_only refuses
        text = " ".join(str(error).split())
        # torch's messages run on for lines: weights_only's refusal says what it met after "error:", others in
        # their first sentence; an empty file says nothing at all
        refused = re.search(r"(?:GLOBAL [\w.]+|WeightsUnpickler error: (.*?)(?: Check the documentation|$))", text)
        if refused:
            what = refused.group(0) if refused.group(0).startswith("GLOBAL") else (refused.group(1) or "").strip()
        else:
            what = text.split(". ")[0] or ("empty or cut short" if isinstance(error, EOFError) else "")
        raise WeightsError(
            f"model.weights={path}: cannot read it as a PyTorch checkpoint ({type(error).__name__}"
            f"{': ' + what if what else ''})"
        ) from error
    state = _state_dict_of(loaded)
    if state is None:
        raise WeightsError(f"model.weights={path}: holds a {type(loaded).__name__}, not a state dict")
    own = model.state_dict()
    if not any(k.startswith("backbone.") for k in state):  # an ImageNet classifier: goes into the ResNet body
        state = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k in state if k in own and own[k].shape != state[k].shape]
    if not matched:
        raise WeightsError(
            f"model.weights={path}: no tensor matches this model (is it a checkpoint of another architecture?)"
        )
    model.load_state_dict(matched, strict=False)
    log.info(
        "loaded %d/%d tensors from %s (%d re-initialised for %s classes: %s)",
        len(matched),
        len(own),
        path,
        len(skipped),
        "new",
        ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else ""),
    )
    return {"loaded": len(matched), "total": len(own), "shape_mismatch": len(skipped)}
