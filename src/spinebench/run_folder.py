"""A run folder and its states: started -> failed (with its error) | finished (metrics.json).

    outputs/<data>/<run>/
      status.json    {"state": "started" | "failed" | "finished", "error", "updated", ...} at each transition
      config.yaml    the resolved config this attempt ran with
      env.json       packages, hardware, commit
      checkpoints/   what a restart resumes from (the model's `resume_files`)
      metrics.json   the RunRecord, written last: the folder is finished exactly when it exists
      .lock          held (fcntl) by the command working in the folder, for its life: one command per folder

A finished run redone keeps its result aside (`*.previous`) until the redo trains: a redo that stops before it
trains anything gives it back, so a refused resume or a broken image never costs a finished result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from spinebench.atomic import is_disk_fault, write_error, write_json
from spinebench.contract import CHECKPOINT_DIR, RunRecord, engine_checkpoints
from spinebench.errors import ConfigError, RunStateError, SpinebenchError

log = logging.getLogger("spinebench")

METRICS_FILE, CONFIG_FILE, ENV_FILE, STATUS_FILE = "metrics.json", "config.yaml", "env.json", "status.json"
PREVIOUS = ".previous"  # suffix of a finished result kept aside while the run is redone
KEPT = (METRICS_FILE, CONFIG_FILE, ENV_FILE, STATUS_FILE)
STARTED, FAILED, FINISHED = "started", "failed", "finished"
LOCK_FILE = ".lock"
START_FILES = {
    ".hydra",
    CONFIG_FILE,
    ENV_FILE,
    STATUS_FILE,
    LOCK_FILE,
}  # what a run writes before any work (and its .log)


def checkpoint_run_folder(ckpt: Any) -> Path:
    """The training run a `ckpt=` names: its folder, or its checkpoints/best.pt (another file is refused: an
    evaluation scores best.pt, and its own folder is named after the run)."""
    path = Path(str(ckpt)).expanduser()
    if path.suffix != ".pt":
        return path
    if path.name != "best.pt" or path.parent.name != CHECKPOINT_DIR:
        raise ConfigError(
            f"ckpt={ckpt}: spinebench-eval scores a run's {CHECKPOINT_DIR}/best.pt; give the run's folder"
        )
    return path.parent.parent


class RunFolder:
    """One run's folder; `resume_files` names what a restart resumes from (the model adapter's)."""

    def __init__(self, path: Path, resume_files: Callable[[Path], list[Path]] = engine_checkpoints):
        self.path, self.resume_files = Path(path), resume_files

    def file(self, name: str) -> Path:
        return self.path / name

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        """status.json ({} when absent or unreadable: a folder from before it, or a killed write)."""
        try:
            status = json.loads(self.file(STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    @property
    def is_finished(self) -> bool:
        return self.file(METRICS_FILE).is_file()

    def record(self) -> RunRecord:
        """The finished run's record; ValueError/OSError when metrics.json is unreadable or malformed."""
        env: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            env = json.loads(self.file(ENV_FILE).read_text())
        return RunRecord.from_json(json.loads(self.file(METRICS_FILE).read_text()), env)

    def best_checkpoint(self, ckpt: Any) -> Path:
        """checkpoints/best.pt of this finished training run (`ckpt`: as the command named it)."""
        checkpoint = self.file(CHECKPOINT_DIR) / "best.pt"
        if not self.file(CONFIG_FILE).is_file() or not checkpoint.is_file():
            raise RunStateError(
                f"ckpt={ckpt}: not a finished spinebench run folder (needs {CONFIG_FILE} and {CHECKPOINT_DIR}/best.pt)"
            )
        if not self.is_finished:  # killed or still training: its best.pt is not the run's final best
            raise RunStateError(
                f"ckpt={ckpt}: the run is unfinished (no {METRICS_FILE}); run its training command again to finish "
                "it, then evaluate it"
            )
        return checkpoint

    def training_facts(self, saved: dict[str, Any]) -> dict[str, Any]:
        """What an evaluation of this run's checkpoint records of its training (`saved`: its config.yaml): the
        facts of its record, and `trained_on`, its data block (a model trained on a phantom is labelled so
        wherever it is scored; without a readable record, what its config says)."""
        try:
            trained = self.record()
        except (OSError, ValueError) as error:  # the training facts only: the scores do not depend on them
            log.warning("%s is unreadable (%s): the evaluation records none of its training facts", self.path, error)
            trained = None
        data = trained.data if trained else {}
        if not data.get("kind"):
            given = saved.get("data") or {}
            data = {"name": given.get("name"), "kind": "phantom" if given.get("phantom") is not None else "unknown"}
        keys = ("epochs", "pretrained", "pretrained_source", "train_images_per_s", "config")
        facts = {key: getattr(trained, key) for key in keys} if trained else {}
        return {**facts, "trained_on": {key: data.get(key) for key in ("name", "kind", "label", "stamp")}}

    def has_trained(self) -> bool:
        """A checkpoint a restart would resume from: at least one epoch was trained here."""
        return bool(self.resume_files(self.path))

    # -- one command at a time ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for the block: a second command on the folder stops in one line naming the
        process that holds it. The lock is the kernel's (flock): a killed holder releases it with its death, so
        there is no stale lock to clear by hand. The file stays (removing it would let two processes each lock
        a different file of the same name)."""
        path = self.file(LOCK_FILE)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # noqa: SIM115 - held open for the block
        except OSError as error:
            if is_disk_fault(error):
                raise write_error(path, error) from error
            raise
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise RunStateError(
                    f"{self.path}: another spinebench command (pid {holder}) is working in this folder; wait for it "
                    "to end, or give this run its own folder (run_name=...)"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the lock

    # -- transitions -----------------------------------------------------------------------------------------
    def _set(self, state: str, **facts: Any) -> None:
        write_json(
            self.file(STATUS_FILE),
            {
                **self.status,
                "state": state,
                "error": None,
                "traceback": None,
                **facts,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def begin(self, config_yaml: str, env: dict[str, Any], about: dict[str, Any], keep_finished: bool) -> None:
        """Start an attempt: a finished result is kept aside (`keep_finished`) or dropped, then config.yaml,
        env.json and status.json (state started; `about` says which task, row and data) are written."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.is_finished:
            for name in KEPT:
                if self.file(name).exists():
                    shutil.copy2(self.file(name), self.file(name + PREVIOUS))
            self.file(METRICS_FILE).unlink()
            if not keep_finished:
                self.drop_kept()
        self.file(CONFIG_FILE).write_text(config_yaml)
        write_json(self.file(ENV_FILE), env)
        self._set(STARTED, **about)

    def trained(self) -> None:
        """fit() returned: the folder's checkpoints no longer match a result kept aside."""
        self.drop_kept()

    def fail(self, error: BaseException) -> None:
        """Record the error (its last line is what a report shows); a result kept aside comes back when nothing
        was trained since it."""
        self.settle_kept()
        if self.is_finished:  # the kept result came back: the folder is as it was
            return
        text = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, SpinebenchError):
            self._set(FAILED, error=text)
        else:  # a bug: the traceback stays with the folder it happened in
            self._set(
                FAILED, error=f"{type(error).__name__}: {text}", traceback="".join(traceback.format_exception(error))
            )

    def finish(self, record: RunRecord) -> dict[str, Any]:
        doc = record.to_json()
        write_json(self.file(METRICS_FILE), doc)
        self._set(FINISHED)
        return doc

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Marks the folder failed when the block raises (the exception goes on)."""
        try:
            yield
        except BaseException as error:
            self.fail(error)
            raise

    # -- a result kept aside ---------------------------------------------------------------------------------
    def _kept(self) -> list[Path]:
        return [self.file(name + PREVIOUS) for name in KEPT]

    def untouched_since_finished(self) -> bool:
        """A result kept aside and no checkpoint newer than it: a redo stopped before it trained anything."""
        kept = self.file(METRICS_FILE + PREVIOUS)
        return kept.exists() and all(
            p.stat().st_mtime_ns <= kept.stat().st_mtime_ns for p in self.resume_files(self.path)
        )

    def settle_kept(self) -> None:
        """After a redo that stopped (or was killed): give the kept result back while nothing was trained since,
        else drop it; it is never restored over newer checkpoints."""
        if self.untouched_since_finished() and not self.is_finished:
            for path in self._kept():
                if path.exists():
                    path.replace(path.with_name(path.name.removesuffix(PREVIOUS)))
            log.warning("%s: nothing was trained, so the run keeps its finished result (%s)", self.path, METRICS_FILE)
        self.drop_kept()

    def drop_kept(self) -> None:
        for path in self._kept():
            path.unlink(missing_ok=True)

    def drop_if_untouched(self) -> bool:
        """Remove a folder holding only what a run writes before its work (a command stopped by a user error),
        and the data and outputs folders above it when left empty: a typo leaves no debris. True if removed."""
        if not self.path.is_dir() or any(p.name not in START_FILES and p.suffix != ".log" for p in self.path.iterdir()):
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            for folder in (self.path.parent, self.path.parent.parent):
                folder.rmdir()  # only succeeds when empty
        return True
