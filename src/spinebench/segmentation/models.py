"""Segmentation networks behind one interface: `Segmenter(gray) -> logits at the input size`.

Which library builds what, and why (parameter counts are for 10 classes, 3 input channels):
- DeepLabv3 ResNet-50: torchvision's `deeplabv3_resnet50(aux_loss=True)`: 41,998,420 parameters, exactly the
  manuscript's count (smp's DeepLabV3 R50 has 39,636,042: no auxiliary FCN head), so torchvision is the paper's
  model. Output stride 8: native inputs are padded to a multiple of 8.
- U-Net: the paper's "plain, 31M" U-Net is Ronneberger's (double 3x3 conv + BN + ReLU, widths 64..1024,
  transposed-conv upsampling, biased convs): 31,044,106 parameters, exactly the manuscript's count. smp's Unet
  always puts a classification backbone (ResNet, VGG, ...) in the encoder, so it cannot express that model:
  `PlainUNet` below is our own (~30 lines). smp's Unet (e.g. ResNet-18/34 encoder) stays available through
  `build_smp` as a lighter option.
- SegFormer MiT-B5: smp's `Segformer("mit_b5", decoder_segmentation_channels=768)`: 84,601,034 parameters,
  exactly the manuscript's count (HuggingFace's B5 decoder width; smp's default 256 gives 81.97M).
- SAMed: `spinebench.segmentation.samed`.

A model config names its builder as a nested node, `network: {_target_: <builder>, _partial_: true, <its
settings>}`; the benchmark calls it with the run's `num_classes` (hence the messages' `model.network.<key>`). A
builder whose argument names a pretrained file says so with `@takes_pretrained`: the benchmark resolves that
argument's `auto` (the files to look for are the builder's to know, not a list kept elsewhere).

Inputs are grey B-mode images; the wrapper scales them with ImageNet's mean/std and repeats them to 3 channels
(what ImageNet- or SAM-pretrained weights expect; SAM's pixel mean/std are ImageNet's x 255). SAMed's own
training feeds raw [0, 1] images (pixel mean 0, std 1): here its frozen SAM encoder sees what SAM was trained on.
No weights are ever downloaded: `weights=PATH` loads a local state dict (the whole net or its backbone; a .pth or
a .safetensors file); one that is missing, unreadable or fits nothing of the network is a WeightsError naming it.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.engine.config import positive_int, positive_ints
from spinebench.errors import ConfigError, WeightsError

log = logging.getLogger(__name__)
NETWORK = "model.network"  # where a model config holds its builder's settings (the override path)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedArgument:
    """The argument of a network builder that names a local pretrained file, and what its `auto` looks for:
    `files` (the paper's, in the weights folders) or, with `smp_encoder`, smp's ImageNet file of the builder's
    `encoder_name` (also in the Hugging Face cache). Neither: the network has no file of the paper to look for."""

    key: str
    files: tuple[str, ...] = ()
    smp_encoder: bool = False


def takes_pretrained(key: str, files: Sequence[str] = (), smp_encoder: bool = False) -> Callable:
    """Mark a builder's pretrained-file argument (see PretrainedArgument)."""

    def mark(builder: Callable) -> Callable:
        builder.pretrained_argument = PretrainedArgument(key, tuple(files), smp_encoder)
        return builder

    return mark


def pretrained_argument(network: Callable) -> PretrainedArgument | None:
    """The pretrained-file argument of a builder or of a functools.partial of one (a config's `_partial_` node)."""
    return getattr(getattr(network, "func", network), "pretrained_argument", None)


def network_settings(network: Callable) -> dict[str, Any]:
    """The arguments a builder will be called with as configured: its defaults, then the config's values."""
    builder = getattr(network, "func", network)
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(builder).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **dict(getattr(network, "keywords", None) or {})}


class Segmenter(nn.Module):
    """Grey images (B x 1 x H x W, float 0-1) -> class logits (B x C x H x W, same H x W).

    Pads to `pad_multiple` (replicate padding at the bottom/right) and crops back, so any input size works.
    In training mode a net with an auxiliary head returns `(logits, aux_logits)`; in eval mode the aux head is
    not run.
    """

    def __init__(self, net: nn.Module, num_classes: int, pad_multiple: int = 1, has_aux: bool = False):
        super().__init__()
        self.net, self.num_classes, self.pad_multiple, self.has_aux = net, num_classes, pad_multiple, has_aux
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grey images B x 1 x H x W, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        m = self.pad_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.has_aux and not self.training:
            out = self._main_head(x)
        else:
            out = self.net(x)
        aux = None
        if isinstance(out, dict):
            out, aux = out["out"], out.get("aux")
        out = out[..., :height, :width]
        if self.training and self.has_aux and aux is not None:
            return out, aux[..., :height, :width]
        return out

    def _main_head(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's segmentation forward without its auxiliary head, which it runs in eval mode too: the aux
        logits are a training signal only, and computing them would slow every test image and the FPS timing."""
        out = self.net.classifier(self.net.backbone(x)["out"])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    """Ronneberger's U-Net with BatchNorm; widths (64, 128, 256, 512, 1024) = 31,044,106 params at 3 -> 10."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    ):
        super().__init__()
        self.down = nn.ModuleList(
            [_double_conv(in_channels, widths[0])] + [_double_conv(a, b) for a, b in zip(widths[:-1], widths[1:])]
        )
        rev = widths[::-1]
        self.up = nn.ModuleList([nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in zip(rev[:-1], rev[1:])])
        self.fuse = nn.ModuleList([_double_conv(a, b) for a, b in zip(rev[:-1], rev[1:])])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def _load_weights(module: nn.Module, path: str | Path | None, what: str) -> str | None:
    """Load a local state dict (non-strict; reports what did not match). Returns the source path or None."""
    if not path:
        return None
    path, state = read_weights(path, what)
    load_matching(module, state, path, what)
    return str(path)


def read_weights(path: str | Path, what: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A local .pth / .safetensors file's tensors (under its `state_dict` or `model` key if it has one), or a
    WeightsError naming the file."""
    path = Path(str(path)).expanduser()  # a name of digits on the command line arrives as an int
    if not path.is_file():
        raise WeightsError(f"{what} weights {path} do not exist (give a local file; nothing is downloaded)")
    try:
        if path.suffix == ".safetensors":  # smp's own pretrained encoders come as safetensors
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    except Exception as error:  # the readers' own errors do not name the file (a truncated download, say)
        raise WeightsError(f"{path}: cannot read {what} weights from it ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of {what}")
    return path, {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load the tensors of `state` whose names are the module's (non-strict): a WeightsError when none is, or
    when one of them has another shape."""
    # counted by hand: BatchNorm's loader fills in a missing `num_batches_tracked`, so load_state_dict never reports
    # it missing and an unrelated file (another net's state dict, {'foo': tensor}) would pass as a partial match
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    matched = [k for k in own if k in state]
    wrong_shape = [k for k in matched if state[k].shape != own[k].shape]
    if not matched:
        raise WeightsError(
            f"{path}: no tensor matches {what} (none of its {len(own)} tensors is in the file, whose "
            f"{len(state)} have other names): is this the right file?"
        )
    if wrong_shape:  # load_state_dict's own error runs on for a line per tensor
        key = wrong_shape[0]
        raise WeightsError(
            f"{path}: {len(wrong_shape)} of its tensors do not fit {what} (e.g. {key}: "
            f"{tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the model): is this the "
            "right file, for this model's settings?"
        )
    # nn.Module's own, non-strict: smp's MiT encoder overrides load_state_dict without `strict` (a TypeError)
    nn.Module.load_state_dict(module, state, strict=False)
    log.info(
        "%s: loaded %s (%d of %d tensors; %d in the file unused)",
        what,
        path,
        len(matched),
        len(own),
        len(set(state) - set(own)),
    )


@takes_pretrained("backbone_weights", files=["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"])  # torchvision's
def build_deeplabv3(
    num_classes: int = 10, pad_multiple: int = 8, backbone_weights: str | None = None, aux: bool = True
) -> Segmenter:
    """torchvision DeepLabv3-ResNet50 (+ FCN aux head: the paper's 41,998,420 params); `backbone_weights`: an
    ImageNet ResNet-50 (torchvision's V1 or V2 file)."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    pad_multiple = positive_int(pad_multiple, f"{NETWORK}.pad_multiple")
    if not isinstance(aux, bool):
        raise ConfigError(f"{NETWORK}.aux={aux}: must be true or false")
    net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    model = Segmenter(net, num_classes, pad_multiple, has_aux=aux)
    model.pretrained_source = _load_weights(net.backbone, backbone_weights, "DeepLabv3 backbone (ResNet-50)")
    return model


@takes_pretrained("weights")  # a state dict of the whole net; the paper's trains from scratch
def build_plain_unet(
    num_classes: int = 10,
    pad_multiple: int = 16,
    weights: str | None = None,
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
) -> Segmenter:
    """The paper's plain U-Net; smaller `widths` (e.g. [16, 32, 64, 128, 256]) give the same design, lighter."""
    net = PlainUNet(3, num_classes, tuple(positive_ints(widths, f"{NETWORK}.widths")))
    model = Segmenter(net, num_classes, max(positive_int(pad_multiple, f"{NETWORK}.pad_multiple"), net.multiple))
    model.pretrained_source = _load_weights(net, weights, "plain U-Net")
    return model


@takes_pretrained("encoder_weights")
def build_smp(
    smp_arch: str = "Unet",
    encoder_name: str = "resnet34",
    num_classes: int = 10,
    pad_multiple: int = 32,
    encoder_weights: str | None = None,
    **kwargs,
) -> Segmenter:
    """Any segmentation-models-pytorch architecture; `encoder_weights` is a local file (never 'imagenet').
    `kwargs` are the architecture's own settings (decoder_channels, encoder_output_stride, ...): checked here
    against its constructor, since smp drops a key it does not know."""
    import segmentation_models_pytorch as smp

    architectures = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}  # smp's own list
    if smp_arch not in architectures:
        raise ConfigError(
            f"{NETWORK}.smp_arch={smp_arch} is not an smp architecture (one of {', '.join(architectures)})"
        )
    check_smp_encoder(encoder_name)
    pad_multiple = positive_int(pad_multiple, f"{NETWORK}.pad_multiple")

    init = architectures[smp_arch].__init__
    # its named parameters, and the deprecated ones it still reads out of **kwargs (decoder_use_batchnorm, ...)
    takes = (set(inspect.signature(init).parameters) - {"self", "kwargs"}) | set(
        re.findall(r"kwargs\.(?:pop|get)\(\s*[\"'](\w+)[\"']", inspect.getsource(init))
    )
    unknown = sorted(set(kwargs) - takes)
    if unknown and not str(encoder_name).startswith("tu-"):  # smp passes **kwargs to timm encoders only: the
        # others drop them silently
        raise ConfigError(
            f"unknown key {NETWORK}.{unknown[0]}: smp's {smp_arch} does not take it (it takes "
            f"{', '.join(sorted(takes - {'encoder_name', 'encoder_weights', 'in_channels', 'classes'}))})"
        )
    net = architectures[smp_arch](
        encoder_name=encoder_name, encoder_weights=None, in_channels=3, classes=num_classes, **kwargs
    )
    model = Segmenter(net, num_classes, pad_multiple)
    model.pretrained_source = _load_weights(net.encoder, encoder_weights, f"smp {smp_arch} encoder {encoder_name}")
    return model


def check_smp_encoder(name: object) -> None:
    """Refuse, in one line, an encoder smp does not have (smp's own KeyError lists all 76 names in 1,400 chars)."""
    from segmentation_models_pytorch.encoders import encoders

    if isinstance(name, str) and name in encoders:
        return
    if isinstance(name, str) and name.startswith("tu-"):  # any timm model, through smp's timm-universal encoder
        import timm

        if timm.is_model(name[3:]):
            return
        raise ConfigError(f"{NETWORK}.encoder_name={name}: timm has no model {name[3:]!r} (see timm.list_models())")
    raise ConfigError(
        f"{NETWORK}.encoder_name={name}: not an smp encoder (e.g. resnet18, resnet34, resnet50, mit_b0 to "
        "mit_b5, efficientnet-b0; tu-<name> for a timm model; all of smp's in "
        "segmentation_models_pytorch.encoders.encoders)"
    )


def smp_imagenet_weights(encoder_name: str) -> tuple[str | None, list[str]]:
    """smp's own ImageNet weights of an encoder, without the network: the file in the Hugging Face cache, where
    smp's `encoder_weights="imagenet"` downloads it (None when not there), and its name in a weights folder,
    `<repo id>/model.safetensors` (none when smp has no ImageNet weights for it)."""
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    check_smp_encoder(encoder_name)
    settings = encoders.get(encoder_name, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings:
        return None, []
    cached = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings.get("revision"))
    return (cached if isinstance(cached, str) else None), [f"{settings['repo_id']}/model.safetensors"]


@takes_pretrained("encoder_weights", smp_encoder=True)
def build_segformer(
    num_classes: int = 10,
    encoder_name: str = "mit_b5",
    decoder_channels: int = 768,
    pad_multiple: int = 32,
    encoder_weights: str | None = None,
) -> Segmenter:
    return build_smp(
        "Segformer",
        encoder_name,
        num_classes,
        pad_multiple,
        encoder_weights,
        decoder_segmentation_channels=positive_int(decoder_channels, f"{NETWORK}.decoder_channels"),
    )
