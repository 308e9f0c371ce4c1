"""`spinebench data fetch`: offline failure is fast and says what to do; `--archive` extracts and stamps."""

from __future__ import annotations

import json
import tarfile
import time
import zipfile

import pytest

from spinebench.cli import main
from spinebench.data import fetch as fetch_module
from spinebench.data.fetch import FetchError, fetch
from spinebench.data.source import MANIFEST, describe_source, prepare_dataset
from spinebench.errors import DataError


def _zip_release(release, archive, wrapper="release_v1"):
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(release.rglob("*")):
            if path.is_file():
                handle.write(path, f"{wrapper}/{path.relative_to(release)}")
    return archive


@pytest.fixture
def fixture_is_the_release(monkeypatch):
    """The release's facts made those of conftest's small detection release (3 images a split): the tests that
    follow a folder labelled verified need one that matches them."""
    facts = {**fetch_module.RELEASE_FACTS["detection"], "images": 9}
    monkeypatch.setitem(fetch_module.RELEASE_FACTS, "detection", facts)


def test_download_without_a_route_fails_fast_with_manual_instructions(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FetchError) as error:
        fetch("segmentation", tmp_path / "out", host=("127.0.0.1", 9))  # nothing listens there: like offline
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "1JUKakYg10ZsHVDORsv9XvDkx86WVKaFO" in message and "--archive" in message


def test_cli_fetch_offline_exits_one_within_seconds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch_module, "DRIVE_HOST", ("127.0.0.1", 9))
    start = time.perf_counter()
    assert main(["data", "fetch", "--task", "detection", "--out", str(tmp_path / "d")]) == 1
    assert time.perf_counter() - start < 10
    assert "Download it by hand" in capsys.readouterr().err


def test_archive_is_extracted_discovered_and_stamped_as_real(detection_release, tmp_path, fixture_is_the_release):
    archive = _zip_release(detection_release, tmp_path / "det.zip")
    out = tmp_path / "data"
    assert main(["data", "fetch", "--task", "detection", "--out", str(out), "--archive", str(archive)]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["splits"] == {"train": "release_v1/train", "val": "release_v1/valid", "test": "release_v1/test"}
    assert manifest["n_files"] == 9 + 6  # 9 PNGs + 6 XMLs
    assert len(manifest["archive_sha256"]) == 64
    source = describe_source(out / "release_v1")
    assert source["kind"] == "real" and source["verified"] is True


def test_tar_archives_work_and_hostile_or_damaged_archives_are_refused(segmentation_release, tmp_path):
    archive = tmp_path / "seg.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(segmentation_release, arcname="seg")
    assert fetch("segmentation", tmp_path / "s", archive=archive)["splits"]["test"] == "seg/test_images"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../../escape.txt", "x")
    with pytest.raises(DataError, match="outside"):
        fetch("detection", tmp_path / "e", archive=evil)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a zip or tar|damaged"):
        fetch("detection", tmp_path / "b", archive=broken)
    with pytest.raises(DataError, match="archive not found"):
        fetch("detection", tmp_path / "b", archive=tmp_path / "missing.zip")


def test_archive_of_the_wrong_task_is_unusable(segmentation_release, tmp_path):
    archive = _zip_release(segmentation_release, tmp_path / "seg.zip")
    with pytest.raises(DataError, match="no detection release found"):
        fetch("detection", tmp_path / "x", archive=archive)


def test_a_fetched_release_is_verified_only_while_its_files_match_the_manifest(
    detection_release, tmp_path, fixture_is_the_release
):
    """`verified` in every result means what it says: each run hashes the files the manifest lists again. A file
    edited or deleted since the fetch labels the results unverified, naming it, and `data check` reports it."""
    from spinebench.data.check import check_dataset

    fetch("detection", tmp_path / "data", archive=_zip_release(detection_release, tmp_path / "det.zip"))
    root = tmp_path / "data" / "release_v1"
    assert describe_source(root)["verified"] is True and check_dataset(root, "detection").clean
    (root / "train" / "unrelated-notes.txt").write_text("a file the release never had")  # not data the readers take
    assert describe_source(root)["verified"] is True
    edited = root / "train" / "train_post_0.xml"
    edited.write_text(edited.read_text().replace("100.5", "101.5"))  # a box moved by hand
    (root / "test" / "test_pre_1.png").unlink()
    (root / "train" / "extra.PNG").write_bytes((root / "train" / "train_pre_1.png").read_bytes())  # trained on too
    source = describe_source(root)
    assert source["verified"] is False
    assert (source["changed_since_fetch"], source["missing_since_fetch"], source["added_since_fetch"]) == (1, 1, 1)
    assert "release_v1/train/train_post_0.xml" in source["note"]
    spec = prepare_dataset("detection_real", "detection", root)
    assert spec.label.startswith("unverified folder")
    problems = check_dataset(root, "detection").problems
    assert problems["changed_since_fetch"]["examples"] == [str(tmp_path / "data" / "release_v1/train/train_post_0.xml")]
    assert problems["missing_since_fetch"]["examples"] == [str(tmp_path / "data" / "release_v1/test/test_pre_1.png")]
    assert problems["added_since_fetch"]["examples"] == [str(tmp_path / "data" / "release_v1/train/extra.PNG")]
