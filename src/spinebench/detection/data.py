"""Detection batches: PNGs decoded once (uint8 memmap cache), batched as uint8, augmented on the device.

A batch from `detection_loader` is `(images, targets, indices)`: images B x H x W uint8 (pinned on CUDA, or
already on the device with `on_device`) when all images share a size (the release: 275 x 690), else a list of
H x W uint8 tensors; targets packed for the whole batch, {"boxes": N x 4 float32 xyxy pixels, "labels": N int64
(0 = hematoma), "counts": boxes per image}; indices the sample positions. `to_device` unpacks the targets into
torchvision's one dict per image.
`to_device` moves a batch to the device, converts to float in [0, 1] and applies the cheap augmentation there
(horizontal flip with boxes, brightness/contrast), drawing its random numbers from torch's CPU generator so a
run is reproducible on any device. It hands the detectors torchvision's label convention: 0 is background, so
dataset class k becomes label k + LABEL_OFFSET (hematoma = 1); predictions map back with - LABEL_OFFSET.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from spinebench.data.cache import DecodedCache, decoded_cache
from spinebench.data.detection import DetectionSample
from spinebench.data.resident import ResidentBatches, upload, wants_resident
from spinebench.engine import EpochSampler

BRIGHTNESS = 0.15  # additive, in [0, 1] intensity units
CONTRAST = 0.2  # multiplicative range 1 +- CONTRAST
LABEL_OFFSET = 1  # torchvision detectors reserve label 0 for background


class DetectionDataset(Dataset):
    def __init__(self, samples: Sequence[DetectionSample], cache: DecodedCache):
        if len(samples) != len(cache):
            raise ValueError("samples and cache differ in length")
        self.samples, self.cache = list(samples), cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.array(self.cache[index]))  # copy out of the read-only memmap
        return image, self.target(index), index

    def target(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        return {
            "boxes": torch.from_numpy(sample.boxes.copy()).float().reshape(-1, 4),
            "labels": torch.from_numpy(sample.labels.copy()).long(),
        }


def collate(batch):
    """Few tensors per batch: a loader worker hands each tensor to the main process through its own shared-memory
    segment, and 33 small ones cost the main thread ~4x the whole batch's loading (bench note in the README)."""
    images, targets, indices = zip(*batch)
    if all(im.shape == images[0].shape for im in images):
        images = default_collate(images)  # stacked straight into shared memory inside a worker
    return images, pack_targets(targets), list(indices)


def pack_targets(targets: Sequence[dict[str, torch.Tensor]]) -> dict:
    return {
        "boxes": torch.cat([t["boxes"] for t in targets]),
        "labels": torch.cat([t["labels"] for t in targets]),
        "counts": [len(t["labels"]) for t in targets],
    }


def build_dataset(samples: Sequence[DetectionSample], cache_dir: Path | str) -> DetectionDataset:
    return DetectionDataset(samples, decoded_cache([s.image for s in samples], cache_dir))


def detection_loader(
    dataset: DetectionDataset,
    batch_size: int,
    train: bool,
    num_workers: int,
    device: torch.device,
    seed: int = 0,
    drop_last: bool | None = None,
    on_device: str = "false",
) -> DataLoader | ResidentBatches:
    """Training loaders shuffle with an EpochSampler (resume-exact); evaluation keeps file order. `on_device`
    (trainer.data_on_device: auto | true | false) serves the batches from the split held on the device instead."""
    sampler = EpochSampler(dataset, seed=seed, shuffle=train)
    if drop_last is None:  # a last batch of one image breaks batch-norm-free heads less than BN; keep it unless big
        drop_last = train and len(dataset) > batch_size and len(dataset) % batch_size == 1
    if wants_resident(on_device, [dataset.cache], device):
        targets = [dataset.target(i) for i in range(len(dataset))]  # built once: a step only concatenates
        return ResidentBatches(
            [upload(dataset.cache, device)],
            batch_size,
            sampler,
            drop_last,
            lambda held, indices: (held[0], pack_targets([targets[i] for i in indices]), indices),
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=num_workers > 0,  # no worker start-up at every epoch
        prefetch_factor=4 if num_workers > 0 else None,
    )


def queue_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`, the copy queued behind the device's work. A host tensor goes through pinned memory
    first: the CUDA runtime may make a copy from pageable memory wait for the stream's queued kernels (its "API
    synchronization behavior" notes), which stops the CPU queueing the next step's kernels meanwhile."""
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def to_device(batch, device: torch.device, augment: bool = False):
    """(list of 3 x H x W float images in [0, 1] on device, per-image targets on device in model labels, indices)."""
    images, packed, indices = batch
    boxes, labels, counts = packed["boxes"], packed["labels"], packed["counts"]
    stacked = isinstance(images, torch.Tensor)
    if stacked:
        x = queue_copy(images, device).float().div_(255.0)  # B x H x W
    else:
        x = [queue_copy(im, device).float().div_(255.0) for im in images]
    n = len(indices)
    if augment:
        flips, gains, shifts = torch.rand(3, n)  # one draw from the CPU generator: the same run on any device
        flips, gains, shifts = flips < 0.5, 1.0 + (gains * 2 - 1) * CONTRAST, (shifts * 2 - 1) * BRIGHTNESS
        if stacked:
            draws = queue_copy(torch.stack([flips.float(), gains, shifts]), device).view(3, -1, 1, 1)
            x = torch.where(draws[0] > 0, x.flip(-1), x)
            mean = x.mean(dim=(1, 2), keepdim=True)
            x = ((x - mean) * draws[1] + mean + draws[2]).clamp_(0, 1)
        else:
            out = []
            for i, im in enumerate(x):
                im = im.flip(-1) if flips[i] else im
                mean = im.mean()
                out.append(((im - mean) * float(gains[i]) + mean + float(shifts[i])).clamp_(0, 1))
            x = out
        # boxes flip with their image, on the host (a few numbers; the device never has to report anything back)
        per_box, n_boxes = torch.tensor(counts), len(boxes)  # output_size: no length to read back, on any device
        widths = torch.tensor([im.shape[-1] for im in images], dtype=boxes.dtype)
        width = widths.repeat_interleave(per_box, output_size=n_boxes)
        mirrored = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        boxes = torch.where(flips.repeat_interleave(per_box, output_size=n_boxes)[:, None], mirrored, boxes)
    boxes = queue_copy(boxes, device).split(counts)
    labels = (queue_copy(labels, device) + LABEL_OFFSET).split(counts)
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    images_out = [im.unsqueeze(0).expand(3, -1, -1) for im in x]  # grey -> 3 channels (ImageNet-style stems)
    return images_out, targets, indices
