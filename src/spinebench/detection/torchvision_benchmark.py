"""Faster R-CNN / RetinaNet / SSD through the spinebench engine: the `_target_` of their model configs.

A Benchmark (spinebench.contract): fit() trains with the engine (resume from checkpoints/last.pt), test() scores
a checkpoint on the test split with the one COCO evaluator. The model config gives the input geometry and the
pretrained file (`model.weights`); its nested `network` node names the detector's builder:

    _target_: spinebench.detection.torchvision_benchmark.TorchvisionDetector
    name: retinanet
    input_size: [256, 642]
    resize: short_side
    weights: auto
    network: {_target_: spinebench.detection.models.build_retinanet, _partial_: true}
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from spinebench.contract import Benchmark, RunContext
from spinebench.data.detection import read_detection_split
from spinebench.detection.coco import COCO_METRICS, coco_ground_truth, detections_to_coco, score_coco
from spinebench.detection.data import LABEL_OFFSET, build_dataset, detection_loader, to_device
from spinebench.detection.models import (
    TORCHVISION_URL,
    built_pretrained,
    detector_facts,
    load_pretrained,
    resolve_resize,
)
from spinebench.detection.outputs import score_and_write
from spinebench.engine import TEST_SPLIT_AMP, autocast_for, load_checkpoint, precision_label
from spinebench.engine.config import input_size as checked_input_size
from spinebench.runinfo import count_parameters
from spinebench.speed import batch1_speed
from spinebench.weights import resolve_weights

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

log = logging.getLogger(__name__)

MONITOR = "mAP50_95"


class DetectorModule:
    """The engine's TrainModule for a torchvision detector."""

    validation_metrics = tuple(COCO_METRICS)  # what validation() returns (score_coco), for trainer.monitor

    def __init__(self, model: nn.Module, val_ground_truth: dict | None = None, augment: bool = True):
        self.model, self.val_ground_truth, self.augment = model, val_ground_truth, augment

    def training_step(self, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets, _ = to_device(batch, device, augment=self.augment)
        return self.losses(images, targets)

    def losses(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """The summed loss the engine steps on, and each term (detached, for the logs)."""
        losses = self.model(images, targets)
        loss = sum(losses.values())
        return {"loss": loss, **{k: v.detach() for k, v in losses.items()}}

    def batch_size(self, batch) -> int:
        return len(batch[2])

    def validation(self, loader, device: torch.device) -> dict[str, float]:
        detections, seen = predict(self.model, loader, device, limit=getattr(loader, "limit_batches", None))
        return score_coco(self.val_ground_truth, detections, image_ids=seen)


@contextlib.contextmanager
def collector_paused():
    """Python's garbage collector off inside, as it was after. The COCO entries a scoring pass keeps (up to 100 an
    image) trigger the collector's full passes, and each walks every object of the process: about 170 ms at 350k
    objects on the 2-core CPU, 36 ms a 145-image pass on average, while the device waits for the next batch
    (benchmarks/bench_scoring_host.py, results/cpu-bench)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, limit: int | None = None, amp: bool = True):
    """COCO results of every image in the loader (image ids = sample index + 1), and the ids seen."""
    model.eval()
    detections, seen = [], []
    with collector_paused():
        for step, batch in enumerate(loader):
            if limit is not None and step >= limit:
                break
            images, _, indices = to_device(batch, device, augment=False)
            with autocast_for(device, amp):
                outputs = model(images)
            detections += outputs_to_coco(outputs, indices)
            seen += [index + 1 for index in indices]
    return detections, seen


def outputs_to_coco(outputs: list[dict[str, torch.Tensor]], indices: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results of one batch of a torchvision detector's outputs (image ids = sample index + 1), with one
    device-to-host copy for the batch, not three per image: boxes, score and label side by side."""
    rows = torch.cat(
        [
            torch.cat(
                [o["boxes"].float(), o["scores"].float()[:, None], (o["labels"] - LABEL_OFFSET).float()[:, None]], 1
            )
            for o in outputs
        ]
    ).cpu()
    detections = []
    for index, image_rows in zip(indices, rows.split([len(o["boxes"]) for o in outputs])):
        detections += detections_to_coco(
            index + 1, image_rows[:, :4].numpy(), image_rows[:, 4].tolist(), image_rows[:, 5].long().tolist()
        )
    return detections


class _Limited:
    """A loader that reports its length as min(len, limit): validation on the first N batches only."""

    def __init__(self, loader, limit: int | None):
        self.loader, self.limit_batches = loader, limit

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return min(len(self.loader), self.limit_batches or len(self.loader))


class TorchvisionDetector(Benchmark):
    task = "detection"

    def __init__(
        self,
        name: str,
        network: Callable[..., nn.Module],
        row: str | None = None,
        input_size: Sequence[int] = (256, 642),
        num_classes: int = 2,
        weights: str | None = "auto",
        download: bool = False,
        resize: str | None = None,
    ):
        self.name, self.row, self.network = name, row, network
        self.facts = detector_facts(network)
        self.input_size = checked_input_size(input_size)
        self.num_classes, self.weights, self.download = int(num_classes), weights, bool(download)
        self.resize = resolve_resize(self.facts, resize)

    # -- building ---------------------------------------------------------------------------------------------
    def effective_size(self, ctx: RunContext) -> list[int]:
        cap = getattr(ctx.trainer, "max_input_size", None)
        size = list(self.input_size)
        if cap:  # a detector's layers may need a least size: shrink no further
            cap = max(cap, self.facts.min_size)
        if cap and max(size) > cap:  # smoke runs: shrink, keep the aspect ratio
            scale = cap / max(size)
            size = [max(32, int(round(s * scale))) for s in size]
        return size

    def _build(self, ctx: RunContext, load_weights: bool, pretrained: bool = False) -> tuple[nn.Module, dict[str, Any]]:
        """The model and its weights facts. `load_weights=False` loads no file and builds the `pretrained` layout
        (frozen batch norm or not: test() passes its checkpoint's, so the parameters counted are those trained)."""
        files = self.facts.files
        choice = (
            resolve_weights(
                self.weights,
                files,
                ctx.cache_dir,
                self.name,
                download=self.download,
                urls={name: TORCHVISION_URL + name for name in files},
            )
            if load_weights
            else None
        )
        pretrained = choice.pretrained if choice else pretrained
        model = self.network(
            num_classes=self.num_classes, input_size=self.effective_size(ctx), pretrained=pretrained, resize=self.resize
        )
        if choice and choice.path is not None:
            load_pretrained(model, choice.path)
        elif choice and choice.download_url:
            path = Path(torch.hub.get_dir()) / "checkpoints" / choice.download_url.rsplit("/", 1)[-1]
            torch.hub.download_url_to_file(choice.download_url, str(path))
            load_pretrained(model, path)
        info = {"pretrained": pretrained, "pretrained_source": choice.source if choice else None}
        return model, info

    # -- protocol ---------------------------------------------------------------------------------------------
    def fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        trainer = ctx.trainer
        model, info = self._build(ctx, load_weights=True)
        train_samples = read_detection_split(spec, "train")
        val_samples = read_detection_split(spec, "val")
        device = ctx.device
        train_loader = detection_loader(
            build_dataset(train_samples, ctx.cache_dir),
            trainer.batch_size,
            True,
            trainer.num_workers,
            device,
            seed=ctx.seed,
            on_device=trainer.data_on_device,
        )
        val_loader = _Limited(
            detection_loader(
                build_dataset(val_samples, ctx.cache_dir),
                trainer.val_batch_size,
                False,
                trainer.num_workers,
                device,
                on_device=trainer.data_on_device,
            ),
            trainer.limit_val_batches,
        )
        module = DetectorModule(model, coco_ground_truth(val_samples), augment=trainer.augment)
        result = ctx.fit(module, train_loader, val_loader, MONITOR)
        return {
            **info,
            **result.facts(),
            "input_size": self.effective_size(ctx),
        }

    def test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        state = load_checkpoint(checkpoint)
        model, _ = self._build(ctx, load_weights=False, pretrained=built_pretrained(state["model"]))
        model.load_state_dict(state["model"])  # strict: a checkpoint of the other layout would not load
        model.to(device).eval()
        samples = read_detection_split(spec, "test")
        if trainer.limit_test_images:
            samples = samples[: trainer.limit_test_images]
        loader = detection_loader(
            build_dataset(samples, ctx.cache_dir),
            trainer.val_batch_size,
            False,
            trainer.num_workers,
            device,
            on_device=trainer.data_on_device,
        )
        start = time.perf_counter()
        detections, _ = predict(model, loader, device, amp=TEST_SPLIT_AMP)
        log.info("test: %d images in %.1f s", len(samples), time.perf_counter() - start)
        ground_truth = coco_ground_truth(samples)
        metrics = score_and_write(ctx.run_dir, ground_truth, detections, f"{self.name} - {spec.name}")
        speed = self.inference_speed(model, loader, device, trainer)
        return {
            "metrics": metrics,
            "params": count_parameters(model),
            **speed,
            "input_size": self.effective_size(ctx),
            "test_precision": precision_label(device, TEST_SPLIT_AMP),
            "checkpoint_epoch": state.get("epoch"),
            "test_images": len(samples),
        }

    @staticmethod
    def inference_speed(model: nn.Module, loader, device: torch.device, trainer) -> dict:
        """Batch-1 FPS and load, fp32, the image already on the device (the paper's protocol): batch1_speed's
        fields."""
        images = []
        for batch in loader:
            batch_images, _, _ = to_device(batch, device, augment=False)
            images += [im.unsqueeze(0).contiguous() for im in batch_images]
            if len(images) >= 8:
                break

        def predict_on(target: torch.device):
            model.to(target)
            return lambda x: model(list(x))

        return batch1_speed(predict_on, images, device, trainer)
