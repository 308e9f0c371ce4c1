"""The one training loop, shared by detection and segmentation (task-agnostic).

API (everything a task needs):

    from spinebench.engine import TrainerConfig, TrainModule, fit, load_checkpoint, resolve_device

    cfg = TrainerConfig.from_config(cfg.trainer, seed=cfg.seed)  # types, ranges: ConfigError (one line)
    device = resolve_device(cfg.device)              # "auto" -> cuda when available, else cpu
    result = fit(module, train_loader, val_loader, cfg, run_dir, config=resolved_cfg_dict, monitor="mAP50_95",
                 resume_rules=ctx.resume_rules)      # keys a resume may change, from the runner, data and model
    # result: FitResult(epochs, best_metric, best_epoch, history, train_images_per_s, wall_time_s, resumed_from)
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")   # dict, see below
    module.load_checkpoint_state(state["model"])

`TrainModule` (a Protocol; only `model`, `training_step` and `validation` are required):

    model: torch.nn.Module                                    # moved to the device (channels_last on CUDA) by fit()
    training_step(batch, device) -> Tensor | dict             # the loss, or a dict with "loss" (+ logged scalars);
                                                              # move the batch to `device` here (non_blocking),
                                                              # augment on the device; fit() wraps it in autocast
    validation(loader, device) -> dict[str, float]            # called once per epoch in eval mode under no_grad
                                                              # and autocast; must contain the `monitor` key
    # optional
    checkpoint_state() -> dict                                # default: model.state_dict() (SAMed: LoRA + decoder)
    load_checkpoint_state(state: dict) -> None                # default: model.load_state_dict(state)
    batch_size(batch) -> int                                  # default: len(batch[0]) / len(batch) (images/s)
    parameter_groups() -> iterable                            # default: trainable model parameters

Config (configs/trainer/): `TrainerConfig` is the schema Hydra composes the trainer files onto (`trainer/base`,
registered when this package is imported), so an unknown key or a value of the wrong type fails at composition.
The optimizer and the schedule are `_partial_` targets, chosen by file from configs/trainer/optimizer/ and
configs/trainer/scheduler/ (`trainer/optimizer=adamw`, or `override /trainer/optimizer: adamw` in an experiment),
so that any torch optimizer or scheduler is one config away and no list of names lives in the engine:

    optimizer: {_target_: torch.optim.SGD, _partial_: true, lr: 0.005, momentum: 0.9, weight_decay: 0.0001}
    scheduler: {_target_: spinebench.engine.schedules.cosine, _partial_: true, warmup_epochs: 1.0, min_lr_ratio: 0.01}

fit() builds `instantiate(optimizer)(parameters)` and `instantiate(scheduler)(optimizer, epochs=...,
steps_per_epoch=..., total_steps=...)` (the step counts its signature names). A file chooses one optimizer's keys
whole: merging AdamW's onto SGD's would hand AdamW a `momentum`.

Behaviour:
- bf16 autocast on CUDA (`amp`) for training and validation (the tasks score the test split in float32:
  TEST_SPLIT_AMP, and report it with `precision_label(device, TEST_SPLIT_AMP)`), channels_last on CUDA
  (`channels_last`), `grad_clip` (max L2 norm) optional.
- LR schedule stepped per iteration (spinebench.engine.schedules): linear warmup (`warmup_epochs`, fractions
  allowed, or `warmup_iters`) then `cosine` (to lr * min_lr_ratio), `poly` (power), `step` (step_size epochs,
  gamma) or `constant`.
- Every epoch: validation, `checkpoints/last.pt` (atomic), and `checkpoints/best.pt` when the monitored metric
  improves (`mode` max by default), as a hard link to the same file: the state is serialised once per epoch.
  A checkpoint is a dict: model, optimizer, scheduler, epoch (epochs completed), global_step, best_metric,
  best_epoch, history, config, monitor; tensors and plain values only, read with torch's weights_only (a file
  holding any other object is refused, RunStateError, as is a missing or cut-short one).
- Resume: when `checkpoints/last.pt` exists, fit() continues from it; the result equals an uninterrupted run on
  CPU because all randomness of an epoch (shuffle, augmentation, dropout) is drawn from a generator seeded with
  (seed, epoch) at the start of that epoch, after its iterator is made (a DataLoader with persistent workers
  draws from torch's generator there, in the process's first epoch only). A finished run (epoch == epochs)
  returns at once without training. A checkpoint trained under other settings (its stored `config`) is refused
  by `check_same_settings`, not resumed. What may differ: the trainer's runtime keys (RESUME_NEUTRAL: device,
  workers, progress, ...; `eval_batch_size` only without `limit_val_batches`, since it decides which validation
  images pick `best`) and the keys that `resume_rules` (spinebench.contract.ResumeRule, from the runner, the data
  and the model) let differ; a rule may also refuse a resume itself. The engine knows no model or data source.
- Progress: rich bars (images/s, loss, ETA) on a TTY (`progress: auto|true|false`); one log line per epoch always.
- Host syncs: the losses stay on the device and are read back every SYNC_EVERY (20) steps, so the CPU can queue
  the next step while the GPU works; a NaN/inf loss stops the run there with the epoch and step that produced it
  (`last.pt` still holds the last good epoch). Loaders should keep their workers (`persistent_workers`).
- Several GPUs: under `torchrun --nproc_per_node=N` (spinebench.engine.distributed) the model trains through
  DistributedDataParallel, each rank on its shard of the EpochSampler's order and batch_size / N images a step
  (trainer.batch_size is the global batch); `module.model` is the DDP wrapper during the training steps only
  (reach the network with distributed.unwrap there), and rank 0 alone writes checkpoints.
- Loader randomness: build train loaders with `sampler=EpochSampler(dataset)` (or any sampler with `set_epoch`);
  fit() calls `set_epoch(epoch)` so the shuffle is a function of (seed, epoch) only.
"""

from spinebench.contract import CHECKPOINT_DIR
from spinebench.engine.config import ConfigError, TrainerConfig, resolve_device
from spinebench.engine.loop import (
    TEST_SPLIT_AMP,
    EpochSampler,
    FitResult,
    TrainModule,
    autocast_for,
    check_same_settings,
    fit,
    load_checkpoint,
    precision_label,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_DIR",
    "TEST_SPLIT_AMP",
    "ConfigError",
    "EpochSampler",
    "FitResult",
    "TrainModule",
    "TrainerConfig",
    "autocast_for",
    "check_same_settings",
    "fit",
    "load_checkpoint",
    "precision_label",
    "resolve_device",
    "seed_everything",
]
