"""The shared training loop: resume equivalence, determinism, checkpoint contents, config validation."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spinebench.engine import (
    ConfigError,
    EpochSampler,
    TrainerConfig,
    check_same_settings,
    fit,
    load_checkpoint,
    seed_everything,
)
from spinebench.engine.config import check_trainer_key
from spinebench.engine.loop import _publish, build_optimizer, build_scheduler, save_checkpoints
from spinebench.errors import RunStateError
from spinebench.speed import speed_devices

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SGD = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}


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
    train = DataLoader(
        data, batch_size=8, sampler=EpochSampler(data, seed=seed), num_workers=workers, persistent_workers=workers > 0
    )  # as detection_loader and the segmentation loaders make them
    return train, DataLoader(data, batch_size=20)


def _cfg(epochs, **kw):
    return TrainerConfig.from_config(
        {
            "device": "cpu",
            "epochs": epochs,
            "progress": "false",
            "seed": 3,
            "optimizer": SGD,
            "scheduler": _schedule("cosine", warmup_epochs=0.5),
            **kw,
        }
    )


def _schedule(name, **kw):
    return {"_target_": f"spinebench.engine.schedules.{name}", "_partial_": True, **kw}


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


def _run(run_dir, epochs, module=None, workers=0, config=None, rules=(), **kw):
    module = module or ToyModule()
    train, val = _loaders(workers=workers)
    result = fit(
        module,
        train,
        val,
        _cfg(epochs, **kw),
        run_dir,
        config=config or {"note": "test"},
        monitor="neg_mse",
        resume_rules=rules,
    )
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
    with pytest.raises(ConfigError, match=r"trained with other settings: trainer.optimizer.lr \(was 0.05\)"):
        _run(tmp_path, 2, config=other_lr)
    # the trainer's runtime keys (loader workers, cuDNN determinism) may differ on their own; where the folders are
    # only when a rule says so (the runner's, here)
    neutral = {
        **config,
        "trainer": {"optimizer": {"lr": 0.05}, "num_workers": 0, "deterministic": False},
        "paths": {"output_dir": "b"},
    }
    with pytest.raises(ConfigError, match=r"other settings: paths.output_dir \(was 'a'\)\. Run the original"):
        _run(tmp_path, 2, config=neutral)
    assert _run(tmp_path, 2, config=neutral, rules=[lambda before, now: ["paths"]])[1].resumed_from == 1


def test_resume_rules_let_keys_differ_or_refuse_the_resume(tmp_path):
    """The engine knows no model or data source: their rules say which of their keys a resume may change (a
    phantom's folder follows the cache), or refuse it (a frozen encoder's file that is not the one trained on)."""

    def phantom_folder(before, now):  # as the data layer's rule: only a phantom's folder may move
        return ["data.root"] if "data.phantom.seed" in before and "data.phantom.seed" in now else []

    def frozen_file(before, now):
        if before.get("frozen") != now.get("frozen"):
            raise ConfigError(f"frozen weights came from {before.get('frozen')}; this start found {now.get('frozen')}")
        return ()

    rules = [phantom_folder, frozen_file]
    phantom = {"seed": 0, "data": {"root": "/cache1/phantom/x", "phantom": {"seed": 0}}, "frozen": "sam.pth"}
    check_same_settings(tmp_path, phantom, {**phantom, "data": {"root": "/cache2/x", "phantom": {"seed": 0}}}, rules)
    real = {"seed": 0, "data": {"root": "/data/release"}, "frozen": "sam.pth"}
    with pytest.raises(ConfigError, match=r"data.root \(was '/data/release'\)"):
        check_same_settings(tmp_path, real, {**real, "data": {"root": "/data/other"}}, rules)
    with pytest.raises(ConfigError, match=f"^{tmp_path}: frozen weights came from sam.pth; this start found None$"):
        check_same_settings(tmp_path, real, {**real, "frozen": None}, rules)
    _run(tmp_path / "run", 1, config=phantom, rules=rules)  # fit() applies them too
    moved = {**phantom, "data": {"root": "/cache2/x", "phantom": {"seed": 0}}}
    assert _run(tmp_path / "run", 1, config=moved, rules=rules)[1].resumed_from == 1
    with pytest.raises(ConfigError, match=r"last.pt: frozen weights came from"):
        _run(tmp_path / "run", 1, config={**moved, "frozen": "other.pth"}, rules=rules)
    with pytest.raises(ConfigError, match=r"data.root \(was '/cache1/phantom/x'\)"):
        _run(tmp_path / "run", 1, config=moved)  # no rule: no key of theirs may move


def test_a_run_of_the_older_config_shape_is_refused_saying_so(tmp_path):
    """A checkpoint from before trainer.optimizer became a torch target stores `optimizer.name`: refused, naming
    the keys and the reason."""
    old = {"trainer": {"optimizer": {"name": "sgd", "lr": 0.05}}}
    new = {"trainer": {"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05}}}
    with pytest.raises(ConfigError) as info:
        check_same_settings(tmp_path, old, new)
    message = str(info.value)
    assert "trainer.optimizer._target_ (was '-')" in message and "older shape (no _target_)" in message
    assert "\n" not in message


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
    with pytest.raises(RunStateError, match=f"^{last}: unreadable checkpoint .*; restore it, or move it away"):
        _run(tmp_path, 2)
    assert last.read_bytes() == content
    with pytest.raises(RunStateError, match=f"^{tmp_path / 'none.pt'}: checkpoint not found$"):
        load_checkpoint(tmp_path / "none.pt")


class Payload:
    """What a hostile checkpoint would carry: unpickling it runs os.makedirs(marker)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    """Checkpoints hold tensors and plain values only: torch reads them with weights_only, so a file that would run
    code when unpickled (a run folder from elsewhere) is refused in one line and the code never runs."""
    marker = tmp_path / "ran"
    _run(tmp_path, 1)
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    torch.save({**state, "history": [Payload(str(marker))]}, last)
    with pytest.raises(RunStateError) as info:
        _run(tmp_path, 2)
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(f"{last}: unreadable checkpoint (it holds a Python object, os.makedirs, ")
    assert "\n" not in message and len(message) < 300


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
    _, result = _run(tmp_path / "run", 2, grad_clip=1.0, scheduler=_schedule("poly", warmup_iters=2))
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


@pytest.mark.parametrize(
    "override, message",
    [
        ({"epochs": "abc"}, "trainer.epochs must be an integer, got 'abc'"),
        ({"epochs": 1.5}, "trainer.epochs must be an integer, got 1.5"),
        ({"grad_clip": "high"}, "trainer.grad_clip must be a number, got 'high'"),
        ({"amp": "maybe"}, "trainer.amp must be true or false, got 'maybe'"),
        ({"bogus": 1}, "unknown key trainer.bogus (known: amp, augment, "),
        ({"batch_size": 0}, "trainer.batch_size must be > 0, got 0"),
        ({"mode": "foo"}, "trainer.mode must be max or min, got 'foo'"),
        ({"device": "gpu"}, "trainer.device must be auto, cpu or cuda[:N], got 'gpu'"),
        ({"data_on_device": "gpu"}, "trainer.data_on_device must be auto, true or false, got 'gpu'"),
        ({"cpu_fps_images": -1}, "trainer.cpu_fps_images must be >= 0, got -1"),
        ({"cpu_fps_warmup": -1}, "trainer.cpu_fps_warmup must be >= 0, got -1"),
        ({"optimizer": "adamw"}, "trainer.optimizer must be a mapping with a _target_ (trainer/optimizer=<file of "),
    ],
)
def test_bad_trainer_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        TrainerConfig.from_config(override)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epoch", None, "unknown key trainer.epoch (known: amp, augment, "),
        (
            "optimizer.learning_rate",
            None,
            "unknown key trainer.optimizer.learning_rate: no torch optimizer takes it (e.g. lr",
        ),
        (
            "optimizer.weight_decy",
            None,
            "unknown key trainer.optimizer.weight_decy: no torch optimizer takes it (did you mean weight_decay?)",
        ),
        ("scheduler.warmup", None, "unknown key trainer.scheduler.warmup: no torch scheduler takes it"),
        ("epochs", "abc", "trainer.epochs must be an integer, got 'abc'"),
        ("epochs", "2,abc", "trainer.epochs must be an integer, got 'abc'"),  # a sweep: each value
        ("amp", "maybe", "trainer.amp must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_trainer_override_on_the_command_line_is_one_line(key, value, message):
    """Checked before Hydra composes: its own messages are seven lines (and suggest `+trainer.epoch=`)."""
    with pytest.raises(ConfigError) as info:
        check_trainer_key(key.split("."), value)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("epochs", "3"),
        ("epochs", "1,2"),
        ("progress", "false"),
        ("grad_clip", "null"),
        ("optimizer.lr", "0.1"),
        ("optimizer._target_", "torch.optim.Adam"),
        ("scheduler.min_lr_ratio", "0"),
        ("scheduler.T_max", "10"),
        ("optimizer", None),
    ],
)
def test_good_trainer_overrides_pass_the_check(key, value):
    check_trainer_key(key.split("."), value)


@pytest.mark.parametrize(
    "optimizer, message",
    [
        ({"name": "sgd", "lr": 0.1}, "trainer.optimizer has no _target_ (a config of an older shape, or none given)"),
        (
            {"_target_": "torch.optim.Lion", "lr": 0.1},
            "trainer.optimizer._target_=torch.optim.Lion: Error locating target",
        ),
        ({"_target_": "torch.optim.AdamW", "momentum": 0.9}, "trainer.optimizer (AdamW): "),
        (
            {"_target_": "torch.optim.AdamW", "betas": [0.9, 1.5]},
            "trainer.optimizer (AdamW): Invalid beta parameter at index 1: 1.5",
        ),
    ],
)
def test_an_optimizer_torch_cannot_build_is_a_config_error(optimizer, message):
    with pytest.raises(ConfigError) as info:
        build_optimizer(nn.Linear(2, 1).parameters(), TrainerConfig.from_config({"optimizer": optimizer}))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def _compose(overrides, search_path=None):
    extra = [f"hydra.searchpath=[file://{search_path}]"] if search_path else []
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides])


def test_any_torch_optimizer_is_one_config_file_away(tmp_path):
    """A researcher's file in a trainer/optimizer/ folder of their own (torch.optim.RMSprop): composed, checked
    and built like the suite's, and its state is what resumes."""
    folder = tmp_path / "configs" / "trainer" / "optimizer"
    folder.mkdir(parents=True)
    (folder / "rmsprop.yaml").write_text("_target_: torch.optim.RMSprop\n_partial_: true\nlr: 0.01\nalpha: 0.95\n")
    cfg = _compose(["trainer/optimizer=rmsprop", "trainer.optimizer.lr=0.02"], tmp_path / "configs")
    trainer = TrainerConfig.from_config(cfg.trainer, device="cpu", epochs=2, progress="false")
    assert trainer.optimizer == {"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 0.02, "alpha": 0.95}
    train, val = _loaders()
    with pytest.raises(Killed):
        fit(KilledModule(die_at_step=7), train, val, trainer, tmp_path / "run", monitor="neg_mse")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["alpha"] == 0.95
    assert {"square_avg", "step"} <= set(state["optimizer"]["state"][0])
    resumed = fit(ToyModule(), train, val, trainer, tmp_path / "run", monitor="neg_mse")
    full = fit(ToyModule(), train, val, trainer, tmp_path / "full", monitor="neg_mse")
    assert resumed.resumed_from == 1 and resumed.history == [
        {**h, "images_per_s": r["images_per_s"]} for h, r in zip(full.history, resumed.history)
    ]


@pytest.mark.parametrize("trainer", ["default", "gpu", "smoke"], ids=lambda name: f"trainer={name}")  # not "gpu":
def test_every_trainer_file_composes_and_builds(trainer):  # that is the marker of the tests that need CUDA
    cfg = TrainerConfig.from_config(_compose([f"trainer={trainer}"]).trainer)
    optimizer = build_optimizer(nn.Linear(2, 1).parameters(), cfg)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.005
    build_scheduler(optimizer, cfg, steps_per_epoch=10)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment" / "paper").glob("*.yaml")))
def test_every_paper_recipe_builds_its_optimizer_and_schedule(experiment):
    """Each recipe's optimizer file replaces the default's whole: AdamW is never handed SGD's momentum."""
    cfg = TrainerConfig.from_config(_compose([f"experiment=paper/{experiment}"]).trainer)
    optimizer = build_optimizer(nn.Linear(2, 1).parameters(), cfg)
    assert type(optimizer).__name__ == cfg.optimizer["_target_"].rsplit(".", 1)[-1]
    assert build_scheduler(optimizer, cfg, steps_per_epoch=10).get_last_lr() == [
        optimizer.defaults["lr"]
        * (cfg.scheduler["warmup_factor"] if cfg.scheduler["warmup_epochs"] or cfg.scheduler["warmup_iters"] else 1)
    ]


def test_a_hydra_override_of_the_wrong_type_fails_at_composition():
    """The schema is Hydra's (trainer/base): a typo in a trainer file or a wrong type never reaches a run."""
    with pytest.raises(Exception, match="trainer.epochs=abc"):
        _compose(["trainer.epochs=abc"])


def _reference_multiplier(
    name,
    step,
    epochs,
    steps_per_epoch,
    warmup_epochs=0.0,
    warmup_iters=None,
    warmup_factor=0.001,
    min_lr_ratio=0.0,
    power=0.9,
    step_size=10.0,
    gamma=0.1,
):
    """The engine's schedule as it was written before it became a `_partial_` target: the new one must equal it."""
    total = max(1, epochs * steps_per_epoch)
    warmup = warmup_iters if warmup_iters is not None else int(round(warmup_epochs * steps_per_epoch))
    warmup = min(max(0, warmup), total - 1) if total > 1 else 0
    if step < warmup:
        alpha = step / warmup
        return warmup_factor * (1 - alpha) + alpha
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if name == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "poly":
        return (1 - progress) ** power
    return gamma ** int(step // max(1, round(step_size * steps_per_epoch)))


@pytest.mark.parametrize(
    "name, kw",
    [
        ("cosine", {"warmup_epochs": 1.0, "min_lr_ratio": 0.01}),
        ("cosine", {"warmup_epochs": 0.5}),
        ("poly", {"warmup_iters": 7, "power": 0.9}),
        ("step", {"step_size": 1.5, "gamma": 0.1}),
        ("step", {"warmup_epochs": 1.0, "step_size": 2.0, "gamma": 0.5}),
        ("constant", {"warmup_epochs": 0.0}),
        ("constant", {"warmup_epochs": 3.0, "warmup_factor": 0.01}),
        ("cosine", {"warmup_iters": 500}),
    ],
)
def test_the_schedules_are_the_engines_per_iteration_schedule_exactly(name, kw):
    epochs, steps_per_epoch = 4, 6
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    cfg = TrainerConfig.from_config({"epochs": epochs, "scheduler": _schedule(name, **kw)})
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    for step in range(epochs * steps_per_epoch + 2):
        assert scheduler.lr_lambdas[0](step) == _reference_multiplier(name, step, epochs, steps_per_epoch, **kw)


def test_a_torch_scheduler_gets_the_step_counts_its_signature_names():
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    cfg = TrainerConfig.from_config(
        {"epochs": 3, "scheduler": {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.1}}
    )
    assert build_scheduler(optimizer, cfg, steps_per_epoch=5).total_steps == 15
    cfg = TrainerConfig.from_config({"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 4}})
    assert build_scheduler(optimizer, cfg, steps_per_epoch=5).step_size == 4  # counted in iterations


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
    assert (
        load_checkpoint(checkpoints / "best.pt")["epoch"] == 2
        and load_checkpoint(checkpoints / "last.pt")["epoch"] == 3
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left


def test_the_history_records_each_epochs_own_learning_rate(tmp_path):
    schedule = _schedule("step", step_size=1.0, gamma=0.1, warmup_epochs=0)
    _, result = _run(tmp_path, 3, scheduler=schedule)
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.005, 0.0005])  # not the next epoch's


def test_eval_batch_size_is_resume_neutral_unless_validation_is_capped(tmp_path):
    """With trainer.limit_val_batches set, the batch size decides which validation images pick `best`."""
    saved = {"trainer": {"eval_batch_size": 4, "limit_val_batches": None}}
    check_same_settings(tmp_path, saved, {"trainer": {"eval_batch_size": 16, "limit_val_batches": None}})
    capped = {"trainer": {"eval_batch_size": 4, "limit_val_batches": 2}}
    with pytest.raises(ConfigError, match=r"other settings: trainer.eval_batch_size \(was 4\)"):
        check_same_settings(tmp_path, capped, {"trainer": {"eval_batch_size": 16, "limit_val_batches": 2}})


def test_ultralytics_gets_the_trainer_optimizer_by_its_own_names():
    """YOLO trains in ultralytics, which builds its optimizer by name: the recipe's torch class and keywords map to
    ultralytics' (its Adam family takes momentum as beta1), a keyword left out to torch's default."""
    from spinebench.detection.yolo import ultralytics_optimizer

    paper = TrainerConfig.from_config(_compose(["experiment=paper/yolov8m"]).trainer)
    assert ultralytics_optimizer(paper.optimizer, paper.scheduler) == {
        "optimizer": "AdamW",
        "lr0": 0.000422,
        "momentum": 0.937,
        "weight_decay": 0.0005,
        "warmup_epochs": 3.0,
        "cos_lr": False,
        "lrf": 0.01,
    }
    default = TrainerConfig.from_config(_compose(["model=yolov8m"]).trainer)
    assert ultralytics_optimizer(default.optimizer, default.scheduler) == {
        "optimizer": "SGD",
        "lr0": 0.005,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "warmup_epochs": 1.0,
        "cos_lr": True,
        "lrf": 0.01,
    }
    assert ultralytics_optimizer({"_target_": "torch.optim.RMSprop"}, {})["optimizer"] == "RMSProp"
    with pytest.raises(ConfigError, match=r"^trainer.optimizer._target_=torch.optim.LBFGS: ultralytics builds only"):
        ultralytics_optimizer({"_target_": "torch.optim.LBFGS"}, {})


def test_the_fit_result_names_the_metric_that_chose_best(tmp_path):
    """The record's `monitor` is what picked best.pt: trainer.monitor when set, else the task's default."""
    _, default = _run(tmp_path / "default", 1)
    assert default.facts()["monitor"] == "neg_mse"

    class TwoMetrics(ToyModule):
        def validation(self, loader, device):
            return {**super().validation(loader, device), "other": 0.0}

    _, chosen = _run(tmp_path / "chosen", 1, module=TwoMetrics(), monitor="other")
    assert chosen.facts()["monitor"] == "other" and chosen.monitor == "other"
