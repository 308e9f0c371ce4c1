"""benchmarks/manuscript.yaml holds every number of the manuscript's tables, and our implantability formula
re-derives the paper's printed scores from the yaml's A, FPS and load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from spinebench.report.implantability import implantability, scores
from spinebench.report.manuscript import (
    DEFAULT_MANUSCRIPT,
    ManuscriptError,
    load_manuscript,
)

REPO = Path(__file__).resolve().parents[1]
# the project's reference note (outside the repository; the transcription check is skipped where it is absent)
REFERENCE = next(
    (
        p
        for p in (REPO.parent / "shared/reference/manuscript.md", REPO / "shared/reference/manuscript.md")
        if p.is_file()
    ),
    None,
)


@pytest.fixture(scope="module")
def paper():
    return load_manuscript()


def test_rows_and_fields(paper):
    """The paper's two results tables: 7 detectors and 6 segmenters, each row with every field the report uses.
    The file is the list of rows (and their order) every table of the report follows."""
    assert DEFAULT_MANUSCRIPT == REPO / "benchmarks" / "manuscript.yaml"
    raw = yaml.safe_load(DEFAULT_MANUSCRIPT.read_text())
    assert {task: len(table.rows) for task, table in paper.tasks.items()} == {"detection": 7, "segmentation": 6}
    for task, table in paper.tasks.items():
        assert list(table.rows) == list(raw["tasks"][task]["rows"])  # the file's order
        for row in table.rows.values():
            assert row.source.startswith("Sci Rep 2025")
            assert row.params > 1_000_000 and row.backbone
            assert set(row.speed) == {"cpu", "gpu"}
            assert {"lr", "batch", "epochs", "optimizer"} <= set(row.training)
            assert row.input_size in (128, 256, 300, 320, 512)
            assert set(table.reported) <= set(row.metrics)
    assert paper.tasks["detection"].reported == ("mAP50", "mAP50_95", "AR100")
    assert paper.tasks["segmentation"].reported_human == ("mIoU", "mean_dice", "cord_iou", "cord_dice")
    assert paper.citation["doi"] == "10.1038/s41598-025-16275-z"


def test_internal_consistency(paper):
    raw = yaml.safe_load(DEFAULT_MANUSCRIPT.read_text())
    head = raw["citation"]["headline"]
    assert paper.row("detection", "yolov8m").metrics["mAP50_95"] == head["yolov8m_mAP50_95"]
    assert paper.row("segmentation", "deeplabv3").metrics["mean_dice"] == head["deeplabv3_porcine_mean_dice"]
    assert paper.row("segmentation", "samed").human["mean_dice"] == head["samed_human_mean_dice"]
    for task in ("detection", "segmentation"):
        d = raw["dataset"][task]
        assert d["pre_injury"]["images"] + d["post_injury"]["images"] == d["images"]
    seg = raw["dataset"]["segmentation"]
    assert sum(seg["split"].values()) == seg["images"]
    classes = seg["classes"]
    assert [c["index"] for c in classes] == list(range(10))
    assert max(c["images"] for c in classes) == seg["images"]  # cord and dorsal space are in every image
    assert 1.9e9 < sum(c["pixels"] for c in classes) <= seg["images"] * 690 * 275
    assert next(c for c in classes if c["name"] == "hematoma")["images"] == seg["post_injury"]["images"]


def test_implantability_reproduces_the_printed_scores(paper):
    tolerance = paper.implantability["tolerance"]
    known = {(d["task"], d["row"], d["processor"]) for d in paper.implantability["known_discrepancies"]}
    checked = 0
    for task, table in paper.tasks.items():
        for proc in ("cpu", "gpu"):
            for key, score in paper.recomputed_implantability(task, proc).items():
                printed = table.rows[key].speed[proc].implantability
                if (task, key, proc) in known:
                    assert abs(score - printed) == pytest.approx(0.0154, abs=0.001)  # pinned: the paper's own gap
                    continue
                assert score == pytest.approx(printed, abs=tolerance), (task, key, proc)
                checked += 1
    assert checked == 25


def test_implantability_formula():
    assert implantability(0.8, 10.0, 20.0, 0.4) == pytest.approx(0.4 + 0.125 + 0.15)
    assert scores(
        {
            "a": {"accuracy": 1.0, "fps": 5, "load": 0.0},
            "b": {"accuracy": 0.0, "fps": 10, "load": 1.0},
            "c": {"accuracy": 0.5, "fps": None, "load": 0.2},
        }
    ) == {"a": 0.5 + 0.125 + 0.25, "b": 0.25, "c": None}
    with pytest.raises(ValueError):
        implantability(0.5, 1.0, 2.0, 33.0)  # load must be a fraction, not a percent


def test_bad_manuscript_fails_loudly(tmp_path):
    raw = yaml.safe_load(DEFAULT_MANUSCRIPT.read_text())
    del raw["tasks"]["detection"]["rows"]["ssd300"]["metrics"]["AR100"]
    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManuscriptError, match="ssd300.*AR100"):
        load_manuscript(bad)
    with pytest.raises(ManuscriptError, match="not found"):
        load_manuscript(tmp_path / "missing.yaml")
    raw = yaml.safe_load(DEFAULT_MANUSCRIPT.read_text())
    rows = raw["tasks"]["segmentation"]["rows"]
    rows["Swin-UNet"] = rows.pop("swin_unet")  # a display name where a model config's `row` belongs
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ManuscriptError, match="Swin-UNet: a row key is a model config's `row`"):
        load_manuscript(bad)


# ---------------------------------------------------------------- transcription vs the reference note
def _num(text: str) -> float:
    return float(text.replace(",", "").strip())


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    """Rows (cells, keyed by the first cell) of the Markdown tables whose header line starts with `header`."""
    rows, inside = {}, False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and not line.startswith("|"):
            inside = False
        if inside and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.skipif(REFERENCE is None, reason="shared/reference/manuscript.md not present")
def test_every_number_of_the_reference_tables(paper):
    text = REFERENCE.read_text()
    det, seg = paper.tasks["detection"], paper.tasks["segmentation"]
    det_rows = {r[0]: r for r in _table_rows(text, "| model |").values() if r[0] in {x.name for x in det.rows.values()}}
    seg_rows = {r[0]: r for r in _table_rows(text, "| model |").values() if r[0] in {x.name for x in seg.rows.values()}}
    assert len(det_rows) == 7 and len(seg_rows) == 6
    for row in det.rows.values():
        c = det_rows[row.name]
        assert (row.backbone, row.params) == (c[1], int(_num(c[2])))
        assert [row.metrics[m] for m in ("mAP50", "mAP50_95", "AR100")] == [_num(x) for x in c[3:6]]
        for proc, start in (("cpu", 6), ("gpu", 9)):
            s = row.speed[proc]
            assert (s.fps, round(s.load * 100), s.implantability) == (
                _num(c[start]),
                _num(c[start + 1]),
                _num(c[start + 2]),
            )
    for row in seg.rows.values():
        c = seg_rows[row.name]
        assert (row.backbone, row.params) == (c[1], int(_num(c[2])))
        keys = ("mIoU", "mean_dice", "cord_iou", "cord_dice")
        assert [row.metrics[m] for m in keys] == [_num(x) for x in c[3:7]]
        assert [row.human[m] for m in keys] == [_num(x) for x in c[7:11]]
        for proc, start in (("cpu", 11), ("gpu", 14)):
            s = row.speed[proc]
            assert (s.fps, round(s.load * 100), s.implantability) == (
                _num(c[start]),
                _num(c[start + 1]),
                _num(c[start + 2]),
            )

    # training settings: "Name lr / batch / epochs / optimizer [/ loss]"
    settings = re.findall(
        r"([A-Za-z][\w\-]*(?: R-CNN)?) ([0-9.]+) / (\d+) / (\d+) / ([^/;\n]+?)(?: / ([^;\n(]+?))?\s*(?:\(|;|\n)", text
    )
    found = 0
    for name, lr, batch, epochs, optimizer, loss in settings:
        row = next((r for t in (det, seg) for r in t.rows.values() if r.name.split(" (")[0] == name), None)
        assert row is not None, name
        t = row.training
        assert (t["lr"], t["batch"], t["epochs"], t["optimizer"]) == (
            float(lr),
            int(batch),
            int(epochs),
            optimizer.strip(),
        )
        assert (t["loss"] or "") == loss.strip()
        found += 1
    assert found == 13

    raw = yaml.safe_load(DEFAULT_MANUSCRIPT.read_text())
    classes = {c["name"]: c for c in raw["dataset"]["segmentation"]["classes"]}
    class_rows = _table_rows(text, "| idx |")
    assert len(class_rows) == 10
    for idx, cells in class_rows.items():
        c = classes[cells[1]]
        assert (c["index"], c["pixels"], c["images"]) == (int(idx), int(_num(cells[2])), int(_num(cells[3])))
    data = _table_rows(text, "| | detection")
    assert data["images"][1].startswith(f"{raw['dataset']['detection']['images']:,}")
    assert data["images"][2].startswith(f"{raw['dataset']['segmentation']['images']:,}")
    for task, col in (("detection", 1), ("segmentation", 2)):
        d = raw["dataset"][task]
        numbers = [int(_num(x)) for x in re.findall(r"[\d,]+", data["pre / post injury"][col])]
        assert numbers == [
            d["pre_injury"]["images"],
            d["pre_injury"]["pigs"],
            d["post_injury"]["images"],
            d["post_injury"]["pigs"],
        ]
    assert [int(_num(x)) for x in data["split"][2].split("/")] == list(raw["dataset"]["segmentation"]["split"].values())
    assert raw["dataset"]["detection"]["google_drive_id"] in data["download"][1]
    assert raw["dataset"]["segmentation"]["google_drive_id"] in data["download"][2]
