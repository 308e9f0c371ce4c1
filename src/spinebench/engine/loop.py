"""fit(): the training loop itself. See the package docstring for the contract."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import pickle
import random
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from spinebench.atomic import is_disk_fault, write_error
from spinebench.contract import CHECKPOINT_DIR, ResumeRule
from spinebench.engine import distributed
from spinebench.engine.config import ConfigError, TrainerConfig, resolve_device
from spinebench.errors import RunStateError

log = logging.getLogger(__name__)

SYNC_EVERY = 20  # steps between host syncs (loss check, progress): in between the CPU queues work ahead of the GPU
# trainer.amp (bf16 autocast on CUDA) covers training and validation. The test split is scored in float32, as the
# batch-1 FPS is timed, so that the reported numbers do not depend on a speed setting: scoring one detector
# checkpoint under bf16 moved its test mAP50-95 by up to 0.028 (benchmarks/decode_precision.py).
TEST_SPLIT_AMP = False


@runtime_checkable
class TrainModule(Protocol):
    model: nn.Module

    def training_step(self, batch: Any, device: torch.device) -> torch.Tensor | dict[str, torch.Tensor]: ...

    def validation(self, loader: Iterable, device: torch.device) -> dict[str, float]: ...


@dataclass
class FitResult:
    epochs: int
    best_metric: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_images_per_s: float | None = None
    wall_time_s: float = 0.0
    resumed_from: int | None = None  # epochs already done when this process started (None: fresh run)
    best_path: Path | None = None
    last_path: Path | None = None
    monitor: str | None = None  # the validation metric that chose best.pt (trainer.monitor, else the task's)

    def facts(self) -> dict[str, Any]:
        """What every adapter's fit() reports of the loop to the run record (`history` is dropped there)."""
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "best_val": self.best_metric,
            "monitor": self.monitor,
            "train_images_per_s": self.train_images_per_s,
            "history": self.history,
        }


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; cuDNN deterministic, or autotuned (benchmark) when not. The flags are set
    either way: they are process-wide, and a run must not inherit an earlier run's (a sweep runs its jobs in one
    process; a deterministic job before a GPU one left cuDNN deterministic and untuned, and ultralytics' own
    deterministic mode turns on torch.use_deterministic_algorithms, which a non-deterministic run turns off)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if not deterministic:
        torch.use_deterministic_algorithms(False)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**63


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a permutation that depends only on (seed, epoch): resuming at epoch k reproduces it. Under
    torchrun a shuffled (training) sampler yields this rank's shard of that permutation (distributed.shard); an
    evaluation order is never sharded."""

    def __init__(self, data_source, seed: int = 0, shuffle: bool = True):
        self.n = len(data_source)
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return iter(distributed.shard(torch.randperm(self.n, generator=generator).tolist()))

    def __len__(self) -> int:
        return -(-self.n // distributed.world_size()) if self.shuffle else self.n


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op elsewhere (CPU runs stay fp32 and deterministic)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_label(device: torch.device, amp: bool) -> str:
    """What autocast_for(device, amp) computes in ("float32", "bfloat16 autocast"), read off the context itself so
    that the label cannot drift from the scoring: the `test_precision` of metrics.json."""
    context = autocast_for(device, amp)
    if isinstance(context, torch.autocast):
        return f"{str(context.fast_dtype).removeprefix('torch.')} autocast"
    return "float32"


def _partial(node: Mapping[str, Any], key: str) -> Any:
    """trainer.<key>'s `_target_` as a callable waiting for its first arguments (the parameters, the optimizer)."""
    if not isinstance(node, Mapping) or not node.get("_target_"):
        raise ConfigError(
            f"trainer.{key} has no _target_ (a config of an older shape, or none given): name a torch "
            f"class, e.g. trainer/{key}=<file of configs/trainer/{key}/>"
        )
    try:  # _convert_: plain lists and dicts, not OmegaConf's, go into the optimizer's state (and checkpoints)
        return instantiate(dict(node), _partial_=True, _convert_="all")
    except InstantiationException as error:
        raise ConfigError(f"trainer.{key}._target_={node['_target_']}: {str(error).splitlines()[0]}") from error


def _construct(factory: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """Call what _partial gave; a keyword the class does not take, or a value it refuses, names the setting."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"trainer.{key} ({getattr(factory.func, '__qualname__', factory.func)}): {error}") from error


def build_optimizer(params: Iterable, cfg: TrainerConfig) -> torch.optim.Optimizer:
    """trainer.optimizer over the trainable parameters (or the module's parameter groups, as given)."""
    params = [p for p in params if getattr(p, "requires_grad", True)] if not _is_groups(params) else params
    return _construct(_partial(cfg.optimizer, "optimizer"), "optimizer", params)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig, steps_per_epoch: int) -> Any:
    """trainer.scheduler, stepped per iteration, given the step counts its signature asks for."""
    factory = _partial(cfg.scheduler, "scheduler")
    counts = {"epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "total_steps": cfg.epochs * steps_per_epoch}
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        counts = {k: v for k, v in counts.items() if k in parameters and k not in factory.keywords}
    return _construct(factory, "scheduler", optimizer, **counts)


def _is_groups(params: Any) -> bool:
    return isinstance(params, list) and bool(params) and isinstance(params[0], dict)


def _publish(written: Path, path: Path) -> None:
    """Make `path` a hard link to the finished file `written` (a copy where links fail), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(written, tmp)
    except OSError:
        shutil.copyfile(written, tmp)
    os.replace(tmp, path)


def save_checkpoints(state: dict, last_path: Path, best_path: Path | None = None) -> None:
    """Write the epoch's state once: last.pt, and best.pt as a hard link to the same bytes when this epoch is the
    best (a Faster R-CNN state with its optimizer is 330 MB). best is in place before last: a kill in between
    re-runs this epoch. Both are replaced atomically, so a link never sees a later epoch's bytes. A full or
    read-only disk ends in one line naming the file and the free space, and leaves no partial file."""
    last_path.parent.mkdir(parents=True, exist_ok=True)
    written = last_path.with_suffix(".pt.writing")
    written.unlink(missing_ok=True)  # a kill after best was linked to it left it behind: never rewrite best's bytes
    try:
        torch.save(state, written)
        if best_path is not None:
            _publish(written, best_path)
        os.replace(written, last_path)
    except (OSError, RuntimeError) as error:  # torch's zip writer reports a short write as a RuntimeError
        for partial in (written, *([best_path.with_suffix(best_path.suffix + ".tmp")] if best_path else [])):
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        if is_disk_fault(error):
            raise write_error(written, error) from error
        raise


def _damaged_member(path: Path) -> str | None:
    """The first member of a checkpoint whose bytes fail the CRC its zip records (torch writes one per member and
    never checks it on load), or None. A file that is not a zip is left to torch.load to judge."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"its zip directory ({' '.join(str(error).split()) or type(error).__name__})"


def load_checkpoint(
    path: Path | str, map_location: str | torch.device = "cpu", keys: Sequence[str] = ()
) -> dict[str, Any]:
    """A checkpoint of this suite: tensors and plain values only (torch's weights_only), so a file from elsewhere
    runs no code when it is read; its bytes checked against the zip's CRCs first, so a flipped bit is refused
    rather than trained on; and a dict holding `keys`, so a torch file of another kind is named as such."""
    path = Path(path)
    if not path.is_file():
        raise RunStateError(f"{path}: checkpoint not found")
    remedy = "restore it, or move it away to start that run over"
    damaged = _damaged_member(path)
    if damaged:
        raise RunStateError(f"{path}: unreadable checkpoint (corrupted: {damaged} fails its CRC checksum); {remedy}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:  # cut short, not a checkpoint, or an object
        # weights_only refuses: torch's own messages do not name the file and run on for lines
        text = " ".join(str(error).split())
        refused = re.search(r"GLOBAL ([\w.]+)", text)
        what = (
            f"it holds a Python object, {refused.group(1)}, that a checkpoint of this suite does not"
            if refused
            else text.split(". ")[0] or type(error).__name__
        )
        raise RunStateError(f"{path}: unreadable checkpoint ({what}); {remedy}") from error
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        held = (
            f"a dict of {', '.join(map(str, list(state)[:5])) or 'nothing'}"
            if isinstance(state, dict)
            else (f"a {type(state).__name__}")
        )
        raise RunStateError(f"{path}: not a checkpoint of this suite (it holds {held}, no '{missing[0]}'); {remedy}")
    return state


RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch")  # what fit() reads back from last.pt

# Settings a killed run may resume under other values of: what runs it (device, loader, cuDNN determinism, memory
# layout, progress bars) and how it is scored afterwards, not what it learns. The runner, the data and the model add
# their own (ResumeRule: where files are, which pretrained file was found, ...).
RESUME_NEUTRAL = (
    "trainer.device",
    "trainer.num_workers",
    "trainer.data_on_device",
    "trainer.deterministic",
    "trainer.channels_last",
    "trainer.progress",
    "trainer.eval_batch_size",
    "trainer.limit_test_images",
    "trainer.fps_images",
    "trainer.fps_warmup",
    "trainer.cpu_fps_images",
    "trainer.cpu_fps_warmup",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    """`key` is one of `prefixes` or inside one (a.b.c is under a.b, a.bc is not)."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def check_same_settings(
    where: Path, saved: dict | None, current: dict | None, rules: Sequence[ResumeRule] = ()
) -> None:
    """Refuse to resume a run trained under config `saved` (read from `where`) under a `current` config that
    differs in a setting outside RESUME_NEUTRAL and the keys `rules` let differ: the run folder is named after model,
    trainer and seed only, so the same command with another lr lands in the same folder, and resuming would finish
    one run under the other's label. A rule may refuse the resume itself (a ConfigError of its own)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return  # written before configs were stored: nothing to compare
    before, now = _flatten(saved), _flatten(current)
    neutral = list(RESUME_NEUTRAL)
    if before.get("trainer.limit_val_batches") or now.get("trainer.limit_val_batches"):
        # a capped validation scores its first N batches: their size decides which images choose `best`
        neutral.remove("trainer.eval_batch_size")
    for rule in rules:
        try:
            neutral.extend(rule(before, now))
        except ConfigError as error:  # the rule sees configs, not the run: say which run it refused
            raise ConfigError(f"{where}: {error}") from None
    changed = sorted(
        key for key in before.keys() | now.keys() if before.get(key) != now.get(key) and not _under(key, neutral)
    )
    if changed:
        shown = ", ".join(f"{key} (was {before.get(key, '-')!r})" for key in changed[:4])
        if any(key.endswith("._target_") and key not in before for key in changed):  # optimizer.name, scheduler.name
            advice = (
                "; its trainer.optimizer and trainer.scheduler are of an older shape (no _target_) that this "
                "version cannot resume. Give this run its own folder (run_name=...)"
            )
        else:
            advice = ". Run the original command to resume it, give this run its own folder (run_name=...)"
        more = " and more" if len(changed) > 4 else ""
        raise ConfigError(
            f"{where}: this run was trained with other settings: {shown}{more}{advice}, or move "
            "checkpoints/ away to start over"
        )


def _module_state(module: Any) -> dict:
    if hasattr(module, "checkpoint_state"):
        return module.checkpoint_state()
    return module.model.state_dict()


def _load_module_state(module: Any, state: dict) -> None:
    if hasattr(module, "load_checkpoint_state"):
        module.load_checkpoint_state(state)
    else:
        module.model.load_state_dict(state)


def _batch_size(module: Any, batch: Any) -> int:
    if hasattr(module, "batch_size"):
        return int(module.batch_size(batch))
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return len(first)


def _progress_enabled(setting: str) -> bool:
    if setting.lower() == "true":
        return True
    if setting.lower() == "false":
        return False
    return sys.stderr.isatty() and not os.environ.get("CI")


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class _Progress:
    """rich bars (images/s, loss, ETA) on a TTY; nothing otherwise."""

    def __init__(self, enabled: bool):
        self.progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]:>7.1f} img/s  loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def add(self, description: str, total: int):
        return self.progress.add_task(description, total=total, speed=0.0, loss=float("nan")) if self.progress else None

    def update(self, task, **kwargs):
        if self.progress and task is not None:
            self.progress.update(task, **kwargs)


class _EpochMeter:
    """An epoch's losses, kept on the device and read back every SYNC_EVERY steps (one host sync, not one per
    step) and checked for NaN/inf there - the error names the first bad step; plus images/s for the bar."""

    def __init__(self, epoch: int):
        self.epoch, self.pending, self.total, self.count, self.images = epoch, [], 0.0, 0, 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> bool:
        """Keep the step's loss; True when it is time to read."""
        self.pending.append(loss.detach())
        self.images += images
        return len(self.pending) >= SYNC_EVERY

    def read(self) -> dict[str, float]:
        """The progress-bar fields since the last read; raises FloatingPointError on a non-finite loss."""
        speed = self.images / max(time.perf_counter() - self.start, 1e-9)
        if not self.pending:
            return {"advance": 0, "speed": speed}
        values = torch.stack(self.pending).float().cpu()
        self.pending = []
        bad = (~torch.isfinite(values)).nonzero().flatten()
        if len(bad):
            raise FloatingPointError(
                f"loss is {values[bad[0]].item()} at epoch {self.epoch + 1}, step "
                f"{self.count + int(bad[0]) + 1} (lower trainer.optimizer.lr or set trainer.grad_clip)"
            )
        self.total, self.count = self.total + float(values.sum()), self.count + len(values)
        return {"advance": len(values), "speed": speed, "loss": float(values[-1])}

    @property
    def mean_loss(self) -> float:
        return self.total / max(self.count, 1)


def fit(
    module: TrainModule,
    train_loader: Iterable,
    val_loader: Iterable | None,
    cfg: TrainerConfig,
    run_dir: Path | str,
    config: dict | None = None,
    monitor: str | None = None,
    resume_rules: Sequence[ResumeRule] = (),
) -> FitResult:
    """Train `module` for cfg.epochs, validating each epoch; resume from run_dir/checkpoints/last.pt if present
    and trained under `config` (check_same_settings, with `resume_rules`)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    monitor = cfg.monitor or monitor
    if monitor is None:
        raise ConfigError("trainer.monitor is not set and the task gave no default metric")
    known = getattr(module, "validation_metrics", None)
    if known is not None and val_loader is not None and monitor not in known:  # not after an epoch's training
        raise ConfigError(f"trainer.monitor={monitor!r} is not a validation metric of this task: {', '.join(known)}")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)

    model = module.model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    trained = distributed.wrap(model, device)  # under torchrun: DDP, the gradients averaged over the ranks
    params = module.parameter_groups() if hasattr(module, "parameter_groups") else model.parameters()
    optimizer = build_optimizer(list(params), cfg)
    try:
        n_batches = len(train_loader)  # type: ignore[arg-type]
    except TypeError as error:
        raise ConfigError("the training loader must have a length (the schedule is per iteration)") from error
    steps_per_epoch = min(n_batches, cfg.limit_train_batches or n_batches)
    if steps_per_epoch == 0:
        raise ConfigError("the training split yields no batch (fewer images than trainer.batch_size with drop_last?)")
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)

    start_epoch, global_step, history = 0, 0, []
    best_metric, best_epoch, resumed_from = None, None, None
    if last_path.is_file():
        state = load_checkpoint(last_path, map_location=device, keys=RESUME_KEYS)
        check_same_settings(last_path, state.get("config"), config, resume_rules)
        _load_module_state(module, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, global_step = int(state["epoch"]), int(state.get("global_step", 0))
        history = list(state.get("history", []))
        best_metric, best_epoch = state.get("best_metric"), state.get("best_epoch")
        resumed_from = start_epoch
        if start_epoch >= cfg.epochs:
            log.info("checkpoint %s already holds %d/%d epochs: nothing to train", last_path, start_epoch, cfg.epochs)
        else:
            log.info("resuming from %s at epoch %d/%d", last_path, start_epoch, cfg.epochs)

    images_seen, train_time = 0, 0.0
    with _Progress(_progress_enabled(cfg.progress) and distributed.is_main()) as progress:
        for epoch in range(start_epoch, cfg.epochs):
            sampler = getattr(train_loader, "sampler", None)
            for candidate in (sampler, getattr(train_loader, "batch_sampler", None)):
                if hasattr(candidate, "set_epoch"):
                    candidate.set_epoch(epoch)
            # The epoch's iterator first: a DataLoader draws its workers' base seed from torch's generator when it
            # makes one, and with persistent workers only in the process's first epoch, so a resumed run would
            # draw in another epoch than an uninterrupted one. Seeded after it, all randomness of this epoch is a
            # function of (seed, epoch) alone: what makes resume exact.
            batches = iter(train_loader)
            epoch_seed = _epoch_seed(cfg.seed, epoch)
            torch.manual_seed(epoch_seed)
            random.seed(epoch_seed)
            np.random.seed(epoch_seed % 2**32)
            model.train()
            task = progress.add(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch)
            meter = _EpochMeter(epoch)
            module.model = trained  # the training steps run through DDP's wrapper (itself in one process)
            try:
                for step, batch in enumerate(batches):
                    if step >= steps_per_epoch:
                        break
                    with autocast_for(device, cfg.amp):
                        out = module.training_step(batch, device)
                    loss = out["loss"] if isinstance(out, dict) else out
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip
                        )
                    optimizer.step()
                    epoch_lr = optimizer.param_groups[0]["lr"]  # the rate this step used: the history's (the last)
                    scheduler.step()
                    global_step += 1
                    if meter.add(loss, _batch_size(module, batch)):
                        progress.update(task, **meter.read())
            finally:
                module.model = model  # validation, checkpoints and scoring see the network itself
            progress.update(task, **meter.read())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            # every rank trained as many images as this one (distributed.shard pads the shards to one length)
            epoch_images, epoch_time = meter.images * distributed.world_size(), time.perf_counter() - meter.start
            images_seen, train_time = images_seen + epoch_images, train_time + epoch_time

            metrics: dict[str, float] = {}
            if val_loader is not None:
                model.eval()
                with torch.no_grad(), autocast_for(device, cfg.amp):
                    metrics = dict(module.validation(val_loader, device))
                if monitor not in metrics:
                    raise KeyError(f"validation returned no {monitor!r} (got {sorted(metrics)}): set trainer.monitor")
            record = {
                "epoch": epoch + 1,
                "train_loss": meter.mean_loss,
                "lr": epoch_lr,
                "images_per_s": epoch_images / max(epoch_time, 1e-9),
                **{f"val_{k}": v.item() if isinstance(v, np.generic) else v for k, v in metrics.items()},
            }
            history.append(record)
            improved = val_loader is None or _better(metrics.get(monitor), best_metric, cfg.mode)
            if improved:
                best_metric = record.get(f"val_{monitor}") if val_loader is not None else None
                best_epoch = epoch + 1
            state = {
                "model": _module_state(module),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "global_step": global_step,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "history": history,
                "monitor": monitor,
                "config": config,
            }
            distributed.check_weights_agree(model, epoch + 1)
            if distributed.is_main():
                save_checkpoints(state, last_path, best_path if improved else None)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
            log.info(
                "epoch %d/%d  loss %.4f  %.1f img/s  %s%s",
                epoch + 1,
                cfg.epochs,
                record["train_loss"],
                record["images_per_s"],
                shown,
                "  (best)" if improved else "",
            )

    distributed.barrier()  # the other ranks leave with rank 0's checkpoints in place
    if distributed.is_main() and not best_path.is_file() and last_path.is_file():  # every validation NaN: best = last
        _publish(last_path, best_path)
    return FitResult(
        epochs=cfg.epochs,
        best_metric=best_metric,
        best_epoch=best_epoch,
        history=history,
        train_images_per_s=(images_seen / train_time) if train_time > 0 else _history_speed(history),
        wall_time_s=time.perf_counter() - started,
        resumed_from=resumed_from,
        best_path=best_path,
        last_path=last_path,
        monitor=monitor,
    )


def _history_speed(history: list[dict]) -> float | None:
    speeds = [h.get("images_per_s") for h in history if h.get("images_per_s")]
    return float(np.mean(speeds)) if speeds else None
