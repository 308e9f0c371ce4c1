"""Where a run's data came from, as one value: what every table heading, banner, CSV column and plot legend of
the report says about it.

A result on a phantom must never pass for a reproduction, nor real data that was not checked against the
release manifest for verified data: the four kinds (`RunRecord.source`) keep them apart, and a run's group (the
table it sits in) names its kind, so two kinds never share a table or an FPS_best.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# the order tables come in: what a reader trusts most first
KINDS = ("real", "unverified", "unknown", "phantom")


@dataclass(frozen=True)
class DataSource:
    kind: str  # real | unverified | phantom | unknown
    name: str  # the dataset's name ("?" when no data block names it)
    label: str  # what the data block says it is, with the phantom-trained warning where it applies
    domain: str  # porcine | human (the zero-shot side)
    recorded: str = ""  # the data block's own kind ("real", "phantom"; "" when it has none)
    trained_on_phantom: bool = False  # an evaluation of a checkpoint trained on a phantom
    unverified_reason: str = ""  # why real data counts as unverified ("" otherwise)

    @classmethod
    def of(cls, kind: str, data: dict[str, Any], trained_on: dict[str, Any] | None = None) -> DataSource:
        """From a record's `source` and data block (and, for an evaluation, its training run's data block)."""
        recorded = str(data.get("kind") or "")
        trained_on_phantom = (trained_on or {}).get("kind") == "phantom" and recorded != "phantom"
        stamp = data.get("stamp") if isinstance(data.get("stamp"), dict) else {}
        source = cls(
            kind=kind,
            name=str(data.get("name") or "?"),
            label="",
            domain=str(data.get("domain") or stamp.get("domain") or "porcine"),
            recorded=recorded,
            trained_on_phantom=trained_on_phantom,
        )
        reason = ""
        if kind == "unverified":
            reason = (
                "no verification recorded (the data block does not say it was checked)"
                if "verified" not in data
                else str(data.get("note") or "its data block gives no reason")
            )
        label = (
            str(data["label"])
            if data.get("label")
            else {
                "phantom": "PHANTOM - synthetic, not the Kumar et al. release",
                "unknown": "unknown data source (no data block in metrics.json or env.json)",
            }.get(kind, f"{source.described} data")
        )
        if trained_on_phantom:
            label += "; the model was trained on a PHANTOM"
        return replace(source, label=label, unverified_reason=reason)

    @property
    def described(self) -> str:
        """The data block's kind as the CSV's data_kind gives it ('real, model trained on a phantom')."""
        kind = self.recorded or "unknown"
        return f"{kind}, model trained on a phantom" if self.trained_on_phantom else kind

    @property
    def group(self) -> str:
        """The table a run sits in: dataset name and kind, e.g. 'det_real (real, UNVERIFIED)'. It names the kind,
        so the runs of one group share it."""
        if self.kind == "unknown":
            return f"{self.name} (unknown data source)"
        return f"{self.name} ({self.described}{', UNVERIFIED' if self.kind == 'unverified' else ''})"

    @property
    def order(self) -> tuple[int, str]:
        return KINDS.index(self.kind), self.group

    @property
    def is_phantom(self) -> bool:
        return self.kind == "phantom"

    def heading(self, human: bool = False) -> str:
        """What a table heading says of the data."""
        if self.kind == "phantom":
            return f"PHANTOM (synthetic{' human-like' if human else ''}) - not a reproduction"
        if self.kind == "unknown":
            return "unknown data source"
        return ("human data" if human else "real data") + (", UNVERIFIED" if self.kind == "unverified" else "")

    @property
    def legend(self) -> str:
        """A plot's legend entry for the group's runs."""
        prefix = {
            "phantom": "ours, PHANTOM",
            "unknown": "ours, unknown data source",
            "unverified": "ours, UNVERIFIED",
            "real": "ours",
        }[self.kind]
        return f"{prefix}: {self.group}"

    @property
    def ours(self) -> str:
        """The column label of our numbers: a phantom's say so in every cell header."""
        return "ours (PHANTOM)" if self.is_phantom else "ours"
