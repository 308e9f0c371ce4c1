"""Many jobs at once, on Hydra's launchers: what spinebench adds to them, and nothing they already do.

- One machine, N GPUs (`hydra/launcher=gpus gpus=N`, `make reproduce GPUS=N`): Hydra's joblib launcher runs at
  most N jobs at once in N worker processes; `claim_gpu` gives each worker a GPU of its own for its life (a lock
  file per GPU, held while the process lives, so a worker that dies frees its GPU). submitit's local executor is
  not used for this: it starts every job at once and shows each the same first GPU.
- A cluster (`hydra/launcher=slurm`): hydra-submitit-launcher; a requeued job (preemption, time limit) runs the
  same command, which lands in the same run folder and resumes from its last.pt.
- A sweep's failed jobs are named at its end by the process that launched them, whichever process ran them: each
  job appends its failure to `FAILED_JOBS_ENV`'s file, which the launching process made and reads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from pathlib import Path

from spinebench.errors import ConfigError

log = logging.getLogger(__name__)

FAILED_JOBS_ENV = "SPINEBENCH_FAILED_JOBS"
SLOTS_ENV = "SPINEBENCH_GPU_SLOTS"  # where the per-GPU lock files live (default: one folder per user, machine-wide)
_held: tuple[str, int] | None = None  # (the GPU this process holds, its lock file's descriptor)


def slots_dir() -> Path:
    return Path(os.environ.get(SLOTS_ENV) or Path(tempfile.gettempdir()) / f"spinebench-gpus-{os.getuid()}")


def visible_gpus() -> list[str]:
    """The GPUs this process may use, by the names CUDA_VISIBLE_DEVICES gives them (else 0..count-1, counted
    through NVML, which does not start CUDA in this process)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [name.strip() for name in visible.split(",") if name.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def check_gpus(gpus: object) -> int:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"gpus={gpus!r}: the number of GPUs to run jobs on, a whole number >= 1 (GPUS=1 or more)")
    return gpus


def claim_gpu(gpus: object) -> str:
    """Hold one of the first `gpus` visible GPUs for the rest of this process's life and make it the only one
    CUDA shows this process (call before anything starts CUDA). A worker's later jobs keep its GPU."""
    global _held
    count = check_gpus(gpus)
    if _held is not None:
        log.info("this job runs on GPU %s (one of %d; this worker's since its first job)", _held[0], count)
        return _held[0]
    names = visible_gpus()
    if count > len(names):
        raise ConfigError(
            f"gpus={count}: this machine shows {len(names)} GPU(s) (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); give gpus={len(names)} or fewer"
        )
    folder = slots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names[:count]:
        descriptor = os.open(folder / f"gpu{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        _held = (name, descriptor)
        os.environ["CUDA_VISIBLE_DEVICES"] = name
        log.info("this job runs on GPU %s (one of %d; lock %s)", name, count, folder)
        return name
    raise ConfigError(
        f"all {count} GPU(s) are held by other spinebench jobs on this machine (locks in {folder}): another sweep "
        "is running; wait for it, or give its GPUs to this one with CUDA_VISIBLE_DEVICES"
    )


def report_failed_job(line: str) -> None:
    """Append a failed job's line to the launching process's file (one write of one line: O_APPEND keeps lines
    from several processes whole)."""
    path = os.environ.get(FAILED_JOBS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(" ".join(line.split()) + "\n")


def start_failed_jobs_file(root: Path) -> Path:
    """A fresh file for this command's failed jobs, named in the environment its jobs inherit (in the temporary
    folder when `root` cannot be written: a read-only checkout whose runs go elsewhere)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=".failed-jobs-", suffix=".txt", dir=root)
    except OSError:
        descriptor, name = tempfile.mkstemp(prefix="spinebench-failed-jobs-", suffix=".txt")
    os.close(descriptor)
    os.environ[FAILED_JOBS_ENV] = name
    return Path(name)


def read_failed_jobs(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    finally:
        path.unlink(missing_ok=True)
    return [line for line in lines if line.strip()]


def check_launch_overrides(argv: list[str]) -> None:
    """The launcher choices of a command line, before Hydra starts a launcher that would fail in twenty lines:
    `gpus` a whole number >= 1 and no more than the machine shows, hydra/launcher=gpus with a `gpus`, and
    hydra/launcher=slurm with a partition."""
    given = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    launcher = given.get("hydra/launcher")
    if "gpus" in given:
        try:
            gpus: object = int(given["gpus"])
        except ValueError:
            gpus = given["gpus"]
        if gpus != "null":
            count = check_gpus(gpus)
            shown = len(visible_gpus())
            if count > shown:
                raise ConfigError(f"gpus={count}: this machine shows {shown} GPU(s); give gpus={shown} or fewer")
    if launcher == "gpus" and given.get("gpus", "null") == "null":
        raise ConfigError("hydra/launcher=gpus runs one job per GPU: give gpus=<how many> (make reproduce GPUS=N)")
    if launcher == "slurm" and given.get("hydra.launcher.partition", "null") == "null":
        raise ConfigError(
            "hydra/launcher=slurm needs the cluster's partition: hydra.launcher.partition=<name> "
            "(make reproduce-slurm PARTITION=<name>)"
        )
