"""`SegmentationBenchmark`: the Benchmark (spinebench.contract) of every segmenter; SAMed's subclass adds its
frozen-encoder rules (spinebench.segmentation.samed_benchmark).

A model config is the benchmark's settings and, nested, its network's builder:

    _target_: spinebench.segmentation.benchmark.SegmentationBenchmark
    name: deeplabv3
    row: deeplabv3
    input_size: [256, 256]
    loss: {ce: 1.0, dice: 0.0, aux: 0.5}
    network:
      _target_: spinebench.segmentation.models.build_deeplabv3
      _partial_: true
      pad_multiple: 8
      backbone_weights: auto

The benchmark calls the network node with the run's `num_classes` and, where the builder marks an argument as its
pretrained file (models.takes_pretrained), resolves that argument's `auto`: the builder's files found locally,
else from scratch, said loudly. `input_size: [H, W]` resizes inputs (the paper: 256 x 256); `null` feeds the
native 275 x 690 padded to the network's multiple. `trainer.max_input_size` (smoke runs) caps the size.
Evaluation always scores at the native size. A finished run is rebuilt from its checkpoint without its
pretrained file: the checkpoint holds every weight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from spinebench.classes import SEGMENTATION_CLASSES
from spinebench.contract import Benchmark, ResumeRule, RunContext
from spinebench.data.resident import ResidentBatches, upload, wants_resident
from spinebench.engine import TEST_SPLIT_AMP, EpochSampler, load_checkpoint, precision_label
from spinebench.engine.config import input_size as checked_input_size
from spinebench.engine.config import non_negative_number, positive_int
from spinebench.errors import ConfigError
from spinebench.runinfo import count_parameters, write_json
from spinebench.segmentation import models
from spinebench.segmentation.data import SegmentationSplit
from spinebench.segmentation.losses import SegmentationLoss
from spinebench.segmentation.task import SegmentationModule, evaluate_split, load_model_state
from spinebench.speed import batch1_speed
from spinebench.weights import resolve_weights

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

log = logging.getLogger(__name__)
MONITOR = "mean_dice"
NATIVE_SIZE = [275, 690]
WEIGHTS_SOURCE = "weights_source"  # a checkpoint config's record of the pretrained file its run started from


def is_auto(value: Any) -> bool:
    return str(value).lower() == "auto"


def pretrained_file_may_move(saved: dict[str, Any], current: dict[str, Any]) -> tuple[str, ...]:
    """A resume rule: where the pretrained file was found is no setting (another machine's weights folder); the
    checkpoints hold every weight it gave."""
    return (WEIGHTS_SOURCE,)


class SegmentationBenchmark(Benchmark):
    task = "segmentation"
    size_multiple = 1  # what an input size capped by trainer.max_input_size is rounded to

    def __init__(
        self,
        name: str,
        network: Callable[..., models.Segmenter],
        row: str | None = None,
        input_size: Sequence[int] | None = (256, 256),
        loss: dict | None = None,
        num_classes: int = len(SEGMENTATION_CLASSES),
        n_overlays: int = 8,
    ):
        if not callable(network):
            raise ConfigError(
                f"model.network={network!r}: must be a network builder node (_target_: "
                "spinebench.segmentation.models.build_..., _partial_: true, and its settings)"
            )
        if num_classes != len(SEGMENTATION_CLASSES):
            raise ConfigError(
                f"model.num_classes={num_classes}, but the segmentation data has "
                f"{len(SEGMENTATION_CLASSES)} classes ({', '.join(SEGMENTATION_CLASSES)})"
            )
        self.name, self.row, self.network = name, row, network
        self.input_size = checked_input_size(input_size) if input_size is not None else None  # null: native
        self.loss_cfg = self._loss_weights(loss)
        self.num_classes = int(num_classes)
        self.n_overlays = positive_int(n_overlays, "model.n_overlays", allow_zero=True)
        self.pretrained_argument = models.pretrained_argument(network)

    @staticmethod
    def _loss_weights(loss: Any) -> dict[str, float]:
        """model.loss's weights, checked here: a typo'd value would otherwise fail at the first training step and
        a typo'd key would be ignored."""
        weights = {"ce": 1.0, "dice": 0.0, "aux": 0.0}
        if loss is None:
            return weights
        if not hasattr(loss, "items"):
            raise ConfigError(f"model.loss={loss}: must be a mapping of {', '.join(weights)} weights")
        for key, value in loss.items():
            if key not in weights:
                raise ConfigError(f"unknown key model.loss.{key} (known: {', '.join(weights)})")
            weights[key] = non_negative_number(value, f"model.loss.{key}")
        if not weights["ce"] and not weights["dice"]:
            raise ConfigError("model.loss: ce and dice are both 0, nothing to train on")
        return weights

    # -- building ---------------------------------------------------------------------------------------------
    def effective_size(self, ctx: RunContext | None) -> list[int] | None:
        cap = getattr(ctx.trainer, "max_input_size", None) if ctx is not None else None
        size = self.input_size
        if cap:
            base = size or NATIVE_SIZE
            if max(base) > cap:
                scale, multiple = cap / max(base), self.size_multiple
                size = [max(multiple, int(round(s * scale / multiple)) * multiple) for s in base]
        return size

    def build_model(self, ctx: RunContext | None = None, trained: dict | None = None) -> torch.nn.Module:
        """The network for training (`trained` None: its `auto` pretrained file looked for), or for scoring a
        finished run (`trained`: the config stored in its checkpoint)."""
        return self.network(num_classes=self.num_classes, **self._network_arguments(ctx, trained))

    def _network_arguments(self, ctx: RunContext | None, trained: dict | None, search: bool = True) -> dict:
        """What the benchmark decides of the network's arguments: its pretrained file. Rebuilding a finished run
        reads none, whatever the config says (a path that has moved since is no matter): the checkpoint holds
        every weight. `search=False`: `auto` stays unresolved (a settings check looks for nothing)."""
        argument = self.pretrained_argument
        if argument is None:
            return {}
        if trained is not None:
            return {argument.key: None}
        if is_auto(models.network_settings(self.network).get(argument.key)):
            return {argument.key: self._auto_weights(ctx) if search else None}
        return {}

    def check_settings(self) -> None:
        """Build the network once, for its settings' own errors (they are otherwise met only in fit())."""
        self.network(num_classes=self.num_classes, **self._network_arguments(None, None, search=False))

    def _auto_weights(self, ctx: RunContext | None) -> str | None:
        """The file an `auto` pretrained argument stands for: the builder's file found locally (smp's ImageNet
        encoder also in the Hugging Face cache), else None: from scratch, with resolve_weights' banner."""
        argument = self.pretrained_argument
        if not argument.files and not argument.smp_encoder:
            raise ConfigError(
                f"{models.NETWORK}.{argument.key}=auto: {self.name} has no pretrained file of the "
                "paper to look for; give a local file, or null to train from scratch"
            )
        files, also_looked_in = list(argument.files), []
        if argument.smp_encoder:
            cached, files = models.smp_imagenet_weights(models.network_settings(self.network)["encoder_name"])
            if cached:
                log.info(
                    "%s: starting from smp's ImageNet encoder weights in the Hugging Face cache, %s", self.name, cached
                )
                return cached
            from huggingface_hub import constants

            also_looked_in = [f"the Hugging Face cache {constants.HF_HUB_CACHE}"]
        return self._find_weights(files, ctx, also_looked_in)

    def _find_weights(self, files: list[str], ctx: RunContext | None, also_looked_in: Sequence[str] = ()) -> str | None:
        choice = resolve_weights(
            "auto", files, ctx.cache_dir if ctx is not None else None, self.name, also_looked_in=also_looked_in
        )
        return str(choice.path) if choice.path else None

    def module(
        self, ctx: RunContext | None = None, augment: bool = True, trained: dict | None = None
    ) -> SegmentationModule:
        loss = SegmentationLoss(
            self.num_classes,
            ce_weight=self.loss_cfg["ce"],
            dice_weight=self.loss_cfg["dice"],
            aux_weight=self.loss_cfg["aux"],
        )
        return SegmentationModule(self.build_model(ctx, trained), loss, self.effective_size(ctx), augment=augment)

    @staticmethod
    def loader(
        dataset: SegmentationSplit,
        batch_size: int,
        train: bool,
        workers: int,
        device: torch.device,
        seed: int = 0,
        on_device: str = "false",
    ) -> DataLoader | ResidentBatches:
        """Batches (images, masks, indices); `on_device` (trainer.data_on_device) serves them from the split held
        on the device."""
        sampler, drop_last = EpochSampler(dataset, seed=seed, shuffle=train), train and len(dataset) > batch_size
        if wants_resident(on_device, [dataset.images, dataset.masks], device):
            return ResidentBatches(
                [upload(dataset.images, device), upload(dataset.masks, device)],
                batch_size,
                sampler,
                drop_last,
                lambda tensors, indices: (*tensors, torch.tensor(indices)),
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def _pretrained(self, model: torch.nn.Module) -> dict[str, Any]:
        source = getattr(model, "pretrained_source", None)
        return {"pretrained": source is not None, "pretrained_source": source}

    def _starting_point(self, model: torch.nn.Module) -> dict[str, Any]:
        """What a training run starts from (the record's `pretrained`, `pretrained_source`)."""
        return self._pretrained(model)

    def checkpoint_keys(self, pretrained_source: str | None) -> dict[str, Any]:
        """What every checkpoint's config records beside the run's config: where its pretrained file was found
        (a network whose checkpoints lack weights is rebuilt from it, see SamedBenchmark)."""
        return {WEIGHTS_SOURCE: pretrained_source}

    # -- protocol ---------------------------------------------------------------------------------------------
    def resume_rules(self) -> tuple[ResumeRule, ...]:
        return (pretrained_file_may_move,)

    def fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        module = self.module(ctx, augment=trainer.augment)
        info = self._starting_point(module.model)
        train_set = SegmentationSplit(spec, "train", ctx.cache_dir)
        val_limit = trainer.limit_val_batches * trainer.val_batch_size if trainer.limit_val_batches else None
        val_set = SegmentationSplit(spec, "val", ctx.cache_dir, limit=val_limit)
        train_loader = self.loader(
            train_set, trainer.batch_size, True, trainer.num_workers, device, ctx.seed, on_device=trainer.data_on_device
        )
        val_loader = self.loader(
            val_set, trainer.val_batch_size, False, trainer.num_workers, device, on_device=trainer.data_on_device
        )
        config = {**ctx.config, **self.checkpoint_keys(info["pretrained_source"])}
        result = ctx.fit(module, train_loader, val_loader, MONITOR, config=config)
        return {
            **info,
            **result.facts(),
            "input_size": self.effective_size(ctx),
            "trainable_params": count_parameters(module.model, True),
            "fit_wall_time_s": result.wall_time_s,
        }

    def test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        state = load_checkpoint(checkpoint)
        module = self.module(ctx, augment=False, trained=state.get("config") or {})
        load_model_state(module.model, state["model"], source=f"checkpoint {checkpoint}")
        module.model.to(device).eval()
        dataset = SegmentationSplit(spec, "test", ctx.cache_dir, limit=trainer.limit_test_images)
        loader = self.loader(
            dataset, trainer.val_batch_size, False, trainer.num_workers, device, on_device=trainer.data_on_device
        )
        start = time.perf_counter()
        metrics, summary = evaluate_split(
            module,
            loader,
            dataset.names,
            device,
            ctx.run_dir,
            self.n_overlays,
            amp=TEST_SPLIT_AMP,
            mask_paths=dataset.mask_paths,
        )
        log.info("test: %d images in %.2f s", len(dataset), time.perf_counter() - start)
        summary.update({"model": self.name, "data": spec.name, "checkpoint": str(checkpoint)})
        write_json(ctx.run_dir / "summary.json", summary)
        images = [dataset[i][0][None].to(device) for i in range(min(8, len(dataset)))]

        def predict_on(target: torch.device):
            module.model.to(target)
            return module.predict

        speed = batch1_speed(predict_on, images, device, trainer)
        return {
            "metrics": metrics,
            "params": count_parameters(module.model),
            **speed,
            "input_size": self.effective_size(ctx),
            "test_precision": precision_label(device, TEST_SPLIT_AMP),
            "checkpoint_epoch": state.get("epoch"),
            "test_images": len(dataset),
            "test_wall_time_s": time.perf_counter() - start,
        }
