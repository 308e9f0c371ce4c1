"""YOLOv7 through the spinebench engine: the `_target_` of configs/model/yolov7.yaml.

The network (`cfg/training/yolov7.yaml`, nc=1: 37,196,556 parameters, the paper's count), its OTA loss and
assigner come from the PyPI package `sas-yolov7` (GPL-3.0), an optional extra (`pip install -e '.[yolov7]'`) that
spinebench imports and never copies. Without it the model stops in one line naming that command. Neither the
package's dataset module nor its checkpoint loader is used: the images come from spinebench.detection.data, and
weights files are read with torch's weights_only.

YOLOv7's own recipe where it is cheap on the device: letterbox to a square `imgsz` (grey 114 padding), its
hyp.scratch.p5 loss gains scaled as its train.py scales them (box x 3/nl, obj x (imgsz/640)^2 x 3/nl, cls x nc/80
x 3/nl), an exponential moving average of the weights (decay 0.9999 ramped over 2000 updates; validation, best.pt
and the test score the average), parameter groups without weight decay on norms, biases and the implicit layers,
flips and brightness/contrast (spinebench.detection.data). Not done: mosaic, mixup, HSV and affine augmentation,
gradient accumulation to a nominal batch of 64. Inference: objectness x class score, NMS at IoU 0.65 from a score
of 0.001, at most 100 boxes an image (COCO's maxDets).

Pretrained (`model.weights`: auto | PATH | null): `yolov7_training.pt` as a state dict (the official file pickles
a Model object, which weights_only refuses: the error says how to convert it); tensors of matching name and shape
load, so a COCO head (nc=80) starts again at random for one class, as YOLOv7's own transfer does.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.ops import batched_nms

from spinebench.contract import RunContext
from spinebench.detection.data import LABEL_OFFSET
from spinebench.detection.engine_detector import DetectorTrainModule, EngineDetector
from spinebench.engine import distributed
from spinebench.errors import ConfigError, WeightsError
from spinebench.weights import resolve_weights

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[yolov7]'"
PACKAGE = "sas_yolov7"
MODEL_YAML = "cfg/training/yolov7.yaml"
# the package's hyperparameters for each network file it ships (YOLOv7's train.py pairs them the same way)
HYP_YAML = {
    "cfg/training/yolov7.yaml": "data/hyp.scratch.p5.yaml",
    "cfg/training/yolov7-tiny.yaml": "data/hyp.scratch.tiny.yaml",
}
FILES = ("yolov7_training.pt",)
STRIDE = 32  # the largest of its three detection levels (8, 16, 32)
PAD = 114 / 255  # YOLOv7's letterbox grey
EMA_DECAY, EMA_TAU = 0.9999, 2000.0
SCORE_THRESH, NMS_IOU = 0.001, 0.65


def require_package() -> None:
    """ConfigError (one line) when the optional extra is not installed."""
    try:
        importlib.import_module(PACKAGE)
    except ImportError as error:
        raise ConfigError(
            f"model yolov7 needs the optional package sas-yolov7 (GPL-3.0), which is not installed: {INSTALL}"
        ) from error


def build_yolov7(nc: int = 1, cfg: str = MODEL_YAML) -> nn.Module:
    """The package's Model from one of its network files (the paper's cfg/training/yolov7.yaml by default), with
    `nc` classes, random weights."""
    require_package()
    if cfg not in HYP_YAML:
        raise ConfigError(f"model.cfg={cfg!r}: one of {', '.join(HYP_YAML)} (the sas-yolov7 network files)")
    from sas_yolov7.models.yolo import Model

    logging.getLogger("sas_yolov7").setLevel(logging.WARNING)  # its per-layer table
    model = Model(str(importlib.resources.files(PACKAGE) / cfg), ch=3, nc=nc)
    model.cfg_file = cfg
    return model


def head_classes(state: dict[str, Any]) -> int | None:
    """The nc a YOLOv7 state dict's detection head was built for (3 anchors x (nc + 5) outputs a level)."""
    heads = [k for k in state if k.endswith(".m.0.weight") and k.startswith("model.") and k.count(".") == 4]
    if not heads:
        return None
    return state[max(heads, key=lambda k: int(k.split(".")[1]))].shape[0] // 3 - 5


def _ema_average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    decay = EMA_DECAY * (1 - math.exp(-float(updates) / EMA_TAU))
    return averaged * decay + current * (1 - decay)


class YoloV7Module(DetectorTrainModule):
    """Its loss (OTA, in float32), and the weights' moving average, updated once after each optimizer step: the
    engine steps the optimizer after training_step returns, so the update waits for the next read of the weights
    (the next step, a validation, a checkpoint)."""

    def __init__(self, benchmark: YoloV7, model: nn.Module, val_ground_truth: dict, augment: bool = True):
        super().__init__(benchmark, model, val_ground_truth, augment)
        from sas_yolov7.utils.loss import ComputeLossOTA

        self.loss_fn = _SafeOTA(ComputeLossOTA, model)
        self.ema: AveragedModel | None = None
        self.pending = False

    def _average(self) -> AveragedModel:
        if self.ema is None:
            self.ema = AveragedModel(distributed.unwrap(self.model), avg_fn=_ema_average, use_buffers=True)
        if self.pending:
            self.ema.update_parameters(distributed.unwrap(self.model))
            self.pending = False
        return self.ema

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        self._average()
        x, rows = self.benchmark.letterbox(images, targets)
        predictions = self.model(x)
        with torch.autocast(x.device.type, enabled=False):
            loss, items = self.loss_fn([p.float() for p in predictions], rows, x)
        self.pending = True
        return {"loss": loss.sum(), "box": items[0], "obj": items[1]}

    def scoring_model(self) -> nn.Module:
        return self._average().module

    def parameter_groups(self) -> list[dict]:
        """YOLOv7's: weight decay on convolution weights only (not on norms, biases, implicit layers)."""
        decay, no_decay = [], []
        for module in distributed.unwrap(self.model).modules():
            for name, parameter in module.named_parameters(recurse=False):
                is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
                (decay if is_weight else no_decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def checkpoint_state(self) -> dict:
        return {"net": self.model.state_dict(), "ema": self._average().state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.model.load_state_dict(state["net"])
        self.pending = False
        self._average().load_state_dict(state["ema"])


class _SafeOTA:
    """The package's ComputeLossOTA, with its gains from the network's hyp file (hyp.scratch.p5 for YOLOv7) scaled as YOLOv7's train.py does. A batch
    in which no box has a candidate cell (only negative images) is given empty assignments on its own device: the
    package builds them on 'cuda:0'."""

    def __init__(self, loss_class, model: nn.Module):
        detect = model.model[-1]
        hyp = yaml.safe_load((importlib.resources.files(PACKAGE) / HYP_YAML[model.cfg_file]).read_text())
        size = float(model.imgsz)
        hyp["box"] *= 3 / detect.nl
        hyp["cls"] *= detect.nc / 80 * 3 / detect.nl
        hyp["obj"] *= (size / 640) ** 2 * 3 / detect.nl
        hyp["label_smoothing"] = 0.0
        model.hyp, model.gr, model.nc = hyp, 1.0, detect.nc
        self.loss = loss_class(model)
        self.loss.build_targets = self._build_targets
        self._package_build_targets = loss_class.build_targets.__get__(self.loss)

    def _build_targets(self, p, targets, imgs):
        indices, _ = self.loss.find_3_positive(p, targets)
        if all(len(found[0]) == 0 for found in indices):
            empty = torch.zeros(0, dtype=torch.long, device=targets.device)
            n = len(p)
            return [empty] * n, [empty] * n, [empty] * n, [empty] * n, [targets[:0]] * n, [empty] * n
        return self._package_build_targets(p, targets, imgs)

    def __call__(self, predictions, rows, images):
        return self.loss(predictions, rows, images)


class YoloV7(EngineDetector):
    def __init__(
        self,
        name: str = "yolov7",
        row: str | None = "yolov7",
        imgsz: int = 320,
        num_classes: int = 1,
        weights: str | None = "auto",
        cfg: str = MODEL_YAML,
    ):
        require_package()
        if cfg not in HYP_YAML:
            raise ConfigError(f"model.cfg={cfg!r}: one of {', '.join(HYP_YAML)} (the sas-yolov7 network files)")
        if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0 or imgsz % STRIDE:
            raise ConfigError(f"model.imgsz={imgsz!r}: YOLOv7 needs a multiple of its stride {STRIDE} (e.g. 320)")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"model.num_classes={num_classes!r}: must be a positive integer")
        super().__init__(name, row, [imgsz, imgsz], weights)
        self.num_classes, self.cfg = num_classes, cfg

    def size_multiple(self) -> int:
        return STRIDE

    def build(self, ctx: RunContext | None, load_weights: bool) -> tuple[nn.Module, dict[str, Any]]:
        model = build_yolov7(self.num_classes, self.cfg)
        model.imgsz = self.size[0]
        choice = (
            resolve_weights(self.weights, FILES, ctx.cache_dir if ctx else None, self.name) if load_weights else None
        )
        if choice is not None and choice.path is not None:
            self.load_pretrained(model, choice.path)
        pretrained = bool(choice and choice.path is not None)
        return model, {"pretrained": pretrained, "pretrained_source": choice.source if pretrained else None}

    def train_module(self, model: nn.Module, val_ground_truth: dict, ctx: RunContext) -> YoloV7Module:
        return YoloV7Module(self, model, val_ground_truth, augment=ctx.trainer.augment)

    @staticmethod
    def read_state(path: Path) -> dict[str, torch.Tensor]:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            text = " ".join(str(error).split())
            if "GLOBAL" in text or "weights_only" in text.lower():
                raise WeightsError(
                    f"model.weights={path}: holds a pickled model (the official YOLOv7 release format), which is not "
                    "read here; save its state dict first: torch.save(torch.load(f, weights_only=False)['model']"
                    ".float().state_dict(), 'yolov7_training.pt') inside the YOLOv7 repository"
                ) from None
            raise WeightsError(f"model.weights={path}: cannot read it ({type(error).__name__})") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
            loaded = loaded["model"]
        if not isinstance(loaded, dict):
            raise WeightsError(f"model.weights={path}: holds a {type(loaded).__name__}, not a state dict")
        return loaded

    def load_pretrained(self, model: nn.Module, path: Path) -> None:
        state = self.read_state(path)
        own = model.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(matched) < len(own) // 2:
            raise WeightsError(
                f"model.weights={path}: {len(matched)} of {len(own)} tensors fit {self.cfg} "
                "(a state dict of another architecture?)"
            )
        model.load_state_dict(matched, strict=False)
        nc = head_classes(state)
        log.info("yolov7: loaded %d/%d tensors from %s (head for nc=%s; this model nc=%d)", len(matched), len(own),
                 path, nc, self.num_classes)  # fmt: skip

    def load_trained(self, model: nn.Module, state: dict, checkpoint: Path) -> None:
        weights = state.get("ema", state) if isinstance(state, dict) else state
        if "n_averaged" in weights:  # an AveragedModel's: module.<key>
            weights = {k.removeprefix("module."): v for k, v in weights.items() if k != "n_averaged"}
        nc = head_classes(weights)
        if nc != self.num_classes:
            raise WeightsError(
                f"{checkpoint}: YOLOv7 weights for nc={nc}, but this model has model.num_classes={self.num_classes}"
            )
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            raise WeightsError(f"{checkpoint}: does not fit {self.cfg}") from error

    # -- images and boxes -------------------------------------------------------------------------------------
    def _geometry(self, height: int, width: int) -> tuple[float, int, int, int, int]:
        """(scale, new height, new width, top, left) of letterboxing height x width into the square input."""
        side, height, width = self.size[0], int(height), int(width)  # ints under ONNX tracing too (spinebench export)
        scale = side / max(height, width)
        new_h, new_w = round(height * scale), round(width * scale)
        return scale, new_h, new_w, (side - new_h) // 2, (side - new_w) // 2

    def letterbox(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """B x 3 x S x S, and YOLO's target rows [image, class, cx, cy, w, h] (relative to S) when targets given."""
        side, batch, rows = self.size[0], [], []
        for i, image in enumerate(images):
            height, width = image.shape[-2:]
            scale, new_h, new_w, top, left = self._geometry(height, width)
            resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)
            padding = (left, side - new_w - left, top, side - new_h - top)
            batch.append(F.pad(resized, padding, value=PAD))
            if targets is not None:
                boxes = targets[i]["boxes"].float() * scale + resized.new_tensor([left, top, left, top])
                x0, y0, x1, y1 = boxes.unbind(-1)
                centre = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1) / side
                labels = (targets[i]["labels"] - LABEL_OFFSET).float()[:, None]
                rows.append(torch.cat([torch.full_like(labels, i), labels, centre], 1))
        x = torch.cat(batch)
        return (x, torch.cat(rows)) if targets is not None else x

    def detect(self, model: nn.Module, images: list[torch.Tensor]) -> list:
        prediction = model(self.letterbox(images))[0].float()  # B x N x (xywh, objectness, classes)
        found = []
        for image, rows in zip(images, prediction):
            height, width = image.shape[-2:]
            scale, _, _, top, left = self._geometry(height, width)
            scores, labels = (rows[:, 5:] * rows[:, 4:5]).max(-1)
            keep = scores > SCORE_THRESH
            rows, scores, labels = rows[keep], scores[keep], labels[keep]
            cx, cy, w, h = rows[:, :4].unbind(-1)
            boxes = torch.stack([cx - w / 2 - left, cy - h / 2 - top, cx + w / 2 - left, cy + h / 2 - top], -1) / scale
            limit = boxes.new_tensor([width, height, width, height])
            boxes = torch.minimum(boxes.clamp(min=0), limit)
            kept = batched_nms(boxes, scores, labels, NMS_IOU)[: self.max_detections]
            found.append((boxes[kept], scores[kept], labels[kept]))
        return found
