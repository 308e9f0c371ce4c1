"""The manuscript's numbers (`benchmarks/manuscript.yaml`) as Python objects: the report's list of rows, in
the file's order, and the paper's value of every cell it compares with.

`load_manuscript()` validates the file on load (every row has every reported metric, loads are percentages, a
row key can name a model config's `row`) so a typo there fails loudly instead of producing an empty column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spinebench.errors import ConfigError
from spinebench.report.implantability import ACCURACY_METRIC, scores

DEFAULT_MANUSCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "manuscript.yaml"
PROCESSORS = ("cpu", "gpu")
ROW_KEY = re.compile(r"[a-z][a-z0-9_]*")  # what a model config's `row` (a run's record: model) can hold


class ManuscriptError(ConfigError):
    """benchmarks/manuscript.yaml is missing something the report needs."""


@dataclass(frozen=True)
class Speed:
    fps: float
    load: float  # fraction 0-1 (the yaml keeps the printed percent)
    implantability: float  # as printed


@dataclass(frozen=True)
class Row:
    key: str
    task: str
    name: str
    backbone: str
    params: int
    metrics: dict[str, float]
    human: dict[str, float]
    speed: dict[str, Speed]
    training: dict[str, Any]
    input_size: int | None
    source: str

    @property
    def accuracy(self) -> float:
        return self.metrics[ACCURACY_METRIC[self.task]]


@dataclass(frozen=True)
class TaskTable:
    task: str
    source: str
    metrics: dict[str, str]  # our metric key -> the paper's column name
    reported: tuple[str, ...]
    reported_human: tuple[str, ...]
    rows: dict[str, Row]  # in the paper's (the file's) order: the order of every table of the report

    def label(self, metric: str) -> str:
        return self.metrics.get(metric, metric)


@dataclass(frozen=True)
class Manuscript:
    path: Path
    citation: dict[str, Any]
    dataset: dict[str, Any]
    implantability: dict[str, Any]
    tasks: dict[str, TaskTable] = field(default_factory=dict)

    def row(self, task: str, key: str) -> Row | None:
        return self.tasks[task].rows.get(key)

    @property
    def short_citation(self) -> str:
        c = self.citation
        return f"{c['authors']}, {c['journal']} {c['year']}, doi {c['doi']}"

    def recomputed_implantability(self, task: str, processor: str) -> dict[str, float | None]:
        """The scores re-derived from the rows' A, FPS and load with our formula (tests compare them to the printed ones)."""
        table = self.tasks[task]
        return scores(
            {
                k: {"accuracy": r.accuracy, "fps": r.speed[processor].fps, "load": r.speed[processor].load}
                for k, r in table.rows.items()
                if processor in r.speed
            }
        )


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None and key not in ("loss",):
        raise ManuscriptError(f"{where}: '{key}' is missing")
    return mapping[key]


def load_manuscript(path: str | Path | None = None) -> Manuscript:
    path = Path(path) if path is not None else DEFAULT_MANUSCRIPT
    if not path.is_file():
        raise ManuscriptError(f"{path}: manuscript table not found (pass --manuscript benchmarks/manuscript.yaml)")
    raw = yaml.safe_load(path.read_text())
    tasks: dict[str, TaskTable] = {}
    for task, block in _require(raw, "tasks", str(path)).items():
        where = f"{path}: tasks.{task}"
        reported = tuple(_require(block, "reported", where))
        reported_human = tuple(block.get("reported_human") or ())
        rows = {}
        for key, r in _require(block, "rows", where).items():
            rw = f"{where}.rows.{key}"
            if not ROW_KEY.fullmatch(str(key)):
                raise ManuscriptError(f"{rw}: a row key is a model config's `row`: lower case, digits and _")
            metrics = {k: float(v) for k, v in _require(r, "metrics", rw).items()}
            human = {k: float(v) for k, v in (r.get("human") or {}).items()}
            for m in reported:
                if m not in metrics:
                    raise ManuscriptError(f"{rw}: reported metric '{m}' has no value")
            for m in reported_human:
                if m not in human:
                    raise ManuscriptError(f"{rw}: reported human metric '{m}' has no value")
            speed = {}
            for proc, s in (r.get("speed") or {}).items():
                if proc not in PROCESSORS:
                    raise ManuscriptError(f"{rw}.speed: unknown processor '{proc}'")
                pct = float(_require(s, "load_pct", f"{rw}.speed.{proc}"))
                if not 0 <= pct <= 100:
                    raise ManuscriptError(f"{rw}.speed.{proc}: load_pct {pct} is not a percentage")
                speed[proc] = Speed(
                    fps=float(_require(s, "fps", f"{rw}.speed.{proc}")),
                    load=pct / 100.0,
                    implantability=float(_require(s, "implantability", f"{rw}.speed.{proc}")),
                )
            rows[key] = Row(
                key=key,
                task=task,
                name=str(_require(r, "name", rw)),
                backbone=str(r.get("backbone", "")),
                params=int(_require(r, "params", rw)),
                metrics=metrics,
                human=human,
                speed=speed,
                training=dict(r.get("training") or {}),
                input_size=r.get("input_size"),
                source=str(_require(r, "source", rw)),
            )
        tasks[task] = TaskTable(
            task=task,
            source=str(block.get("source", "")),
            metrics=dict(block.get("metrics") or {}),
            reported=reported,
            reported_human=reported_human,
            rows=rows,
        )
    return Manuscript(
        path=path,
        citation=dict(raw.get("citation") or {}),
        dataset=dict(raw.get("dataset") or {}),
        implantability=dict(raw.get("implantability") or {}),
        tasks=tasks,
    )
