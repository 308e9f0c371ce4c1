"""The shared training loop: resume equivalence, determinism, checkpoint contents, config validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spinebench.engine import ConfigError, EpochSampler, TrainerConfig, fit, load_checkpoint, seed_everything
from spinebench.engine.loop import _publish, save_checkpoints
from spinebench.speed import speed_devices


class ToyModule:
    """A tiny regressor with dropout and noise augmentation: every source of randomness the engine must control."""

    def __init__(self):
        torch.manual_seed(123)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def training_step(self, batch, device):
        x, y = (t.to(device) for t in batch)
        x = x + 0.05 * torch.randn_like(x)  # "augmentation"
        return nn.functional.mse_loss(self.model(x), y)

    def validation(self, loader, device):
        errors = [nn.functional.mse_loss(self.model(x.to(device)), y.to(device)).item() for x, y in loader]
        return {"neg_mse": -sum(errors) / len(errors)}


def _loaders(seed=0, workers=0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = x.sum(1, keepdim=True)
    data = TensorDataset(x, y)
    train = DataLoader(data, batch_size=8, sampler=EpochSampler(data, seed=seed), num_workers=workers,
                       persistent_workers=workers > 0)  # as detection_loader and the segmentation loaders make them
    return train, DataLoader(data, batch_size=20)


def _cfg(epochs, **kw):
    return TrainerConfig.from_config({"device": "cpu", "epochs": epochs, "progress": "false", "seed": 3,
                                      "optimizer": {"name": "sgd", "lr": 0.05},
                                      "scheduler": {"name": "cosine", "warmup_epochs": 0.5}, **kw})


class Killed(Exception):
    pass


class KilledModule(ToyModule):
    """Dies in the middle of its second epoch, as a killed process would (last.pt holds epoch 1)."""

    def __init__(self, die_at_step=7):
        super().__init__()
        self.steps, self.die_at_step = 0, die_at_step

    def training_step(self, batch, device):
        self.steps += 1
        if self.steps == self.die_at_step:
            raise Killed
        return super().training_step(batch, device)


def _run(run_dir, epochs, module=None, workers=0, config=None, **kw):
    module = module or ToyModule()
    train, val = _loaders(workers=workers)
    result = fit(module, train, val, _cfg(epochs, **kw), run_dir, config=config or {"note": "test"}, monitor="neg_mse")
    return module, result


@pytest.mark.parametrize("workers", [0, 1])  # 1: a persistent worker draws its seed in the process's first epoch
def test_resume_equals_uninterrupted(tmp_path, workers):
    full, full_result = _run(tmp_path / "full", 3, workers=workers)
    with pytest.raises(Killed):  # killed in epoch 2 (5 batches per epoch) ...
        _run(tmp_path / "killed", 3, module=KilledModule(die_at_step=7), workers=workers)
    resumed, resumed_result = _run(tmp_path / "killed", 3, workers=workers)  # ... and the same command run again
    assert resumed_result.resumed_from == 1
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["val_neg_mse"] for h in full_result.history] == [h["val_neg_mse"] for h in resumed_result.history]
    assert full_result.best_metric == resumed_result.best_metric
    # a finished run started again trains nothing and keeps its result
    again, again_result = _run(tmp_path / "full", 3)
    assert again_result.resumed_from == 3 and again_result.best_metric == full_result.best_metric



def test_a_run_folder_is_not_resumed_under_other_settings(tmp_path):
    """The folder is named after model, trainer and seed only: the same command with another lr lands in it, and
    resuming there would finish one run's checkpoint under the other's config and label."""
    config = {"seed": 0, "trainer": {"optimizer": {"lr": 0.05}, "num_workers": 4}, "paths": {"output_dir": "a"}}
    with pytest.raises(Killed):
        _run(tmp_path, 2, module=KilledModule(die_at_step=7), config=config)
    other_lr = {**config, "trainer": {"optimizer": {"lr": 0.5}, "num_workers": 4}}
    with pytest.raises(ConfigError, match=r"this run was trained with other settings: trainer.optimizer.lr \(was 0.05\)"):
        _run(tmp_path, 2, config=other_lr)
    # what does not change what is learnt may differ: loader workers, cuDNN determinism, the folder's path, the
    # pretrained file's path, and a phantom's folder (the phantom is named by data.phantom, its folder by the cache)
    neutral = {**config, "trainer": {"optimizer": {"lr": 0.05}, "num_workers": 0, "deterministic": False},
               "paths": {"output_dir": "b"}, "weights_source": "/elsewhere/sam.pth"}
    assert _run(tmp_path, 2, config=neutral)[1].resumed_from == 1


def test_only_a_phantoms_folder_may_move_between_a_run_and_its_restart(tmp_path):
    phantom = {"seed": 0, "data": {"root": "/cache1/phantom/x", "phantom": {"seed": 0}}}
    _run(tmp_path / "phantom", 1, config=phantom)
    moved = {**phantom, "data": {"root": "/cache2/phantom/x", "phantom": {"seed": 0}}}
    assert _run(tmp_path / "phantom", 1, config=moved)[1].resumed_from == 1
    real = {"seed": 0, "data": {"root": "/data/release"}}
    _run(tmp_path / "real", 1, config=real)
    with pytest.raises(ConfigError, match=r"data.root \(was '/data/release'\)"):
        _run(tmp_path / "real", 1, config={"seed": 0, "data": {"root": "/data/other"}})


def test_a_kill_between_linking_best_and_renaming_last_leaves_best_its_bytes(tmp_path):
    """save_checkpoints links best.pt to last.pt.writing before renaming it: killed in between, the next save must
    not write into the file best.pt shares."""
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    written = last.with_suffix(".pt.writing")
    torch.save({"epoch": 2}, written)  # epoch 2, the best: linked, then killed before the rename
    _publish(written, best)
    save_checkpoints({"epoch": 3}, last)  # the resumed run's next epoch, not better
    assert load_checkpoint(best)["epoch"] == 2 and load_checkpoint(last)["epoch"] == 3


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", b"not a checkpoint at all"])
def test_a_checkpoint_that_cannot_be_read_is_refused_naming_it_and_kept(content, tmp_path):
    """last.pt is written atomically, so only a copy or a disk can cut it short; resuming from it then stops in one
    line naming the file (torch's own message does not), and the file stays for the user to restore."""
    _run(tmp_path, 1)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(content)
    with pytest.raises(ValueError, match=f"{last}: unreadable checkpoint"):
        _run(tmp_path, 2)
    assert last.read_bytes() == content

def test_a_run_does_not_inherit_an_earlier_runs_cudnn_settings():
    """The cuDNN flags are process-wide: a deterministic job earlier in a sweep used to leave a later GPU job
    deterministic and without autotuning."""
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    try:
        seed_everything(0, deterministic=True)
        torch.use_deterministic_algorithms(True, warn_only=True)  # as ultralytics' deterministic=True leaves it
        assert (cudnn.benchmark, cudnn.deterministic) == (False, True)
        seed_everything(0, deterministic=False)
        assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        cudnn.benchmark, cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2])


def test_same_seed_same_result_other_seed_differs(tmp_path):
    _, a = _run(tmp_path / "a", 2)
    _, b = _run(tmp_path / "b", 2)
    _, c = _run(tmp_path / "c", 2, **{"seed": 4})
    assert a.history[-1]["val_neg_mse"] == b.history[-1]["val_neg_mse"]
    assert a.history[-1]["val_neg_mse"] != c.history[-1]["val_neg_mse"]


def test_checkpoint_contents_and_grad_clip(tmp_path):
    _, result = _run(tmp_path / "run", 2, grad_clip=1.0, scheduler={"name": "poly", "warmup_iters": 2})
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(tmp_path / "run" / "checkpoints" / name)
        assert {"model", "optimizer", "scheduler", "epoch", "config", "best_metric", "history"} <= set(state)
        assert state["config"] == {"note": "test"}
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == result.best_epoch
    assert result.history[-1]["lr"] < 0.05  # the schedule decayed


def test_non_finite_loss_stops_the_run_naming_its_step(tmp_path):
    """Losses are read back in groups (engine.loop.SYNC_EVERY), yet the error names the first bad step and
    last.pt keeps the last good epoch."""

    class Diverging(ToyModule):
        steps = 0

        def training_step(self, batch, device):
            self.steps += 1
            loss = super().training_step(batch, device)
            return loss * float("inf") if self.steps == 8 else loss  # epoch 2, step 3 (5 batches per epoch)

    with pytest.raises(FloatingPointError, match=r"loss is inf at epoch 2, step 3 \("):
        _run(tmp_path, 3, module=Diverging())
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1


def test_train_loss_is_the_mean_of_the_epoch(tmp_path):
    class Constant(ToyModule):
        def training_step(self, batch, device):
            return self.model(batch[0].to(device)).sum() * 0 + 2.5

    _, result = _run(tmp_path, 1, module=Constant())
    assert result.history[0]["train_loss"] == 2.5


def test_reduced_checkpoint_state(tmp_path):
    """A module may store only part of its weights (SAMed: LoRA + decoder)."""

    class Partial(ToyModule):
        def checkpoint_state(self):
            return {k: v for k, v in self.model.state_dict().items() if k.startswith("3.")}

        def load_checkpoint_state(self, state):
            self.model.load_state_dict(state, strict=False)

    module = Partial()
    train, val = _loaders()
    fit(module, train, val, _cfg(1), tmp_path, monitor="neg_mse")
    assert set(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]) == {"3.weight", "3.bias"}


def test_a_monitor_the_task_does_not_report_is_refused_before_training(tmp_path):
    class Declared(ToyModule):
        validation_metrics = ("neg_mse",)

        def training_step(self, batch, device):
            raise AssertionError("trained before the monitor was checked")

    train, val = _loaders()
    with pytest.raises(ConfigError, match="trainer.monitor='mse' is not a validation metric of this task: neg_mse"):
        fit(Declared(), train, val, _cfg(1), tmp_path, monitor="mse")


@pytest.mark.parametrize("override, message", [
    ({"epochs": "abc"}, "trainer.epochs must be an integer"),
    ({"optimizer": {"lr": "fast"}}, "trainer.optimizer.lr must be a number"),
    ({"optimizer": {"name": "lion"}}, "trainer.optimizer.name"),
    ({"bogus": 1}, "unknown key trainer.bogus"),
    ({"scheduler": {"name": "exp"}}, "trainer.scheduler.name"),
    ({"cpu_fps_images": -1}, "trainer.cpu_fps_images must be >= 0"),
    ({"cpu_fps_warmup": -1}, "trainer.cpu_fps_warmup must be >= 0"),
])
def test_bad_trainer_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        TrainerConfig.from_config(override)


def test_a_gpu_run_times_batch1_inference_on_the_cpu_too_when_asked():
    """The paper scores implantability on a CPU and a GPU for every model: trainer=gpu sets cpu_fps_images, so
    a GPU run times its model on the CPU after its own device. A CPU run's own figures are the CPU's already."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    asked = TrainerConfig.from_config({"cpu_fps_images": 20})
    assert speed_devices(cuda, asked) == [cuda, cpu]
    assert speed_devices(cuda, TrainerConfig.from_config({})) == [cuda]  # 0 by default
    assert speed_devices(cpu, asked) == [cpu]


def test_each_epoch_is_serialised_once_and_best_keeps_its_epoch(tmp_path):
    """best.pt is a hard link to the epoch's last.pt when that epoch is the best (one write of a 330 MB state,
    not two); the next epoch's last.pt replaces the file, so best.pt keeps the best epoch's bytes."""

    class Scripted(ToyModule):
        scores, calls = [1.0, 3.0, 2.0], 0

        def validation(self, loader, device):
            self.calls += 1
            return {"neg_mse": self.scores[self.calls - 1]}

    checkpoints = tmp_path / "checkpoints"
    _, two = _run(tmp_path, 2, module=Scripted())  # epoch 2 is the best so far: one file under two names
    assert two.best_epoch == 2 and (checkpoints / "best.pt").samefile(checkpoints / "last.pt")
    module = Scripted()
    module.calls = 2  # resumed at epoch 3, whose score (2.0) is worse
    _, three = _run(tmp_path, 3, module=module)
    assert three.best_epoch == 2 and not (checkpoints / "best.pt").samefile(checkpoints / "last.pt")
    assert load_checkpoint(checkpoints / "best.pt")["epoch"] == 2 and load_checkpoint(checkpoints / "last.pt")["epoch"] == 3
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left


def test_the_history_records_each_epochs_own_learning_rate(tmp_path):
    schedule = {"name": "step", "step_size": 1.0, "gamma": 0.1, "warmup_epochs": 0}
    _, result = _run(tmp_path, 3, scheduler=schedule)
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.005, 0.0005])  # not the next epoch's


def test_eval_batch_size_is_resume_neutral_unless_validation_is_capped(tmp_path):
    """With trainer.limit_val_batches set, the batch size decides which validation images pick `best`."""
    from spinebench.engine import ConfigError, check_same_settings

    saved = {"trainer": {"eval_batch_size": 4, "limit_val_batches": None}}
    check_same_settings(tmp_path, saved, {"trainer": {"eval_batch_size": 16, "limit_val_batches": None}})
    capped = {"trainer": {"eval_batch_size": 4, "limit_val_batches": 2}}
    with pytest.raises(ConfigError, match=r"other settings: trainer.eval_batch_size \(was 4\)"):
        check_same_settings(tmp_path, capped, {"trainer": {"eval_batch_size": 16, "limit_val_batches": 2}})


def test_a_run_from_before_data_domain_resumes(tmp_path):
    """data.domain (which side of the report a run goes to) came after runs that must still resume."""
    from spinebench.engine import check_same_settings

    check_same_settings(tmp_path, {"data": {"name": "d"}}, {"data": {"name": "d", "domain": "porcine"}})
