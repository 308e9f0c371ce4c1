"""docs/architecture.md is metrics.json's contract for a reader of the run folders; these check runs against it."""

from __future__ import annotations

import re
from pathlib import Path

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def documented_record_keys() -> tuple[list[str], set[str]]:
    """docs/architecture.md's run-record table (its key column, in order) and every key its section names."""
    section = ARCHITECTURE.read_text().split("## The run record", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    return table, set(re.findall(r"`(\w+)`", section))


def check_metrics_keys_documented(metrics: dict) -> None:
    """Every key of the table is written by every run, and every other key a run writes is an adapter key the
    section names."""
    table, named = documented_record_keys()
    assert set(table) <= set(metrics), f"documented but not written: {sorted(set(table) - set(metrics))}"
    assert not set(metrics) - named, f"written but not in docs/architecture.md: {sorted(set(metrics) - named)}"
