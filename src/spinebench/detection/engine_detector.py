"""What DETR and YOLOv7 share: a detector outside torchvision's API, trained by spinebench.engine.fit and scored by
the one COCO evaluator, with the run folder of every other detector (ground_truth.json, predictions.json,
pr_curve.png; the record's speed and size facts).

A subclass says how to build its network (`build`, with its pretrained file), how to compute its training loss
(`TrainModule.losses`), how to turn a batch of images into boxes in the original image's pixels (`detect`), and how
to load a trained checkpoint (`load_trained`, a WeightsError in one line when the file does not fit). The batches
are spinebench.detection.data's (decoded once, augmented on the device); each network resizes them on the device
to its own input (`resize_images`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.contract import Benchmark, RunContext
from spinebench.data.detection import read_detection_split
from spinebench.detection.coco import COCO_METRICS, coco_ground_truth, detections_to_coco, score_coco
from spinebench.detection.data import build_dataset, detection_loader, to_device
from spinebench.detection.outputs import score_and_write
from spinebench.detection.torchvision_benchmark import MONITOR, _Limited, collector_paused
from spinebench.engine import TEST_SPLIT_AMP, autocast_for, load_checkpoint, precision_label
from spinebench.runinfo import count_parameters
from spinebench.speed import batch1_speed

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

log = logging.getLogger(__name__)

# (boxes N x 4 xyxy in the original image's pixels, scores N, labels N 0-based) of one image
Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def resize_images(images: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """B x 3 x H x W: each 3 x h x w image stretched to `size` (bilinear), on its device."""
    return torch.cat([F.interpolate(im[None], size=tuple(size), mode="bilinear", align_corners=False) for im in images])


class EngineDetector(Benchmark):
    task = "detection"
    max_detections = 100  # COCO's maxDets

    def __init__(self, name: str, row: str | None, input_size: Sequence[int], weights: str | None):
        self.name, self.row, self.input_size, self.weights = name, row, list(input_size), weights
        self.size = list(input_size)  # what the network sees in this run (fit() and test() set it)

    # -- what a subclass gives --------------------------------------------------------------------------------
    def build(self, ctx: RunContext | None, load_weights: bool) -> tuple[nn.Module, dict[str, Any]]:
        """The network and {"pretrained", "pretrained_source"}; `load_weights=False`: no file read (test())."""
        raise NotImplementedError

    def train_module(self, model: nn.Module, val_ground_truth: dict, ctx: RunContext) -> DetectorTrainModule:
        raise NotImplementedError

    def detect(self, model: nn.Module, images: list[torch.Tensor]) -> list[Detections]:
        """Boxes of a batch of 3 x H x W float images in [0, 1] (original size), in their pixels."""
        raise NotImplementedError

    def load_trained(self, model: nn.Module, state: dict, checkpoint: Path) -> None:
        """Load a checkpoint's `model` entry; a file that does not fit raises a WeightsError naming it."""
        raise NotImplementedError

    def size_multiple(self) -> int:
        """The input size a smoke cap rounds down to a multiple of."""
        return 1

    # -- shared -----------------------------------------------------------------------------------------------
    def effective_size(self, ctx: RunContext | None) -> list[int]:
        """model.input_size, shrunk (aspect kept) to trainer.max_input_size for smoke runs."""
        cap = getattr(ctx.trainer, "max_input_size", None) if ctx is not None else None
        size = list(self.input_size)
        if cap and max(size) > cap:
            multiple, scale = self.size_multiple(), cap / max(size)
            size = [max(multiple, int(round(s * scale)) // multiple * multiple) for s in size]
        return size

    def predict(self, model: nn.Module, loader, device: torch.device, limit: int | None = None, amp: bool = True):
        """COCO results of every image in the loader (image ids = sample index + 1), and the ids seen."""
        model.eval()
        detections, seen = [], []
        with torch.no_grad(), collector_paused():
            for step, batch in enumerate(loader):
                if limit is not None and step >= limit:
                    break
                images, _, indices = to_device(batch, device, augment=False)
                with autocast_for(device, amp):
                    found = self.detect(model, images)
                for index, (boxes, scores, labels) in zip(indices, found):
                    detections += detections_to_coco(
                        index + 1, boxes.float().cpu().numpy(), scores.float().cpu().tolist(), labels.cpu().tolist()
                    )
                seen += [index + 1 for index in indices]
        return detections, seen

    def _loader(self, samples, ctx: RunContext, train: bool, batch_size: int):
        trainer = ctx.trainer
        return detection_loader(
            build_dataset(samples, ctx.cache_dir),
            batch_size,
            train,
            trainer.num_workers,
            ctx.device,
            seed=ctx.seed,
            on_device=trainer.data_on_device,
        )

    def fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        trainer = ctx.trainer
        self.size = self.effective_size(ctx)
        model, info = self.build(ctx, load_weights=True)
        train_samples = read_detection_split(spec, "train")
        val_samples = read_detection_split(spec, "val")
        train_loader = self._loader(train_samples, ctx, True, trainer.batch_size)
        val_loader = _Limited(self._loader(val_samples, ctx, False, trainer.val_batch_size), trainer.limit_val_batches)
        module = self.train_module(model, coco_ground_truth(val_samples), ctx)
        result = ctx.fit(module, train_loader, val_loader, MONITOR)
        return {
            **info,
            **result.facts(),
            "input_size": self.effective_size(ctx),
        }

    def test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        self.size = self.effective_size(ctx)
        state = load_checkpoint(checkpoint)
        model, _ = self.build(ctx, load_weights=False)
        self.load_trained(model, state["model"], Path(checkpoint))
        model.to(device).eval()
        samples = read_detection_split(spec, "test")
        if trainer.limit_test_images:
            samples = samples[: trainer.limit_test_images]
        loader = self._loader(samples, ctx, False, trainer.val_batch_size)
        start = time.perf_counter()
        detections, _ = self.predict(model, loader, device, amp=TEST_SPLIT_AMP)
        log.info("test: %d images in %.1f s", len(samples), time.perf_counter() - start)
        metrics = score_and_write(ctx.run_dir, coco_ground_truth(samples), detections, f"{self.name} - {spec.name}")
        return {
            "metrics": metrics,
            "params": count_parameters(model),
            **self.inference_speed(model, loader, device, trainer),
            "input_size": self.effective_size(ctx),
            "test_precision": precision_label(device, TEST_SPLIT_AMP),
            "checkpoint_epoch": state.get("epoch"),
            "test_images": len(samples),
        }

    def inference_speed(self, model: nn.Module, loader, device: torch.device, trainer) -> dict:
        """Batch-1 FPS and load, fp32, the image already on the device (the paper's protocol), resize and
        post-processing included."""
        images = []
        for batch in loader:
            batch_images, _, _ = to_device(batch, device, augment=False)
            images += [im.unsqueeze(0).contiguous() for im in batch_images]
            if len(images) >= 8:
                break

        def predict_on(target: torch.device):
            model.to(target)
            return lambda x: self.detect(model, list(x))

        with torch.no_grad():
            return batch1_speed(predict_on, images, device, trainer)


class DetectorTrainModule:
    """The engine's TrainModule: a subclass gives `losses(images, targets)` (the batch as to_device hands it)."""

    validation_metrics = tuple(COCO_METRICS)

    def __init__(self, benchmark: EngineDetector, model: nn.Module, val_ground_truth: dict, augment: bool = True):
        self.benchmark, self.model, self.val_ground_truth, self.augment = benchmark, model, val_ground_truth, augment

    def training_step(self, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets, _ = to_device(batch, device, augment=self.augment)
        return self.losses(images, targets)

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def batch_size(self, batch) -> int:
        return len(batch[2])

    def scoring_model(self) -> nn.Module:
        """The weights validation scores (YOLOv7: their moving average)."""
        return self.model

    def validation(self, loader, device: torch.device) -> dict[str, float]:
        detections, seen = self.benchmark.predict(
            self.scoring_model(), loader, device, limit=getattr(loader, "limit_batches", None)
        )
        return score_coco(self.val_ground_truth, detections, image_ids=seen)
