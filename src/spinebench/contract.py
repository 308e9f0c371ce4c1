"""What a model adapter and the runner agree on: the Benchmark base class, the RunContext it is handed, and
the RunRecord (metrics.json) it helps write.

Adapters (spinebench.detection, spinebench.segmentation) import this module, never the runner
(spinebench.pipeline). The record's keys are documented once, here; docs/architecture.md's key list is
checked against `RunRecord` by a test.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from spinebench.data.source import DatasetSpec
    from spinebench.engine.config import TrainerConfig

CHECKPOINT_DIR = "checkpoints"
# Given the flattened saved and current configs of a run being resumed, the keys that may differ between them
# (or a ConfigError when they must not be resumed into each other).
ResumeRule = Callable[[dict[str, Any], dict[str, Any]], Iterable[str]]


def engine_checkpoints(run_dir: Path) -> list[Path]:
    """What spinebench.engine.fit resumes from, when it is there."""
    return [path for path in [run_dir / CHECKPOINT_DIR / "last.pt"] if path.is_file()]


@dataclass
class RunContext:
    """Where a run writes and what it runs with; `config` (the resolved Hydra config) goes into checkpoints."""

    run_dir: Path
    cache_dir: Path
    trainer: TrainerConfig
    device: torch.device
    seed: int
    config: dict[str, Any]
    resume_rules: tuple[ResumeRule, ...] = ()  # keys a resume may change, from the runner, data and model

    def fit(self, module: Any, train_loader: Any, val_loader: Any, monitor: str, config: dict | None = None) -> Any:
        """spinebench.engine.fit in this run's folder, under its trainer settings and resume rules; `config` (what
        the checkpoints record) is the run's config unless an adapter adds keys to it. Returns the FitResult."""
        from spinebench.engine import fit  # the engine imports this module

        return fit(
            module,
            train_loader,
            val_loader,
            self.trainer,
            self.run_dir,
            config=self.config if config is None else config,
            monitor=monitor,
            resume_rules=self.resume_rules,
        )


class Benchmark:
    """One model family behind `spinebench-train` / `spinebench-eval`; a model config's `_target_` builds it.

    fit() trains on spec's train split (validating on val each epoch), resumes from what `resume_files` names
    when present, leaves checkpoints/best.pt, and returns facts for the record (epochs, train_images_per_s,
    pretrained, pretrained_source, input_size, best_epoch, ...). test() loads `checkpoint` (another run's best.pt
    for spinebench-eval), scores spec's test split, writes the task's files into ctx.run_dir and returns
    {"metrics", "params", "fps_batch1", "load", "speed", "test_precision", "test_images", ...extra}.
    """

    task: ClassVar[str] = ""  # "detection" | "segmentation": must equal the dataset's task
    name: str  # the model config's `name` (record: model_name)
    row: str | None = None  # the manuscript row it fills (record: model; defaults to name)

    def fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        raise NotImplementedError

    def test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict[str, Any]:
        raise NotImplementedError

    def resume_files(self, run_dir: Path) -> list[Path]:
        """The files a restart resumes from: a run folder holding one has trained at least one epoch."""
        return engine_checkpoints(run_dir)

    def resume_rules(self) -> tuple[ResumeRule, ...]:
        """Model settings a resume may change (e.g. where its pretrained file was found)."""
        return ()

    def check_settings(self) -> None:
        """Raise ConfigError for a setting that is only checked when the network is built (in fit())."""


SCHEMA_VERSION = 2


@dataclass
class RunRecord:
    """metrics.json: one finished run (training + test, or an evaluation of another run's checkpoint).

    A run folder is finished exactly when its metrics.json exists; it is written last, atomically.
    """

    task: str  # detection | segmentation
    model: str  # the manuscript row (e.g. yolov8m)
    model_name: str  # the model config's name (e.g. yolov8m, unet_light)
    data: dict[str, Any]  # name, task, kind (real|phantom), label, domain, stamp, root, verified, note
    metrics: dict[str, Any]  # the task's test metrics (detection mAP50...; segmentation mean_dice, per class...)
    schema: int = SCHEMA_VERSION
    split: str = "test"
    params: int | None = None
    fps_batch1: float | None = None  # batch-1 images/s on `device`
    load: dict[str, float | None] | None = None  # {"cpu"|"gpu": fraction busy while timed}
    speed: dict[str, Any] | None = None  # {"cpu"|"gpu": {"fps", "load", "device"}}: each processor timed
    device: str | None = None  # hardware label ("NVIDIA H200", "cpu (model, arch, N threads)")
    test_precision: str | None = None  # what the test split was computed in ("float32")
    test_images: int | None = None  # images scored
    test_split_images: int | None = None  # images in the whole test split (more: a partial, smoke-run score)
    epochs: int | None = None
    seed: int | None = None  # the training seed (an evaluation: the training run's), what the report averages over
    smoke_steps: int | None = None  # trained under trainer.limit_train_batches: at most this many steps (a smoke run)
    input_size: list[int] | None = None
    pretrained: bool | None = None
    pretrained_source: str | None = None
    train_images_per_s: float | None = None
    wall_time_s: float | None = None
    config: str | None = None  # the recipe: experiment or model + trainer file, and its overrides
    checkpoint_run: str | None = None  # an evaluation: the training run whose best.pt it scored
    trained_on: dict[str, Any] | None = None  # an evaluation: the data block of the training run
    git: dict[str, Any] = field(default_factory=dict)  # {"commit", "dirty"} of the code that ran
    extra: dict[str, Any] = field(default_factory=dict)  # the adapter's own keys (best_epoch, ultralytics_mAP50...)

    @classmethod
    def assemble(
        cls,
        spec: DatasetSpec,
        benchmark: Benchmark,
        device: str,
        facts: dict[str, Any],
        result: dict[str, Any],
        started: float,
        **run: Any,
    ) -> RunRecord:
        """The record of a run from what fit() and test() returned; `run` sets config, checkpoint_run, git..."""
        facts = {k: v for k, v in facts.items() if k != "history"}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in {**facts, **result}.items() if k in known and v is not None}
        extra = {k: v for k, v in {**facts, **result}.items() if k not in known}
        return cls(
            task=spec.task,
            model=benchmark.row or benchmark.name,
            model_name=benchmark.name,
            data=spec.describe(),
            device=device,
            wall_time_s=time.perf_counter() - started,
            **{**values, **run},
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        """The file's object: the fields, then the adapter's extra keys beside them (flat, as before)."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        doc.update({k: v for k, v in self.extra.items() if k not in doc})
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any], env: dict[str, Any] | None = None) -> RunRecord:
        """A record read back; one written before the schema goes through `migrate` first."""
        doc = migrate(doc, env)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [key for key in ("task", "model", "model_name", "data", "metrics") if key not in doc]
        if missing:
            raise ValueError(f"has no '{missing[0]}'")
        if not isinstance(doc["metrics"], dict):
            raise ValueError("has a 'metrics' that is not an object")
        return cls(
            **{k: v for k, v in doc.items() if k in known}, extra={k: v for k, v in doc.items() if k not in known}
        )

    @property
    def source(self) -> str:
        """Where the data came from, in one word the tables group by: real, unverified, phantom or unknown. A model
        trained on a phantom makes its evaluations phantom results wherever they are scored."""
        if self.data.get("kind") == "phantom" or (self.trained_on or {}).get("kind") == "phantom":
            return "phantom"
        if self.data.get("kind") != "real":
            return "unknown"
        return "real" if self.data.get("verified") is True else "unverified"


def migrate(doc: dict[str, Any], env: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metrics.json of any schema as the current one. Before schema 2 (no `schema` key) the data provenance
    (root, verified, note) and the commit lived in env.json, the data's domain and the test split's size were
    not recorded."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("schema", 1) >= SCHEMA_VERSION:
        return doc
    env = env if isinstance(env, dict) else {}
    data = {**(env.get("data") or {}), **(doc.get("data") or {})}
    stamp = data.get("stamp") or {}
    data.setdefault(
        "domain", stamp.get("domain") or ("human" if "human" in str(data.get("name", "")).lower() else "porcine")
    )
    counts = stamp.get("counts") or {}
    metrics = doc.get("metrics") if isinstance(doc.get("metrics"), dict) else {}
    return {
        **doc,
        "schema": SCHEMA_VERSION,
        "data": data,
        "model_name": doc.get("model_name") or doc.get("model"),
        "git": doc.get("git") or env.get("git") or {},
        "device": doc.get("device") or env.get("device"),
        "test_images": doc.get("test_images", metrics.get("n_images")),
        "test_split_images": doc.get("test_split_images", counts.get("test")),
    }
