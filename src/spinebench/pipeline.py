"""The work behind `spinebench-train` and `spinebench-eval`: seed -> data -> model -> fit -> test -> record.

Models are found only through the model config's `_target_` (a spinebench.contract.Benchmark); the run folder's
states are spinebench.run_folder.RunFolder's; nothing here knows a model, a data source or a framework.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spinebench.build import build, check_saved_targets, suite_targets, to_container
from spinebench.contract import CHECKPOINT_DIR, Benchmark, RunContext, RunRecord
from spinebench.data.check import refuse_unreadable
from spinebench.data.source import DatasetSpec
from spinebench.engine import TrainerConfig, check_same_settings, distributed, resolve_device, seed_everything
from spinebench.errors import ConfigError, RunStateError
from spinebench.hydra_run import CONFIG_DIR, config_label, refuse_smoke_preset_under_an_experiment
from spinebench.launch import claim_gpu
from spinebench.run_folder import CONFIG_FILE, METRICS_FILE, RunFolder, checkpoint_run_folder
from spinebench.runinfo import collect_env, device_name, git_commit

log = logging.getLogger("spinebench")
# where files go, whether a finished run is redone, and how jobs are launched (GPUs at once, a cluster's request)
RUNNER_NEUTRAL = ("paths", "skip_finished", "gpus", "resources")


def runner_rule(saved: dict[str, Any], current: dict[str, Any]) -> tuple[str, ...]:
    return RUNNER_NEUTRAL


def trainer_config(node: Any, seed: Any) -> TrainerConfig:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return TrainerConfig.from_config(node, seed=seed)


def build_benchmark(node: DictConfig) -> Benchmark:
    benchmark = build(node, "model")
    if not isinstance(benchmark, Benchmark):
        raise ConfigError(f"model._target_ builds a {type(benchmark).__name__}, not a spinebench.contract.Benchmark")
    return benchmark


def _start(
    cfg: DictConfig,
    benchmark: Benchmark,
    folder: RunFolder,
    trainer: TrainerConfig,
    resolved: dict,
    keep_finished: bool,
    begin: bool = True,
) -> tuple[DatasetSpec, RunContext]:
    """What training and evaluation share: seed, device, data, and a run folder in state `started` (set by rank 0
    alone under torchrun: `begin` is False on the others)."""
    seed_everything(trainer.seed, trainer.deterministic)
    device = resolve_device(trainer.device)
    spec: DatasetSpec = build(cfg.data, "data")
    if benchmark.task != spec.task:
        raise ConfigError(
            f"model {benchmark.name} is a {benchmark.task} model but data {spec.name} is a {spec.task} dataset"
        )
    refuse_unreadable(spec, spec.task, ("test",))  # a missing or broken test split (a split file's): before training
    about = {
        "task": spec.task,
        "model": benchmark.row or benchmark.name,
        "model_name": benchmark.name,
        "data": {key: spec.describe().get(key) for key in ("name", "kind", "domain")},
    }
    if begin:
        folder.begin(OmegaConf.to_yaml(OmegaConf.create(resolved)), collect_env(spec, device), about, keep_finished)
    ranks = f", {distributed.world_size()} ranks (torchrun)" if distributed.active() else ""
    log.info(
        "run %s: %s on %s [%s], device %s%s",
        folder.path,
        benchmark.name,
        spec.name,
        spec.label,
        device_name(device),
        ranks,
    )
    rules = (runner_rule, spec.resume_rule, *benchmark.resume_rules())
    if distributed.active():  # the loaders of one rank take its share of the recipe's global batch
        trainer = dataclasses.replace(trainer, batch_size=distributed.rank_batch_size(trainer.batch_size))
    return spec, RunContext(
        run_dir=folder.path,
        cache_dir=Path(cfg.paths.cache_dir),
        trainer=trainer,
        device=device,
        seed=trainer.seed,
        config=resolved,
        resume_rules=rules,
    )


def _finish(
    folder: RunFolder,
    spec: DatasetSpec,
    benchmark: Benchmark,
    ctx: RunContext,
    facts: dict,
    result: dict,
    started: float,
    **run: Any,
) -> dict:
    """The record, written last: the folder is finished."""
    split = spec.split_size("test") if ctx.trainer.limit_test_images else result.get("test_images")
    limit = ctx.trainer.limit_train_batches  # an evaluation inherits it from the run that trained the checkpoint
    run.setdefault("smoke_steps", ctx.trainer.epochs * limit if limit else None)
    run.setdefault("seed", ctx.seed)
    device = device_name(ctx.device)
    record = RunRecord.assemble(
        spec, benchmark, device, facts, result, started, test_split_images=split, git=git_commit(), **run
    )
    doc = folder.finish(record)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in doc["metrics"].items() if isinstance(v, float))
    log.info("%s on %s test: %s", benchmark.name, spec.name, scores)
    return doc


def check_resumable(folder: RunFolder, resolved: dict, benchmark: Benchmark, cfg: DictConfig) -> None:
    """A trained run under other settings is neither resumed nor passed off as this command's result. A model
    setting that is merely mistyped is named as such (the network is built only in fit())."""
    saved = folder.file(CONFIG_FILE)
    if not (saved.is_file() and folder.has_trained()):
        return
    try:
        rules = (runner_rule, DatasetSpec.resume_rule, *benchmark.resume_rules())
        check_same_settings(saved, to_container(OmegaConf.load(saved)), resolved, rules=rules)
    except ConfigError:
        benchmark.check_settings()
        raise


# ---------------------------------------------------------------------------------------------------- train
def train(cfg: DictConfig) -> dict | None:
    """Train + test one model on one dataset; returns the metrics.json document (None on the ranks other than 0
    under torchrun: rank 0 writes it)."""
    started = time.perf_counter()
    if cfg.get("gpus") is not None:  # a job of hydra/launcher=gpus: its worker's own GPU, before CUDA starts
        claim_gpu(cfg.gpus)
    refuse_smoke_preset_under_an_experiment()
    resolved = to_container(cfg)
    trainer = trainer_config(cfg.trainer, cfg.seed)
    benchmark = build_benchmark(cfg.model)
    folder = RunFolder(Path(cfg.paths.output_dir), benchmark.resume_files)
    distributed.join(trainer.device)
    distributed.rank_batch_size(trainer.batch_size)  # a global batch that does not divide among the ranks: now
    distributed.agree(
        str(folder.path.resolve()), "run folder", "pin one with run_name=... (no ${now} or per-rank value in it)"
    )
    if not distributed.is_main():
        return _train_beside_rank_zero(cfg, benchmark, folder, trainer, resolved)
    with folder.lock():  # one command per run folder, for its whole life
        check_resumable(folder, resolved, benchmark, cfg)
        if cfg.get("skip_finished") and folder.is_finished:  # `make reproduce` re-runs a sweep: keep finished rows
            try:
                doc = folder.record().to_json()
                log.info(
                    "skipping %s: already finished (%s exists; skip_finished=false redoes it)",
                    folder.path,
                    METRICS_FILE,
                )
                distributed.share(False)
                return doc
            except (OSError, ValueError) as error:  # its checkpoints are whole: resume (nothing to train) and test
                log.warning("%s is unreadable (%s): the run is tested again from its checkpoint", folder.path, error)
        folder.settle_kept()  # left by a redo that was killed
        with folder.attempt():
            spec, ctx = _start(cfg, benchmark, folder, trainer, resolved, keep_finished=True)
            distributed.share(True)  # the folder is ready: the other ranks start training
            facts = benchmark.fit(ctx, spec) or {}
            folder.trained()
            result = benchmark.test(ctx, spec, ctx.run_dir / CHECKPOINT_DIR / "best.pt")
            return _finish(folder, spec, benchmark, ctx, facts, result, started, config=config_label())


def _train_beside_rank_zero(
    cfg: DictConfig, benchmark: Benchmark, folder: RunFolder, trainer: TrainerConfig, resolved: dict
) -> None:
    """A rank other than 0 under torchrun: it trains its shards once rank 0 has readied the run folder, and
    writes nothing (rank 0 holds the lock, the checkpoints, the test and the record)."""
    if not distributed.share():
        return None  # rank 0 found the run finished
    spec, ctx = _start(cfg, benchmark, folder, trainer, resolved, keep_finished=True, begin=False)
    benchmark.fit(ctx, spec)
    return None


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate(cfg: DictConfig) -> dict:
    """Score a finished run's best checkpoint on another dataset's test split (no training)."""
    started = time.perf_counter()
    if cfg.get("data") is None:
        raise ConfigError(
            "no data selected: add data=<name> (see configs/data/), the dataset whose test split to score"
        )
    source = RunFolder(checkpoint_run_folder(cfg.ckpt))
    checkpoint = source.best_checkpoint(cfg.ckpt)
    saved = to_container(OmegaConf.load(source.file(CONFIG_FILE)))
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise RunStateError(f"{source.file(CONFIG_FILE)}: holds no model block; not a config a run wrote")
    check_saved_targets(saved["model"], "model", suite_targets(CONFIG_DIR))  # before anything is imported
    trainer_node, given = saved["trainer"], to_container(cfg.trainer)
    trainer_node.update({k: v for k, v in given.items() if v is not None})
    trainer_node["limit_test_images"] = given.get("limit_test_images")  # never the training run's smoke limit
    trainer = trainer_config(trainer_node, cfg.seed)
    benchmark = build_benchmark(OmegaConf.create(saved["model"]))
    folder = RunFolder(Path(cfg.paths.output_dir))
    with folder.lock(), folder.attempt():
        resolved = {**to_container(cfg), "checkpoint_config": saved}
        spec, ctx = _start(cfg, benchmark, folder, trainer, resolved, keep_finished=False)
        result = benchmark.test(ctx, spec, checkpoint)
        facts = source.training_facts(saved)
        return _finish(
            folder,
            spec,
            benchmark,
            ctx,
            facts,
            result,
            started,
            checkpoint_run=str(source.path.resolve()),
            seed=saved.get("seed"),
        )
