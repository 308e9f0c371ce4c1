"""The real work behind `spinebench-train` and `spinebench-eval`: seed -> data -> model -> fit -> test -> files.

Model families are found ONLY through the model config's `_target_` (`benchmark = instantiate(cfg.model)`);
nothing here knows model names. The object must implement the Benchmark protocol:

    task: str                      # "detection" | "segmentation"; must equal the dataset's task
    name: str                      # the model config's `name` (metrics.json `model_name`)
    row: str | None                # manuscript row key (metrics.json `model`; falls back to name)

    fit(ctx: RunContext, spec: DatasetSpec) -> dict
        Train on spec's train split, validating on val each epoch; resume from ctx.run_dir/checkpoints/last.pt
        when present (the engine does this: spinebench.engine.fit). Must leave ctx.run_dir/checkpoints/best.pt
        and last.pt. Returns run facts merged into metrics.json, e.g. epochs, train_images_per_s, pretrained,
        pretrained_source, input_size, best_epoch (keys it does not know it may omit; "history" is dropped).

    test(ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict
        Load `checkpoint` (another run's best.pt for spinebench-eval), predict spec's test split, write the
        task's files into ctx.run_dir (detection: ground_truth.json, predictions.json, pr_curve.png;
        segmentation: summary.json, predictions/, overlays/) and return
        {"metrics": {...}, "params": int, "fps_batch1": float, "load": {"cpu": .., "gpu": ..},
         "speed": {"cpu"|"gpu": {"fps", "load", "device"}}, "test_precision": str, ...extra}: fps_batch1, load and
        speed as spinebench.speed.batch1_speed gives them (speed: the run's device, and on a GPU run the CPU too);
        test_precision saying what the test split was computed in ("float32").
        Extra keys (e.g. ultralytics_mAP50) are copied into metrics.json as they are.

RunContext carries run_dir, cache_dir, trainer (a validated spinebench.engine.TrainerConfig), device, seed and
the resolved config (stored inside checkpoints).

The pipeline writes config.yaml and env.json first, sets a stale metrics.json aside (given back if the redo
stops before it trains), and writes metrics.json LAST (atomic): a run folder is finished only when it exists.
Errors a user can cause surface as one line (see `run_guarded`); SPINEBENCH_DEBUG=1 re-raises them with the full
traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from spinebench.data.errors import DatasetError
from spinebench.data.check import refuse_unreadable
from spinebench.data.source import DatasetSpec
from spinebench.engine import (CHECKPOINT_DIR, ConfigError, TrainerConfig, check_same_settings, resolve_device,
                               seed_everything)
from spinebench.engine.config import check_trainer_key
from spinebench.runinfo import METRICS_FILE, collect_env, data_label, device_name, write_json

log = logging.getLogger("spinebench")

CONFIG_FILE, ENV_FILE = "config.yaml", "env.json"
if not OmegaConf.has_resolver("spinebench.cwd"):  # configs/paths/default.yaml's root_dir
    OmegaConf.register_new_resolver("spinebench.cwd", os.getcwd)
# The repository's configs/ (src/spinebench/../../configs). Absolute because Hydra resolves a relative
# config_path of an installed entry point against the package (pkg://), which cannot reach the repo root.
CONFIG_DIR = str(Path(os.environ.get("SPINEBENCH_CONFIGS", Path(__file__).resolve().parents[2] / "configs")))


@dataclass
class RunContext:
    run_dir: Path
    cache_dir: Path
    trainer: TrainerConfig
    device: torch.device
    seed: int
    config: dict[str, Any]


class UserError(Exception):
    """Something the user asked for cannot be done; printed as one line."""


# ---------------------------------------------------------------------------------------------------- helpers
def _hydra_config():
    """Hydra's own config of this run, or None outside a Hydra app (the Python API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except Exception:
        return None


NOT_RECIPE = ("paths.", "run_name=", "skip_finished=", "hydra.", "data=", "data.root=", "data.name=", "model=", "trainer=",
              "experiment=")  # where files go and which configs: the label names those already


def config_label(choices: dict[str, Any] | None = None, overrides: list[str] | None = None) -> str | None:
    """The recipe of the run, for the results' traceability table: the experiment file when one was used, else
    model + trainer, then the command-line overrides that change training (not where files go)."""
    hydra = _hydra_config()
    choices = (dict(hydra.runtime.choices) if hydra else {}) if choices is None else choices
    overrides = (list(hydra.overrides.task) if hydra else []) if overrides is None else overrides
    if choices.get("experiment"):
        label = f"experiment/{choices['experiment']}.yaml"
        if choices.get("trainer") not in (None, "default"):  # a preset beside it (the experiment's keys win over it)
            label += f" + trainer/{choices['trainer']}.yaml"
    elif choices.get("model"):
        label = f"model/{choices['model']}.yaml + trainer/{choices.get('trainer', 'default')}.yaml"
    else:
        return None
    recipe = [o for o in overrides if not o.lstrip("+~").startswith(NOT_RECIPE)]
    return label + (" " + " ".join(recipe) if recipe else "")


def refuse_smoke_under_an_experiment() -> None:
    """`experiment=<e> trainer=smoke` ran the experiment's epochs and batch size, in the folder of the
    experiment's own run: an experiment's trainer keys come after the preset's and win. Refused unless the command
    names the run (trainer.name), so a smoke run never lands in, and then blocks, the real row's folder."""
    hydra = _hydra_config()
    choices = dict(hydra.runtime.choices) if hydra else {}
    if choices.get("trainer") != "smoke" or not choices.get("experiment"):
        return
    if any(o.lstrip("+~").startswith("trainer.name=") for o in hydra.overrides.task):
        return
    raise UserError(f"experiment={choices['experiment']} sets its own trainer (epochs, batch size, and the name of "
                    f"its run folder), which wins over trainer=smoke: for a smoke run give model=<name> trainer=smoke, "
                    f"or add trainer.name=smoke trainer.epochs=1 trainer.batch_size=2")


def _instantiate(node: DictConfig, what: str):
    from hydra.utils import instantiate

    if node is None or "_target_" not in node:
        raise UserError(f"no {what} selected: add {what}=<name> (see configs/{what}/)")
    return instantiate(node, _convert_="all")


def _check_task(benchmark: Any, spec: DatasetSpec) -> None:
    for attribute in ("task", "name", "fit", "test"):
        if not hasattr(benchmark, attribute):
            raise UserError(f"{type(benchmark).__name__} does not implement the Benchmark protocol (no {attribute!r})")
    if benchmark.task != spec.task:
        raise UserError(f"model {benchmark.name} is a {benchmark.task} model but data {spec.name} is a {spec.task} dataset")
    refuse_unreadable(spec.root, spec.task, ("test",))  # a missing or broken test split: before any training


PREVIOUS = ".previous"  # suffix of a finished run's result files kept aside while the run is redone


def _prepare_run_dir(cfg: DictConfig) -> Path:
    """The run folder. A finished one being redone is unfinished until its new metrics.json lands: the old one,
    with the config.yaml and env.json that describe it, is kept aside for `_settle_previous`."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / METRICS_FILE).exists():
        for name in (CONFIG_FILE, ENV_FILE):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, run_dir / (name + PREVIOUS))
        (run_dir / METRICS_FILE).replace(run_dir / (METRICS_FILE + PREVIOUS))
    return run_dir


def _last_checkpoints(run_dir: Path) -> list[Path]:
    """The engine's checkpoints/last.pt, or ultralytics' yolo/weights/last.pt: what the next start resumes."""
    return [*run_dir.glob("*/last.pt"), *run_dir.glob("*/weights/last.pt")]


def _holds_a_trained_epoch(run_dir: Path) -> bool:
    return bool(_last_checkpoints(run_dir))


def _untouched_since_finished(run_dir: Path) -> bool:
    """No checkpoint newer than the finished result kept aside: a redo killed before it trained anything."""
    kept = run_dir / (METRICS_FILE + PREVIOUS)
    return kept.exists() and all(p.stat().st_mtime_ns <= kept.stat().st_mtime_ns for p in _last_checkpoints(run_dir))


def _settle_previous(run_dir: Path, restore: bool) -> None:
    """Drop the files `_prepare_run_dir` kept aside, or, for a redo that failed before it trained anything (a
    refused resume, a broken training image, a weights file gone), put them back: the finished result stands."""
    kept = [run_dir / (name + PREVIOUS) for name in (METRICS_FILE, CONFIG_FILE, ENV_FILE)]
    if restore and kept[0].exists() and not (run_dir / METRICS_FILE).exists():
        for path in kept:
            if path.exists():
                path.replace(path.with_name(path.name.removesuffix(PREVIOUS)))
        log.warning("%s: nothing was trained, so the run keeps its finished result (%s)", run_dir, METRICS_FILE)
    for path in kept:
        path.unlink(missing_ok=True)


def _trainer(cfg: DictConfig, node: Any = None) -> TrainerConfig:
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise UserError(f"seed must be an integer, got {cfg.seed!r}")
    return TrainerConfig.from_config(cfg.trainer if node is None else node, seed=cfg.seed)


def _start_run(cfg: DictConfig, trainer: TrainerConfig, model_node: Any, resolved: dict) -> tuple[DatasetSpec, Any, RunContext]:
    """What training and evaluation share: seed, device, data, model, and a run folder holding config.yaml and
    env.json before any work starts."""
    seed_everything(trainer.seed, trainer.deterministic)
    device = resolve_device(trainer.device)
    spec: DatasetSpec = _instantiate(cfg.data, "data")
    benchmark = _instantiate(model_node, "model")
    _check_task(benchmark, spec)
    run_dir = _prepare_run_dir(cfg)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    write_json(run_dir / ENV_FILE, collect_env(spec, device))
    log.info("run %s: %s on %s [%s], device %s", run_dir, benchmark.name, spec.name, spec.label, device_name(device))
    ctx = RunContext(run_dir=run_dir, cache_dir=Path(cfg.paths.cache_dir), trainer=trainer, device=device,
                     seed=trainer.seed, config=resolved)
    return spec, benchmark, ctx


def _write_metrics(run_dir: Path, spec: DatasetSpec, benchmark: Any, device: torch.device, facts: dict, result: dict,
                   started: float, config: str | None, checkpoint_run: str | None) -> dict:
    facts = {k: v for k, v in facts.items() if k != "history"}
    result = dict(result)
    data = data_label(spec)
    doc = {
        "task": spec.task,
        "model": getattr(benchmark, "row", None) or benchmark.name,
        "model_name": benchmark.name,
        "split": "test",
        "data": {"name": spec.name, "kind": data.get("kind"), "label": spec.label, "stamp": data.get("stamp"),
                 "domain": data.get("domain")},
        "metrics": result.pop("metrics"),
        "params": result.pop("params", None),
        "fps_batch1": result.pop("fps_batch1", None),
        "load": result.pop("load", None),
        "speed": result.pop("speed", None),  # {"cpu"|"gpu": {"fps", "load", "device"}}: each processor timed
        "device": device_name(device),
        "test_precision": result.pop("test_precision", None),  # as the benchmark's test() scored it
        "epochs": facts.pop("epochs", None),
        "input_size": result.pop("input_size", None) or facts.pop("input_size", None),
        "pretrained": facts.pop("pretrained", None),
        "pretrained_source": facts.pop("pretrained_source", None),
        "train_images_per_s": facts.pop("train_images_per_s", None),
        "wall_time_s": time.perf_counter() - started,
        "config": config,
        "checkpoint_run": checkpoint_run,
    }
    facts.pop("input_size", None)
    doc.update({k: v for k, v in facts.items() if k not in doc})
    doc.update({k: v for k, v in result.items() if k not in doc})
    write_json(run_dir / METRICS_FILE, doc)
    return doc


# ---------------------------------------------------------------------------------------------------- train
def train(cfg: DictConfig) -> dict:
    """Train + test one model on one dataset; returns the metrics.json document."""
    started = time.perf_counter()
    refuse_smoke_under_an_experiment()
    resolved, run_dir = OmegaConf.to_container(cfg, resolve=True), Path(cfg.paths.output_dir)
    trainer = _trainer(cfg)  # a mistyped value is named as such, not as a setting that differs from the saved run's
    saved = run_dir / CONFIG_FILE
    if saved.is_file() and _holds_a_trained_epoch(run_dir):  # before config.yaml is written anew, and before a
        # finished run is kept: under other settings it is neither resumed nor passed off as this command's
        try:
            check_same_settings(saved, OmegaConf.to_container(OmegaConf.load(saved), resolve=True), resolved)
        except ConfigError:  # a mistyped model setting is named as such, not as a changed one
            benchmark = _instantiate(cfg.model, "model")
            if hasattr(benchmark, "check_settings"):  # a model that builds its network only in fit()
                benchmark.check_settings()
            raise
    finished = run_dir / METRICS_FILE
    if cfg.get("skip_finished") and finished.is_file():  # `make reproduce` re-runs a sweep: keep finished rows
        try:
            doc = json.loads(finished.read_text())
            log.info("skipping %s: already finished (%s exists; skip_finished=false redoes it)", finished.parent,
                     METRICS_FILE)
            return doc
        except ValueError as error:  # its checkpoints are whole: resume (nothing left to train) and test again
            log.warning("%s is unreadable (%s): the run is tested again from its checkpoint", finished, error)
    _settle_previous(run_dir, restore=_untouched_since_finished(run_dir))  # left by a redo that was killed
    try:
        spec, benchmark, ctx = _start_run(cfg, trainer, cfg.model, resolved)
        facts = benchmark.fit(ctx, spec) or {}
    except BaseException:
        _settle_previous(run_dir, restore=_untouched_since_finished(run_dir))
        raise
    _settle_previous(run_dir, restore=False)  # trained or resumed: the old result no longer describes the folder
    result = benchmark.test(ctx, spec, ctx.run_dir / CHECKPOINT_DIR / "best.pt")
    doc = _write_metrics(ctx.run_dir, spec, benchmark, ctx.device, facts, result, started, config_label(), None)
    log.info("%s on %s test: %s", benchmark.name, spec.name,
             ", ".join(f"{k} {v:.4f}" for k, v in doc["metrics"].items() if isinstance(v, float)))
    return doc


# ---------------------------------------------------------------------------------------------------- evaluate
def checkpoint_run_folder(ckpt: Any) -> Path:
    """The training run a `ckpt=` names: its folder, or its checkpoints/best.pt. Another file is refused: the
    evaluation scores best.pt, and its folder is named after the run."""
    path = Path(str(ckpt)).expanduser()
    if path.suffix != ".pt":
        return path
    if path.name != "best.pt" or path.parent.name != CHECKPOINT_DIR:
        raise UserError(f"ckpt={ckpt}: spinebench-eval scores a run's {CHECKPOINT_DIR}/best.pt; give the run's folder")
    return path.parent.parent


def evaluate(cfg: DictConfig) -> dict:
    """Score a finished run's best checkpoint on another dataset's test split (no training)."""
    started = time.perf_counter()
    if cfg.get("data") is None:
        raise UserError("no data selected: add data=<name> (see configs/data/), the dataset whose test split to score")
    source = checkpoint_run_folder(cfg.ckpt)
    checkpoint = source / CHECKPOINT_DIR / "best.pt"
    if not (source / CONFIG_FILE).is_file() or not checkpoint.is_file():
        raise UserError(f"ckpt={cfg.ckpt}: not a finished spinebench run folder (needs {CONFIG_FILE} and "
                        f"{CHECKPOINT_DIR}/best.pt)")
    source_metrics = source / METRICS_FILE
    if not source_metrics.is_file():  # killed or still training: its best.pt is not the run's final best
        raise UserError(f"ckpt={cfg.ckpt}: the run is unfinished (no {METRICS_FILE}); run its training command "
                        f"again to finish it, then evaluate it")
    saved = OmegaConf.load(source / CONFIG_FILE)
    trainer_node = OmegaConf.to_container(saved.trainer, resolve=True)
    given = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_node.update({k: v for k, v in given.items() if v is not None})
    trainer_node["limit_test_images"] = given.get("limit_test_images")  # never the training run's smoke limit
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["checkpoint_config"] = OmegaConf.to_container(saved, resolve=True)
    spec, benchmark, ctx = _start_run(cfg, _trainer(cfg, trainer_node), saved.model, resolved)
    _settle_previous(ctx.run_dir, restore=False)  # an evaluation redone is scored anew: nothing to keep
    result = benchmark.test(ctx, spec, checkpoint)
    facts = {}
    try:
        previous = json.loads(source_metrics.read_text())
        facts = {k: previous.get(k) for k in ("epochs", "pretrained", "pretrained_source", "train_images_per_s",
                                              "config")}
    except ValueError as error:  # the training run's facts only: the scores above do not depend on them
        log.warning("%s is unreadable (%s): this evaluation records none of its training facts", source_metrics,
                    error)
    config = facts.pop("config", None)
    facts["trained_on"] = _training_data(source, saved)
    return _write_metrics(ctx.run_dir, spec, benchmark, ctx.device, facts, result, started, config, str(source.resolve()))


def _training_data(source: Path, saved: DictConfig) -> dict[str, Any]:
    """The data block of the run that trained the checkpoint (its env.json: the provenance that run found), else
    what its config says; a model trained on a phantom is labelled so wherever it is scored."""
    try:
        data = json.loads((source / ENV_FILE).read_text()).get("data") or {}
    except (OSError, ValueError, AttributeError):
        data = {}
    if not data.get("kind"):
        phantom = OmegaConf.select(saved, "data.phantom") is not None
        data = {"name": OmegaConf.select(saved, "data.name"), "kind": "phantom" if phantom else "unknown"}
    return {key: data.get(key) for key in ("name", "kind", "label", "stamp")}


# ---------------------------------------------------------------------------------------------------- errors
USER_ERRORS = (UserError, ConfigError, DatasetError, FileNotFoundError, OmegaConfBaseException, ValueError)


def _root_cause(error: BaseException) -> BaseException:
    """Unwrap Hydra's InstantiationException (and other wrappers) down to the error that explains it."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = error.__cause__ or (error.__context__ if not error.__suppress_context__ else None)
        if cause is None or type(error).__name__ not in ("InstantiationException", "HydraException", "ConfigCompositionException"):
            break
        error = cause
    return error


def _is_unknown_setting(error: BaseException) -> bool:
    """A builder called with a keyword it does not take: a model key added on the command line (`+model.foo=1`)
    or a misspelt one in a config file; the configs are what call the builders."""
    return isinstance(error, TypeError) and "got an unexpected keyword argument" in str(error)


def one_line(error: BaseException) -> str:
    if isinstance(error, MissingMandatoryValue) and error.full_key:  # OmegaConf's own names no remedy
        hint = (" (the folder of the release; or set the environment variable its configs/data file reads, and "
                "`spinebench data fetch` gets a release)") if error.full_key == "data.root" else ""
        return f"{error.full_key} is not set: add {error.full_key}=<value> to the command{hint}"
    text = " ".join(str(error).split()) or type(error).__name__
    if _is_unknown_setting(error):
        return f"{text}: a setting the model does not take (a model.<key> added with +, or misspelt in its config?)"
    return text if isinstance(error, (UserError, DatasetError, ConfigError)) else f"{type(error).__name__}: {text}"


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def _hydra_run_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under @hydra.main (tests call the tasks directly)
        return None


RUN_START_FILES = {".hydra", "config.yaml", "env.json"}  # what a run writes before its work (and its .log)


def drop_untouched_run_dir(run_dir: Path | None) -> bool:
    """Remove a run folder holding only what a run writes before its work (Hydra's .hydra/ and log, config.yaml,
    env.json): a command stopped by a user error before any checkpoint or result, and the data and outputs folders
    above it if they are left empty. A typo leaves no debris, and `spinebench report` no unfinished run to skip.
    True if removed."""
    if run_dir is None or not run_dir.is_dir() or any(p.name not in RUN_START_FILES and p.suffix != ".log"
                                                      for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        for folder in (run_dir.parent, run_dir.parent.parent):
            folder.rmdir()  # only succeeds when empty
    return True


CONFIG_GROUPS = ("data", "model", "trainer", "experiment", "paths")  # the choices a command line names by file
OTHER_SEARCH_PATHS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath")


def check_overrides(argv: list[str], program: str) -> None:
    """Refuse, in one line and exit 2 before Hydra composes anything, a `group=name` override that names no
    configs/<group>/<name>.yaml (Hydra's own message is twenty lines with its search path) and a `trainer.<key>=`
    override of a setting that does not exist (seven lines, suggesting `+trainer.<key>`). Sweep lists (`a,b`) are
    checked name by name; sweep functions (`glob(...)`), deletions (`~group`) and a command line that adds config
    folders of its own are left to Hydra."""
    if any(arg.startswith(OTHER_SEARCH_PATHS) for arg in argv):
        return
    for arg in argv:
        key, is_override, value = arg.partition("=")
        if is_override and key.startswith("trainer."):
            try:
                check_trainer_key(key.split(".")[1:])
            except ConfigError as error:
                _refuse(program, str(error))
        group = key.removeprefix("+")
        if not is_override or group not in CONFIG_GROUPS or any(c in value for c in "()[]'\""):
            continue
        folder = Path(CONFIG_DIR) / group
        for name in value.split(","):
            if name != "null" and not (folder / f"{name}.yaml").is_file():
                known = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
                _refuse(program, f"{group}={name}: no such config (configs/{group}/ has {', '.join(known)})")


def _refuse(program: str, message: str) -> None:
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(2)


FAILED_JOBS: list[str] = []  # the sweep's failed jobs (run folder: error), for exit_if_a_job_failed


def exit_if_a_job_failed(program: str) -> None:
    """After a sweep: exit 2 when any of its jobs failed, each named, so that a script (`make reproduce`) knows."""
    if FAILED_JOBS:
        for failed in FAILED_JOBS:
            print(f"{program}: error: {failed}", file=sys.stderr)
        print(f"{program}: error: {len(FAILED_JOBS)} job(s) of the sweep failed (the others ran)", file=sys.stderr)
        sys.exit(2)


def run_guarded(task: Callable[[DictConfig], dict], cfg: DictConfig, program: str) -> dict | None:
    """Run `task`; a user error prints one line and exits 2, an unexpected one 1 (traceback in the run's log).
    Inside a multirun a failed job is logged and the sweep goes on (returns None)."""
    try:
        return task(cfg)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - the point is to turn every failure into one clear line
        if os.environ.get("SPINEBENCH_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        cause = _root_cause(error)
        log.debug("full traceback:\n%s", "".join(traceback.format_exception(error)))
        message = one_line(cause)
        user = isinstance(cause, USER_ERRORS) or type(cause).__name__ == "WeightsError" or _is_unknown_setting(cause)
        if _is_multirun():  # the job's folder stays: its log holds the error the sweep's last lines point to
            log.error("job failed (%s), the sweep continues: %s", program, message)
            if not user:
                log.error("traceback:\n%s", "".join(traceback.format_exception(error)))
            FAILED_JOBS.append(f"{_hydra_run_dir()}: {message}")
            return None
        if user:
            drop_untouched_run_dir(_hydra_run_dir())
        else:
            log.error("traceback:\n%s", "".join(traceback.format_exception(error)))
        print(f"{program}: error: {message}" + ("" if user else "  (SPINEBENCH_DEBUG=1 shows the traceback)"),
              file=sys.stderr)
        sys.exit(2 if user else 1)
