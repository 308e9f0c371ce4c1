"""How the command-line programs end: a user's mistake (spinebench.errors) in one line and exit 2, any other
error with its traceback and exit 1; a sweep's failed jobs named at its end. Only the entry points call
sys.exit, through `Entry`."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig

from spinebench.atomic import is_disk_fault, write_error
from spinebench.engine import distributed
from spinebench.errors import ConfigError, SpinebenchError
from spinebench.hydra_run import CONFIG_DIR, is_multirun, output_dir
from spinebench.launch import check_launch_overrides, read_failed_jobs, report_failed_job, start_failed_jobs_file
from spinebench.run_folder import RunFolder

log = logging.getLogger("spinebench")

CONFIG_GROUPS = (
    "data",
    "model",
    "trainer",
    "trainer/optimizer",
    "trainer/scheduler",
    "experiment",
    "debug",
    "paths",
)  # the groups a command line names
OTHER_SEARCH_PATHS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath")


def user_error(error: BaseException) -> SpinebenchError | None:
    """The SpinebenchError behind `error` (Hydra wraps what a task raises inside a config's _target_), or None. A
    disk that will not take a write (full, read-only) is no bug either: its OSError becomes one line naming the
    path and the free space (spinebench.atomic.write_error)."""
    while error is not None:
        if isinstance(error, SpinebenchError):
            return error
        if is_disk_fault(error):
            return write_error(getattr(error, "filename", None) or "a file", error)
        error = error.__cause__ if isinstance(error, HydraException) else None
    return None


def check_writable_root(argv: list[str]) -> None:
    """Where runs go (outputs/ under the working directory, or $SPINEBENCH_ROOT) must take files: from a read-only
    checkout Hydra's own failure to make the run folder is a 24-line traceback. Left to Hydra when the command
    names another place."""
    if any(
        arg.lstrip("+").startswith(("paths.root_dir=", "paths.log_dir=", "hydra.run.dir=", "hydra.sweep.dir="))
        for arg in argv
    ):
        return
    root = Path(os.environ.get("SPINEBENCH_ROOT") or Path.cwd())
    folder = root / "outputs"
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise ConfigError(
            f"{folder} cannot be written (a read-only checkout?): runs go to {root / 'outputs'}; run from a writable "
            "folder, or set SPINEBENCH_ROOT=<a writable folder> (or paths.root_dir=...)"
        )


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_overrides(argv: list[str]) -> None:
    """Refuse, before Hydra composes anything, a `group=name` override naming no configs/<group>/<name>.yaml and a
    `trainer.<key>=` naming no setting: Hydra's own messages run to twenty lines. Sweep lists (`a,b`) are checked
    name by name; sweep functions, deletions and extra config folders are left to Hydra."""
    from spinebench.engine.config import check_trainer_key

    if any(arg.startswith(OTHER_SEARCH_PATHS) for arg in argv):
        return
    for arg in argv:
        key, is_override, value = arg.partition("=")
        if is_override and not value.isascii() and value[:1] not in "'\"":  # Hydra's lexer: 20 lines
            raise ConfigError(
                f"{key}={value}: Hydra reads a value with non-ASCII characters only in quotes: "
                f"give {key}='{value}' (quoted inside the shell's quotes)"
            )
        if is_override and key.startswith("trainer."):
            check_trainer_key(key.split(".")[1:], value)
        group = key.removeprefix("+")
        if not is_override or group not in CONFIG_GROUPS or any(c in value for c in "()[]'\""):
            continue
        folder = Path(CONFIG_DIR) / group
        for name in value.split(","):
            if name != "null" and not (folder / f"{name}.yaml").is_file():
                known = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
                raise ConfigError(f"{group}={name}: no such config (configs/{group}/ has {', '.join(known)})")


class Entry:
    """One command-line program: checks its arguments, runs its task under Hydra, and ends it."""

    def __init__(
        self,
        program: str,
        argv_checks: tuple[Callable[[list[str]], None], ...] = (check_overrides, check_launch_overrides),
    ):
        self.program, self.argv_checks = program, argv_checks

    def refuse(self, message: str) -> None:
        print(f"{self.program}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def check_argv(self, argv: list[str]) -> None:
        try:
            for check in (*self.argv_checks, check_writable_root):
                check(argv)
        except SpinebenchError as error:
            self.refuse(one_line(error))

    def run(self, task: Callable[[DictConfig], dict], cfg: DictConfig) -> dict | None:
        """Run one job. In a sweep a failed job is logged and named at the end, and the sweep goes on."""
        try:
            return task(cfg)
        except Exception as error:
            cause = user_error(error)
            if not is_multirun():
                if cause is None:
                    raise  # a bug: Hydra prints its traceback and exits 1 (status.json keeps it too)
                folder = output_dir()
                if folder is not None and distributed.is_main():  # under torchrun the folder is rank 0's
                    RunFolder(folder).drop_if_untouched()
                self.refuse(one_line(cause))
            message = one_line(cause) if cause else f"{type(error).__name__}: {one_line(error)}"
            log.error("job failed (%s), the sweep continues: %s", self.program, message)
            if cause is None:
                log.error("traceback:\n%s", "".join(traceback.format_exception(error)))
            report_failed_job(f"{output_dir()}: {message}")  # read by finish(), in the launching process
            return None

    def finish(self, failed_jobs: list[str]) -> None:
        """After a sweep: exit 2 when any job failed, each named, so that a script (`make reproduce`) knows."""
        if failed_jobs:
            for failed in failed_jobs:
                print(f"{self.program}: error: {failed}", file=sys.stderr)
            self.refuse(f"{len(failed_jobs)} job(s) of the sweep failed (the others ran)")

    def main(self, app: Callable[[], Any]) -> None:
        self.check_argv(sys.argv[1:])
        if not {"-m", "--multirun"} & set(sys.argv[1:]):
            app()
            return
        # a sweep's jobs may run in other processes (a launcher's workers, a cluster's nodes): they report their
        # failures in a file under outputs/, where a cluster's shared file system takes them too
        failures = start_failed_jobs_file(Path(os.environ.get("SPINEBENCH_ROOT") or Path.cwd()) / "outputs")
        try:
            app()
        finally:
            failed_jobs = read_failed_jobs(failures)
        self.finish(failed_jobs)
