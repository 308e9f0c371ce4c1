"""The segmentation TrainModule (engine protocol) and the test-split evaluation that writes a run's files.

Geometry: a batch arrives as the release's native grey images (B x 275 x 690 uint8) and masks. With
`input_size` set (the paper: 256 x 256; SAMed 128 or 512 square) images are resized bilinearly and masks by
nearest neighbour for training; with `input_size: null` the native image goes in and the Segmenter pads it to
its network's multiple. Predicted logits are always resized (bilinear) to the native size before the argmax,
so every score and every predictions/*.png is at 690 x 275 against the untouched reference mask.
Augmentation runs on the device: horizontal flip, brightness/contrast jitter, small shift-scale (affine grid,
nearest for the mask, new border pixels IGNORE_INDEX).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spinebench.classes import IGNORE_INDEX, SEGMENTATION_CLASSES
from spinebench.data.segmentation import overlay
from spinebench.errors import WeightsError
from spinebench.segmentation.losses import SegmentationLoss
from spinebench.segmentation.metrics import SegmentationScorer

log = logging.getLogger(__name__)
# Pillow's PNG encoding releases the GIL, so writer threads scale with the cores (2 threads: 735 PNGs/s, 1: 319,
# on a 2-core CPU). Two threads capped the scoring of the test split on an H200 at 670 img/s.
PNG_WRITERS = max(2, min(8, os.cpu_count() or 2))


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """B x H x W uint8 -> B x 1 x H x W float 0-1."""
    return images.unsqueeze(1).float().div_(255.0)


class SegmentationModule:
    """What `spinebench.engine.fit` trains: model + loss + device-side preprocessing and augmentation."""

    validation_metrics = ("mean_dice", "mIoU", "cord_dice", "cord_iou", "foreground_mean_dice")  # trainer.monitor's

    def __init__(
        self,
        model: torch.nn.Module,
        loss: SegmentationLoss,
        input_size: Sequence[int] | None = None,
        augment: bool = True,
        class_names: Sequence[str] = SEGMENTATION_CLASSES,
    ):
        self.model, self.loss = model, loss
        self.input_size = tuple(int(v) for v in input_size) if input_size else None
        self.augment, self.class_names = augment, tuple(class_names)

    # -- engine protocol -------------------------------------------------------------------------------------
    def training_step(self, batch, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = self.inputs(batch, device)
        return self.loss(self.model(x), y)

    def inputs(self, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader's batch as the model trains on it (the data path's device half, apart so that the training
        benchmark can time the model without it): float images B x 1 x h x w and class maps B x h x w on the
        device, augmented, at the input size."""
        images, masks = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        x, y = _to_float(images), masks.long()
        if self.augment:
            x, y = augment(x, y)
        if self.input_size and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
            # nearest-exact samples each output pixel's centre, as the bilinear image above and the prediction's
            # way back up do ("nearest" takes floor(i * scale): labels ~0.85 native px off their images at 256)
            y = F.interpolate(y[:, None].float(), size=self.input_size, mode="nearest-exact")[:, 0].long()
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def validation(self, loader: Iterable, device: torch.device) -> dict[str, float]:
        scorer = SegmentationScorer(self.class_names)
        for images, masks, _ in loader:
            scorer.update(self.predict(images.to(device, non_blocking=True)), masks.to(device, non_blocking=True))
        metrics = scorer.metrics()
        return {k: (float("nan") if v is None else v) for k, v in metrics.items() if k in self.validation_metrics}

    def checkpoint_state(self) -> dict:
        return self.model.state_dict()  # SAMed's drops its frozen encoder (LoRA + decoder + prompt encoder only)

    def load_checkpoint_state(self, state: dict) -> None:
        load_model_state(self.model, state)

    def batch_size(self, batch) -> int:
        return len(batch[0])

    # -- inference -------------------------------------------------------------------------------------------
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Native uint8 images (B x H x W, on the device) -> logits at the native size."""
        x = _to_float(images)
        size = x.shape[-2:]
        if self.input_size and tuple(size) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Native uint8 images -> class-index maps (B x H x W uint8) at the native size."""
        return self.logits(images).argmax(dim=1).to(torch.uint8)


def load_model_state(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """load_state_dict with a message that says what does not fit (e.g. a checkpoint trained for other classes):
    a WeightsError, as the checkpoint named (spinebench-eval's ckpt=) is the user's choice."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            if value.ndim >= 1 and own[key].ndim == value.ndim and own[key].shape[1:] == value.shape[1:]:
                raise WeightsError(
                    f"{source} does not fit this model: {key} has {value.shape[0]} outputs, the model "
                    f"{own[key].shape[0]} (a checkpoint trained for {value.shape[0]} classes cannot "
                    f"score {own[key].shape[0]}-class data; check num_classes / the checkpoint)"
                )
            raise WeightsError(
                f"{source} does not fit this model: {key} is {tuple(value.shape)}, model needs "
                f"{tuple(own[key].shape)} (another architecture or input size?)"
            )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{source} does not fit this model: {len(result.missing_keys)} missing tensors "
            f"(e.g. {result.missing_keys[:1]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:1]}): another architecture?"
        )


def augment(
    x: torch.Tensor, y: torch.Tensor, flip_p: float = 0.5, jitter: float = 0.2, shift: float = 0.05, scale: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image random flip, brightness/contrast and shift-scale on the device (torch's global RNG: the engine
    seeds it per epoch, so a resumed run draws the same augmentations)."""
    batch, device = x.shape[0], x.device
    flip = torch.rand(batch, device=device) < flip_p
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    gain = 1 + (torch.rand(batch, 1, 1, 1, device=device) * 2 - 1) * jitter
    bias = (torch.rand(batch, 1, 1, 1, device=device) * 2 - 1) * jitter
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * gain + mean + bias).clamp_(0, 1)
    if shift or scale:
        s = 1 + (torch.rand(batch, device=device) * 2 - 1) * scale
        t = (torch.rand(batch, 2, device=device) * 2 - 1) * shift * 2
        theta = torch.zeros(batch, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = 1 / s, 1 / s, t
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # masks: nearest; pixels from outside the image become IGNORE_INDEX (shift 1 so 0 marks "outside")
        y = F.grid_sample((y[:, None].float() + 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)[
            :, 0
        ]
        y = torch.where(y == 0, torch.full_like(y, IGNORE_INDEX + 1), y).long() - 1
    return x, y


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


@torch.no_grad()
def evaluate_split(
    module: SegmentationModule,
    loader: Iterable,
    names: Sequence[str],
    device: torch.device,
    out_dir: Path,
    n_overlays: int = 8,
    amp: bool = True,
    mask_paths: Sequence[Path] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predict a split, score it, write predictions/*.png (class index, native size) and a few overlays.

    Returns (metrics block of metrics.json, summary.json payload)."""
    from spinebench.engine import autocast_for

    out_dir = Path(out_dir)
    pred_dir, overlay_dir = out_dir / "predictions", out_dir / "overlays"
    pred_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir.mkdir(parents=True, exist_ok=True)
    module.model.eval()
    scorer = SegmentationScorer(module.class_names)
    written: list[str] = []
    references: list[str | None] = []
    with ThreadPoolExecutor(max_workers=PNG_WRITERS) as pool:
        jobs = []
        for images, masks, index in loader:
            images_d, masks_d = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            with autocast_for(device, amp):
                pred = module.predict(images_d)
            if pred.shape != masks_d.shape:
                raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(masks_d.shape)} differ in size")
            batch_names = [names[int(i)] for i in index]
            references.extend(str(mask_paths[int(i)]) if mask_paths else None for i in index)
            scorer.update(pred, masks_d, batch_names)
            pred_np = pred.cpu().numpy()
            for k, name in enumerate(batch_names):
                path = pred_dir / (Path(name).stem + ".png")
                jobs.append(pool.submit(_save_png, pred_np[k], path))
                written.append(str(path.relative_to(out_dir)))
                if len(written) <= n_overlays:  # the batch may be held on the GPU: copy only the image drawn
                    image, mask = images[k].cpu().numpy(), masks[k].cpu().numpy()
                    panel = np.concatenate(
                        [np.repeat(image[..., None], 3, axis=2), overlay(image, mask), overlay(image, pred_np[k])],
                        axis=0,
                    )
                    jobs.append(pool.submit(_save_png, panel, overlay_dir / (Path(name).stem + ".png")))
        for job in jobs:
            job.result()
    summary = scorer.summary(written, references)
    summary["overlays"] = "overlays/<case>.png: image / reference / prediction, stacked top to bottom"
    return scorer.metrics(), summary
