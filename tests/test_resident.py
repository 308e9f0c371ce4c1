"""trainer.data_on_device: a split held on the device gives the DataLoader's batches bit for bit, in the same
order each epoch, and `auto` and bad settings behave as documented."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from spinebench.data.cache import decoded_cache
from spinebench.data.detection import read_detection_split
from spinebench.data.resident import ResidentBatches, upload, wants_resident
from spinebench.data.source import prepare_dataset
from spinebench.detection.data import build_dataset, detection_loader
from spinebench.engine import TrainerConfig
from spinebench.engine.config import ConfigError
from spinebench.segmentation.benchmark import SegmentationBenchmark
from spinebench.segmentation.data import SegmentationSplit
from spinebench.segmentation.losses import SegmentationLoss
from spinebench.segmentation.task import SegmentationModule, evaluate_split

from helpers.files import write_png

CPU = torch.device("cpu")
GPU_BUSY_CYCLES = 1_000_000_000  # torch.cuda._sleep's unit: GPU clock cycles
TINY = {"n_train": 8, "n_val": 4, "n_test": 4, "seed": 0, "domain": "porcine"}


def phantom(task: str, cache_dir):
    folder = cache_dir / "phantom" / f"{task}-porcine-s0-8-4-4"  # where the other tests' tiny phantoms are
    return prepare_dataset(f"{task}_phantom_tiny", task, folder, phantom=TINY)


def epochs_of(loader, epochs=(0, 1)):
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        yield from loader


# batch 3: a short last batch; batch 7 on 8 training images: drop_last (a last batch of one image)
@pytest.mark.parametrize("batch_size, train", [(3, True), (7, True), (3, False)])
def test_detection_batches_from_the_device_equal_the_loaders(cache_dir, batch_size, train):
    dataset = build_dataset(read_detection_split(phantom("detection", cache_dir).root, "train"), cache_dir)
    plain = detection_loader(dataset, batch_size, train, 0, CPU, seed=3)
    held = detection_loader(dataset, batch_size, train, 0, CPU, seed=3, on_device="true")
    assert isinstance(held, ResidentBatches) and len(held) == len(plain)
    pairs = list(zip(epochs_of(plain), epochs_of(held), strict=True))
    assert len(pairs) == 2 * len(plain)
    for (images, packed, indices), (held_images, held_packed, held_indices) in pairs:
        assert torch.equal(images, held_images) and indices == held_indices
        assert all(torch.equal(packed[k], held_packed[k]) for k in ("boxes", "labels"))
        assert packed["counts"] == held_packed["counts"]
    assert [p[0][2] for p in pairs[: len(plain)]] != [p[0][2] for p in pairs[len(plain) :]] or not train  # reshuffled
    after = []
    for loader in (plain, held):  # the engine seeds each epoch after iter(): no batch may draw from torch's generator
        batches = iter(loader)
        torch.manual_seed(0)
        list(batches)
        after.append(torch.rand(4))
    assert torch.equal(*after)


def test_segmentation_batches_from_the_device_equal_the_loaders(cache_dir):
    split = SegmentationSplit(phantom("segmentation", cache_dir).root, "train", cache_dir)
    plain = SegmentationBenchmark.loader(split, 3, True, 0, CPU, seed=1)
    held = SegmentationBenchmark.loader(split, 3, True, 0, CPU, seed=1, on_device="true")
    assert isinstance(held, ResidentBatches) and len(held) == len(plain) == 2  # training drops the short last batch
    for batch, held_batch in zip(epochs_of(plain), epochs_of(held), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch, held_batch, strict=True))
        assert held_batch[1].dtype == torch.uint8 and int(held_batch[1].max()) <= 9


@pytest.mark.parametrize(
    "device", [CPU, pytest.param(torch.device("cuda"), marks=pytest.mark.gpu)], ids=["cpu", "cuda"]
)
def test_a_test_split_held_on_the_device_scores_as_the_loaders(cache_dir, tmp_path, device):
    """evaluate_split (how a run scores its test split, which follows trainer.data_on_device) writes the same
    metrics, prediction PNGs and overlays from the held split as from the DataLoader."""
    split = SegmentationSplit(phantom("segmentation", cache_dir).root, "test", cache_dir)
    torch.manual_seed(0)
    module = SegmentationModule(torch.nn.Conv2d(1, 10, 3, padding=1).to(device), SegmentationLoss(10), (32, 64))
    metrics = {}
    for setting in ("false", "true"):
        loader = SegmentationBenchmark.loader(split, 3, False, 0, device, on_device=setting)
        metrics[setting], _ = evaluate_split(
            module,
            loader,
            split.names,
            device,
            tmp_path / setting,
            n_overlays=2,
            amp=False,
            mask_paths=split.mask_paths,
        )
    assert isinstance(loader, ResidentBatches) and metrics["true"] == metrics["false"]
    written = {s: sorted(p.relative_to(tmp_path / s) for p in (tmp_path / s).rglob("*.png")) for s in metrics}
    assert written["true"] == written["false"] and len(written["true"]) == len(split) + 2  # + the 2 overlays
    assert all((tmp_path / "true" / f).read_bytes() == (tmp_path / "false" / f).read_bytes() for f in written["true"])


def test_upload_holds_every_array_in_file_order(cache_dir):
    split = SegmentationSplit(phantom("segmentation", cache_dir).root, "val", cache_dir)
    held = upload(split.masks, CPU)
    assert held.shape == (len(split), 275, 690) and held.dtype == torch.uint8
    assert all(np.array_equal(held[i].numpy(), split.masks[i]) for i in range(len(split)))
    assert split.images.nbytes == len(split) * 275 * 690


def test_auto_holds_nothing_on_a_cpu_and_true_needs_one_image_size(tmp_path, cache_dir):
    same = build_dataset(read_detection_split(phantom("detection", cache_dir).root, "val"), cache_dir).cache
    assert not wants_resident("auto", [same], CPU) and not wants_resident("false", [same], CPU)
    assert wants_resident("true", [same], CPU)
    write_png(tmp_path / "a.png", np.zeros((20, 30)))
    write_png(tmp_path / "b.png", np.zeros((20, 40)))
    mixed = decoded_cache([tmp_path / "a.png", tmp_path / "b.png"], tmp_path / "cache")
    with pytest.raises(ConfigError, match="data_on_device=true needs every image of a split to have one size"):
        wants_resident("true", [mixed], CPU)
    assert not wants_resident("auto", [mixed], CPU)


def test_the_setting_is_validated():
    assert TrainerConfig.from_config({"data_on_device": True}).data_on_device == "true"  # `=true` on the command line
    assert TrainerConfig.from_config({}).data_on_device == "auto"
    with pytest.raises(ConfigError, match="trainer.data_on_device must be auto, true or false"):
        TrainerConfig.from_config({"data_on_device": "gpu"})


@pytest.mark.gpu
def test_a_batch_from_the_gpu_held_split_never_waits_for_the_gpu(cache_dir):
    """Getting a batch and moving it (to_device) queues work behind the GPU's and returns: no synchronizing call
    of PyTorch's, and no wait of the CUDA runtime's either (a copy from pageable memory may make one), so the CPU
    goes on queueing the step's kernels while the GPU is busy."""
    from spinebench.detection.data import to_device

    cuda = torch.device("cuda")
    dataset = build_dataset(read_detection_split(phantom("detection", cache_dir).root, "train"), cache_dir)
    loader = detection_loader(dataset, 4, True, 0, cuda, on_device="auto")
    assert isinstance(loader, ResidentBatches)
    batches = iter(loader)  # the epoch's order crosses to the GPU once, here
    to_device(next(batches), cuda, augment=True)  # first calls: lazy CUDA set-up, pinned memory pool
    torch.cuda.synchronize()
    start = time.perf_counter()
    torch.cuda._sleep(GPU_BUSY_CYCLES)  # the GPU busy for a while (about 0.5 s at 2 GHz)
    torch.cuda.set_sync_debug_mode("error")
    try:
        images, targets, _ = to_device(next(batches), cuda, augment=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    returned = time.perf_counter() - start
    torch.cuda.synchronize()
    busy = time.perf_counter() - start
    assert busy > 0.1, f"the GPU was busy {busy:.3f} s only: too short to tell a wait from none"
    assert returned < busy / 4, f"to_device returned after {returned:.3f} s of the GPU's {busy:.3f} s: it waited"
    assert images[0].is_cuda and len(targets) == 4
