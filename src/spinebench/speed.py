"""Batch-1 inference speed and processor load, as the paper's implantability score needs them.

FPS: `n` single-image forward passes timed after `warmup` passes (CUDA synchronised). Load: the process's CPU
utilisation (psutil, normalised by the number of cores) and, on CUDA, the GPU's utilisation sampled through
NVML every 50 ms during the timed passes. Both as fractions 0-1. The paper scores implantability on a CPU and on
a GPU for every model, so `batch1_speed` times a GPU run's model on the CPU as well (trainer.cpu_fps_images).
`pass_rate` is the benchmarks' throughput clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import psutil
import torch

from spinebench.runinfo import device_name


@dataclass
class InferenceSpeed:
    fps: float
    cpu_load: float
    gpu_load: float | None
    n_images: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


class _GpuSampler(threading.Thread):
    """Samples NVML utilisation of one GPU in the background while the timed loop runs."""

    def __init__(self, index: int, period_s: float = 0.05):
        super().__init__(daemon=True)
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self._nvml, self._handle, self._period = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), period_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0)
            time.sleep(self._period)

    def stop(self) -> float | None:
        self._stop_event.set()
        self.join()
        return sum(self.samples) / len(self.samples) if self.samples else None


@torch.inference_mode()
def measure_inference(
    predict: Callable[[torch.Tensor], object],
    images: Sequence[torch.Tensor],
    device: torch.device | str,
    warmup: int = 5,
    n: int = 50,
) -> InferenceSpeed:
    """Time `predict` on one image at a time (each already a 1 x C x H x W tensor on `device`)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        predict(images[i % len(images)])
    sync()
    process = psutil.Process()
    process.cpu_percent(None)  # starts the CPU-time window
    sampler = None
    if device.type == "cuda":
        try:
            sampler = _GpuSampler(device.index or 0)
            sampler.start()
        except Exception:  # NVML missing (e.g. no driver library): GPU load is then reported as unknown
            sampler = None
    start = time.perf_counter()
    for i in range(n):
        predict(images[i % len(images)])
    sync()
    elapsed = time.perf_counter() - start
    cpu_load = process.cpu_percent(None) / 100.0 / (psutil.cpu_count() or 1)
    gpu_load = sampler.stop() if sampler else None
    return InferenceSpeed(
        fps=n / elapsed, cpu_load=min(cpu_load, 1.0), gpu_load=gpu_load, n_images=n, device=str(device)
    )


def speed_devices(device: torch.device, trainer) -> list[torch.device]:
    """Where to time batch-1 inference: the run's device, then the CPU when the run is on a GPU and
    trainer.cpu_fps_images > 0."""
    cpu = torch.device("cpu")
    return [device] + ([cpu] if device.type != "cpu" and trainer.cpu_fps_images else [])


def batch1_speed(
    predict_on: Callable[[torch.device], Callable], images: Sequence, device: torch.device, trainer
) -> dict:
    """metrics.json's speed fields: `fps_batch1` and `load` ({"cpu", "gpu"}) on the run's device, and `speed`,
    {"cpu"|"gpu": {"fps", "load", "device"}} for each processor of `speed_devices`, the load being that
    processor's. `predict_on(d)` moves the model to `d` and returns its predict function; tensor images are
    moved to `d` (others, e.g. the BGR frames ultralytics reads, are given as they are). The run's device goes
    first: the CPU timing may move the model off it."""
    block = {}
    for target in speed_devices(device, trainer):
        on_run_device = target == device  # the first; the CPU of a GPU run is the second
        on_target = [im.to(target) if isinstance(im, torch.Tensor) else im for im in images]
        speed = measure_inference(
            predict_on(target),
            on_target,
            target,
            warmup=trainer.fps_warmup if on_run_device else trainer.cpu_fps_warmup,
            n=trainer.fps_images if on_run_device else trainer.cpu_fps_images,
        )
        processor = "cpu" if target.type == "cpu" else "gpu"
        block[processor] = {
            "fps": speed.fps,
            "load": speed.cpu_load if processor == "cpu" else speed.gpu_load,
            "device": device_name(target),
        }
        if on_run_device:
            own = speed
    return {"fps_batch1": own.fps, "load": {"cpu": own.cpu_load, "gpu": own.gpu_load}, "speed": block}


def pass_rate(run: Callable[[], object], n_images: int, device: torch.device | str, passes: int = 1) -> float:
    """images/s of `run()`, one pass over `n_images`, timed over `passes` passes after one untimed pass."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run()
    sync()
    start = time.perf_counter()
    for _ in range(passes):
        run()
    sync()
    return passes * n_images / (time.perf_counter() - start)
