"""Many jobs at once (issue: scale-out): a submitit_local sweep of two smoke rows, the SLURM request each row makes,
one GPU per job on one machine (joblib workers), and the plan `make reproduce` prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spinebench.errors import ConfigError
from spinebench.launch import check_launch_overrides
from spinebench.plan import MARGIN, markdown, minimum_timeout, plan, wall_hours

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _train(tmp_path: Path, cache_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "spinebench-train"), *args, f"paths.log_dir={tmp_path / 'runs'}"],
        cwd=REPO,
        env={**os.environ, "SPINEBENCH_CACHE": str(cache_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_submitit_local_sweep_runs_two_smoke_rows_as_their_own_processes(tmp_path, cache_dir):
    proc = _train(
        tmp_path, cache_dir, "-m", "model=unet_light,deeplabv3_light", "data=segmentation_phantom_tiny",
        "debug=smoke", "hydra/launcher=local",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "runs" / "segmentation_phantom_tiny"
    for model in ("unet_light", "deeplabv3_light"):
        assert json.loads((sweep / f"{model}-default-s0-smoke" / "metrics.json").read_text())["model_name"] == model
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran each job in its own process


def test_the_slurm_launcher_submits_each_row_with_its_own_request(tmp_path, cache_dir):
    """What `hydra/launcher=slurm` hands to sbatch, read from a stand-in sbatch that keeps the script and refuses."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/sh\nfor a in "$@"; do last="$a"; done\ncp "$last" "$OUT/job.sh"\nexit 1\n')
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it to believe it is on a cluster
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(tmp_path)}
    proc = _train(
        tmp_path, cache_dir, "-m", "experiment=paper/samed", "seed=0,1,2", "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu", "hydra.launcher.account=lab", env=env,
    )  # fmt: skip
    assert proc.returncode != 0  # the stand-in refused the submission
    script = (tmp_path / "job.sh").read_text()
    request = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, re.M))
    samed = next(p for p in plan(["samed"]))
    assert request["partition"] == "gpu" and request["account"] == "lab"
    assert request["array"].startswith("0-2")  # one job per seed
    assert request["gpus-per-node"] == "1" and request["cpus-per-task"] == "8" and request["mem"] == "64GB"
    assert int(request["time"]) == samed.timeout_min >= samed.hours * 60 * MARGIN
    assert request["signal"] == "USR2@120"  # submitit's checkpoint: the job requeues itself and resumes from last.pt


@pytest.mark.parametrize(
    "argv, message",
    [
        (["gpus=0"], "gpus=0: the number of GPUs to run jobs on, a whole number >= 1"),
        (["gpus=two"], "gpus='two': the number of GPUs"),
        (["gpus=3"], "gpus=3: this machine shows 2 GPU(s); give gpus=2 or fewer"),
        (["hydra/launcher=gpus"], "hydra/launcher=gpus runs one job per GPU: give gpus=<how many>"),
        (["hydra/launcher=slurm"], "hydra/launcher=slurm needs the cluster's partition"),
    ],
)
def test_launch_mistakes_are_refused_before_hydra_starts_a_launcher(monkeypatch, argv, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_launch_overrides(argv)


def test_gpus_is_refused_in_one_line_by_the_command(tmp_path, cache_dir):
    proc = _train(tmp_path, cache_dir, "-m", "model=unet_light", "gpus=0", "hydra/launcher=gpus")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "spinebench-train: error: gpus=0: the number of GPUs to run jobs on, a whole number >= 1 (GPUS=1 or more)"
    ]


HOLD = """
import sys
from spinebench.errors import ConfigError
from spinebench.launch import claim_gpu
try:
    print(claim_gpu(int(sys.argv[1])), flush=True)
except ConfigError as error:
    print("refused:", error, flush=True)
    sys.exit(2)
sys.stdin.read()  # hold the GPU until the test closes stdin
"""


def test_each_worker_holds_its_own_gpu_until_it_exits(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5", "SPINEBENCH_GPU_SLOTS": str(tmp_path / "slots")}

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", HOLD, "2"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    first, second = start(), start()
    held = sorted([first.stdout.readline().strip(), second.stdout.readline().strip()])
    assert held == ["3", "5"]  # one GPU each, by the names CUDA_VISIBLE_DEVICES gave them
    third = start()
    assert third.wait(timeout=60) == 2 and "all 2 GPU(s) are held" in third.stdout.read()
    first.stdin.close()
    first.wait(timeout=60)  # a worker that ends frees its GPU
    fourth = start()
    assert fourth.stdout.readline().strip() in held
    for proc in (second, fourth):
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_gpu_pool_sweep_runs_jobs_in_workers_and_names_the_failed_one(tmp_path, cache_dir):
    """hydra/launcher=gpus on the CPU (two made-up GPU names, trainer.device=cpu): two joblib workers, one GPU
    each; a job that fails in a worker is named by the launching process, and the other finishes."""
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "SPINEBENCH_GPU_SLOTS": str(tmp_path / "slots")}
    proc = _train(
        tmp_path, cache_dir, "-m", "model=unet_light", "data=segmentation_phantom_tiny,detection_phantom_tiny",
        "debug=smoke", "hydra/launcher=gpus", "gpus=2", env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "detection_phantom_tiny/unet_light-default-s0-smoke: model unet_light is a segmentation model" in proc.stderr
    assert "1 job(s) of the sweep failed (the others ran)" in proc.stderr
    run = tmp_path / "runs" / "segmentation_phantom_tiny" / "unet_light-default-s0-smoke"
    assert (run / "metrics.json").is_file()
    assert re.search(r"this job runs on GPU [01] \(one of 2", (run / "train.log").read_text())


def test_every_paper_row_asks_slurm_for_more_time_than_its_estimate():
    for row in plan():
        assert row.timeout_min >= minimum_timeout(row) >= row.hours * 60 * MARGIN, row.row


def test_the_docs_planning_table_is_the_plans():
    text = (REPO / "docs" / "scale-out.md").read_text()
    table = text.split("<!-- plan:start -->\n", 1)[1].split("\n<!-- plan:end -->", 1)[0]
    assert table == markdown(plan()), "regenerate it: spinebench plan --markdown"


def test_jobs_go_longest_first_to_the_gpu_free_earliest():
    assert wall_hours([3, 1, 1, 1], 2) == 3
    assert wall_hours([2, 2, 2], 2) == 4
    assert wall_hours([5, 1], 1) == 6
    with pytest.raises(ConfigError, match="unknown row detr9000"):
        plan(["detr9000"])


def test_the_failed_jobs_file_falls_back_to_the_temporary_folder(tmp_path, monkeypatch):
    from spinebench.launch import FAILED_JOBS_ENV, read_failed_jobs, report_failed_job, start_failed_jobs_file

    monkeypatch.setenv(FAILED_JOBS_ENV, "")  # restored after the test: start_failed_jobs_file sets it
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the outputs folder would be: nothing can be made below it
    path = start_failed_jobs_file(blocked / "outputs")
    assert path.parent != blocked and os.environ[FAILED_JOBS_ENV] == str(path)
    report_failed_job("outputs/x: model   y failed")
    assert read_failed_jobs(path) == ["outputs/x: model y failed"] and not path.exists()
