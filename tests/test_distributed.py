"""One job on several processes (torchrun, DDP) on the CPU with gloo: the shards, the averaged gradients, one run
folder written by rank 0, and the resume guarantee of the single-process engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from spinebench.engine import distributed, load_checkpoint

from helpers import ddp

REPO = Path(__file__).resolve().parents[1]


def test_shards_cover_each_step_of_one_process_and_pad_to_equal_length():
    order = list(range(10))
    shards = [distributed.shard(order, rank_=r, world=2) for r in range(2)]
    assert shards == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    # at a per-rank batch of 2, step k of the two ranks together is step k of one process at batch 4
    assert sorted(shards[0][2:4] + shards[1][2:4]) == order[4:8]
    three = [distributed.shard(order, rank_=r, world=3) for r in range(3)]
    assert [len(s) for s in three] == [4, 4, 4]
    assert sorted(sum(three, [])) == sorted(order + [0, 1])  # every index once, padded with the first two
    assert distributed.shard(order) == order  # one process: the whole epoch


def _spawn(tmp_path: Path, name: str, epochs: int, noise: float = 0.0, die: int | None = None) -> list[dict]:
    out = tmp_path / f"{name}-out"
    out.mkdir(exist_ok=True)
    store = tmp_path / f"{name}-{len(list(out.iterdir()))}-{die}.store"
    mp.spawn(ddp.on_rank, args=(2, str(store), str(tmp_path / name), str(out), epochs, noise, die), nprocs=2)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_ddp_ranks_hold_the_same_weights_which_match_one_process_at_the_global_batch(tmp_path):
    ranks = _spawn(tmp_path, "ddp", epochs=1)
    for a, b in zip(ranks[0]["weights"].values(), ranks[1]["weights"].values()):
        assert torch.equal(a, b)  # gradients averaged: one model
    single, _ = ddp.train(tmp_path / "single", epochs=1)
    for a, b in zip(ranks[0]["weights"].values(), single.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the same images per step, averaged in another order
    # rank 0 alone wrote the run folder's checkpoints, in the single-process layout (no DDP `module.` prefix)
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_a_killed_ddp_run_resumes_to_the_uninterrupted_result_and_its_checkpoint_resumes_in_one_process(tmp_path):
    full = _spawn(tmp_path, "full", epochs=3, noise=0.05)
    killed = _spawn(tmp_path, "killed", epochs=3, noise=0.05, die=7)  # 5 steps an epoch: dies in epoch 2
    assert [r["resumed_from"] for r in killed] == ["killed", "killed"]
    resumed = _spawn(tmp_path, "killed", epochs=3, noise=0.05)  # the same command again
    assert [r["resumed_from"] for r in resumed] == [1, 1]
    for a, b in zip(full[0]["weights"].values(), resumed[0]["weights"].values()):
        assert torch.equal(a, b)
    # the DDP run's epoch-1 checkpoint, resumed by one process: trains on from it
    one_dir = tmp_path / "one"
    (one_dir / "checkpoints").mkdir(parents=True)
    _spawn(tmp_path, "epoch1", epochs=1, noise=0.05)
    (one_dir / "checkpoints" / "last.pt").write_bytes((tmp_path / "epoch1" / "checkpoints" / "last.pt").read_bytes())
    module, result = ddp.train(one_dir, epochs=3, noise=0.05)
    assert result.resumed_from == 1 and result.epochs == 3 and len(result.history) == 3


def test_ranks_that_disagree_on_the_run_folder_are_refused_on_every_rank(tmp_path):
    store = tmp_path / "store"
    mp.spawn(ddp.agree_on_rank, args=(2, str(store), str(tmp_path)), nprocs=2)
    for rank in range(2):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert text.startswith("ConfigError: torchrun: rank 1's run folder is /runs/rank-1, rank 0's is /runs/rank-0")


def _torchrun(tmp_path: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPINEBENCH_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(Path(sys.executable).parent / "spinebench-train"), "model=unet_light"]
    command += ["data=segmentation_phantom_tiny", "debug=smoke", f"paths.log_dir={tmp_path}", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_spinebench_train_under_torchrun_writes_one_run_folder_that_evaluates_in_one_process(tmp_path, cache_dir):
    proc = _torchrun(tmp_path, cache_dir, "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "segmentation_phantom_tiny").iterdir()  # one folder for both ranks
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["epochs"] == 2 and doc["metrics"]["mean_dice"] >= 0
    log = (run / "train.log").read_text()
    assert log.count("epoch 2/2") == 1 and "2 ranks (torchrun)" in log  # rank 0's lines only
    # the DDP checkpoint evaluates in one process
    env = dict(os.environ, SPINEBENCH_CACHE=str(cache_dir))
    evaluation = subprocess.run(
        [str(Path(sys.executable).parent / "spinebench-eval"), f"ckpt={run}", "data=segmentation_phantom_tiny",
         f"paths.log_dir={tmp_path / 'eval'}", "trainer.limit_test_images=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_refused(monkeypatch):
    from spinebench.errors import ConfigError

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert distributed.rank_batch_size(8) == 4
    with pytest.raises(ConfigError, match=r"trainer.batch_size=3 \(the global batch\) does not divide among 2 ranks"):
        distributed.rank_batch_size(3)


@pytest.mark.slow  # the same refusals end to end through torchrun (the quick tier checks them in-process)
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["run_name=r${oc.env:RANK}"], "torchrun: rank 1's run folder is"),
        (["trainer.batch_size=3"], "trainer.batch_size=3 (the global batch) does not divide among 2 ranks"),
    ],
)
def test_torchrun_mistakes_end_in_one_line(tmp_path, cache_dir, overrides, message):
    proc = _torchrun(tmp_path, cache_dir, *overrides)
    assert proc.returncode != 0
    assert f"spinebench-train: error: {message}" in proc.stderr, proc.stderr[-3000:]
    assert "/spinebench/" not in proc.stderr  # no traceback through our code (torchrun prints its own after)


def test_yolov8_under_torchrun_points_to_ultralytics_own_ddp(monkeypatch, tmp_path, cache_dir):
    """ultralytics starts its own DDP processes (model.args.device=[0,1]); under torchrun it would start N x N."""
    from spinebench.build import build
    from spinebench.errors import ConfigError

    from helpers.hydra import compose_cfg

    yolo = build(compose_cfg("train", ["model=yolov8n"], tmp_path, cache_dir).model, "model")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"not under torchrun: run spinebench-train alone with model.args.device"):
        yolo.fit(None, None)
