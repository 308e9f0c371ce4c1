"""`SegmentationBenchmark`: the Benchmark protocol of spinebench.pipeline for every segmenter.

A model config (`configs/model/{deeplabv3,unet,segformer,samed}.yaml`) is
`_target_: spinebench.segmentation.benchmark.SegmentationBenchmark` with `name`, `row`, `arch`, `input_size`,
`loss` and the network's own keys (passed to its builder), e.g. `model.sam_checkpoint=PATH` for SAMed.

    arch       builder                                  network keys
    deeplabv3  models.build_deeplabv3 (torchvision)     pad_multiple, backbone_weights (path | auto | null), aux
    plain_unet models.build_plain_unet (ours)           pad_multiple, widths, weights
    segformer  models.build_segformer (smp)             encoder_name, decoder_channels, pad_multiple, encoder_weights (path | auto | null)
    smp        models.build_smp (any smp arch)          smp_arch, encoder_name, pad_multiple, encoder_weights, ...
    samed      samed.build_samed                        image_size, rank, sam_checkpoint (path | auto | null), init_seed

`input_size: [H, W]` resizes inputs (the paper: 256 x 256; SAMed square = image_size); `null` feeds the native
275 x 690 padded to the network's multiple. `trainer.max_input_size` (smoke runs) caps the size, SAMed's
image_size included. Evaluation always scores at the native size. A finished run is rebuilt from its checkpoint
without its pretrained file, except SAMed's (its checkpoints lack the frozen encoder).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch.utils.data import DataLoader

from spinebench.classes import SEGMENTATION_CLASSES
from spinebench.data.resident import ResidentBatches, upload, wants_resident
from spinebench.engine import TEST_SPLIT_AMP, EpochSampler, fit, load_checkpoint, precision_label
from spinebench.engine.config import ConfigError, non_negative_number, positive_int
from spinebench.engine.config import input_size as checked_input_size
from spinebench.engine.loop import FROZEN_WEIGHTS
from spinebench.runinfo import count_parameters, write_json
from spinebench.segmentation.data import SegmentationSplit
from spinebench.segmentation.losses import SegmentationLoss
from spinebench.segmentation.task import SegmentationModule, evaluate_split, load_model_state
from spinebench.speed import batch1_speed
from spinebench.weights import resolve_weights

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec
    from spinebench.pipeline import RunContext

log = logging.getLogger(__name__)
MONITOR = "mean_dice"
ARCHS = ("deeplabv3", "plain_unet", "segformer", "smp", "samed")
# arch -> (its weights key, the files `auto` looks for in the weights folders): torchvision's ImageNet ResNet-50
# (V1, V2) for DeepLabv3's backbone, the SAM ViT-B checkpoint the SAMed paper starts from, and for SegFormer smp's
# own ImageNet encoder (None: models.smp_imagenet_weights names it, and finds it in the Hugging Face cache too)
PRETRAINED_FILES = {"deeplabv3": ("backbone_weights", ["resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"]),
                    "samed": ("sam_checkpoint", ["sam_vit_b_01ec64.pth"]),
                    "segformer": ("encoder_weights", None)}
WEIGHTS_KEYS = {"plain_unet": "weights", "smp": "encoder_weights",  # arch -> its pretrained-file key
                **{arch: key for arch, (key, _) in PRETRAINED_FILES.items()}}
WEIGHTS_SOURCE = "weights_source"  # a checkpoint config's record of the pretrained file its run started from


def frozen_weights(source: str | None) -> str | None:
    """How a checkpoint config records the file of its frozen weights (engine.loop.FROZEN_WEIGHTS): its name and
    size, so the same file found in another folder (another machine's weights folder) still resumes."""
    if source is None:
        return None
    path = Path(source)
    return f"{path.name}, {path.stat().st_size} bytes"


class SegmentationBenchmark:
    task = "segmentation"

    def __init__(self, name: str, arch: str, row: str | None = None, input_size: Sequence[int] | None = (256, 256),
                 loss: dict | None = None, num_classes: int = len(SEGMENTATION_CLASSES), n_overlays: int = 8, **net: Any):
        if arch not in ARCHS:
            raise ValueError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")
        if num_classes != len(SEGMENTATION_CLASSES):
            raise ValueError(f"model.num_classes={num_classes}, but the segmentation data has "
                             f"{len(SEGMENTATION_CLASSES)} classes ({', '.join(SEGMENTATION_CLASSES)})")
        self.name, self.arch, self.row = name, arch, row
        self.input_size = checked_input_size(input_size) if input_size is not None else None  # null: native
        self.loss_cfg = self._loss_weights(loss)
        self.num_classes, self.net = int(num_classes), dict(net)
        self.n_overlays = positive_int(n_overlays, "model.n_overlays", allow_zero=True)
        if arch == "samed":
            size = positive_int(self.net.get("image_size", 512), "model.image_size")
            if self.input_size is not None and self.input_size != [size, size]:
                raise ValueError(f"SAMed takes square {size}x{size} inputs (model.image_size); "
                                 f"model.input_size={self.input_size} disagrees")
            self.input_size = [size, size]

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
        return weights

    # -- building ---------------------------------------------------------------------------------------------
    def effective_size(self, ctx: "RunContext | None") -> list[int] | None:
        cap = getattr(ctx.trainer, "max_input_size", None) if ctx is not None else None
        size = self.input_size
        if cap:
            base = size or [275, 690]
            if max(base) > cap:
                scale = cap / max(base)
                multiple = 16 if self.arch == "samed" else 1
                size = [max(multiple, int(round(s * scale / multiple)) * multiple) for s in base]
        return size

    def build_model(self, ctx: "RunContext | None" = None, trained: dict | None = None) -> torch.nn.Module:
        """The network, its `auto` weights key resolved by `_auto_weights`. Re-building a finished run (`trained`:
        the config stored in its checkpoint) reads no pretrained file, whatever the key says (a path that has moved
        since is no matter), since the checkpoint holds every weight: except SAMed's frozen encoder, see
        `_trained_weights`."""
        from spinebench.segmentation import models

        kwargs = dict(self.net)
        key = WEIGHTS_KEYS[self.arch]
        if trained is not None:
            kwargs[key] = self._trained_weights(trained, kwargs.get(key), ctx)
        elif str(kwargs.get(key)).lower() == "auto":
            kwargs[key] = self._auto_weights(ctx)
        if self.arch == "deeplabv3":
            return models.build_deeplabv3(self.num_classes, **kwargs)
        if self.arch == "plain_unet":
            return models.build_plain_unet(self.num_classes, **kwargs)
        if self.arch == "segformer":
            return models.build_segformer(self.num_classes, **kwargs)
        if self.arch == "smp":
            return models.build_smp(kwargs.pop("smp_arch", "Unet"), num_classes=self.num_classes, **kwargs)
        from spinebench.segmentation.samed import build_samed

        kwargs["image_size"] = self.effective_size(ctx)[0]
        return build_samed(self.num_classes, **kwargs)

    def _trained_weights(self, trained: dict, given: Any, ctx: "RunContext | None" = None) -> str | None:
        """The pretrained file a finished run is rebuilt from: None, its checkpoint holding every weight; for SAMed
        the SAM file its training recorded (else the one its config names), since its checkpoint lacks the frozen
        encoder only that file holds. Moved since (another weights folder), the file found now is used when its
        name and size are the recorded ones: the resume check accepts it on the same grounds."""
        if self.arch != "samed":
            return None
        if WEIGHTS_SOURCE in trained:
            source = trained[WEIGHTS_SOURCE]
        else:  # a checkpoint written before the source was recorded
            source = None if str(given).lower() == "auto" else given
        if source is None or Path(str(source)).expanduser().is_file():
            return source
        found = self._auto_weights(ctx) if str(given).lower() == "auto" else given
        if (trained.get(FROZEN_WEIGHTS) and found and Path(str(found)).expanduser().is_file()
                and frozen_weights(found) == trained[FROZEN_WEIGHTS]):
            log.info("%s: the SAM file it was trained from, %s, is now at %s", self.name, source, found)
            return str(found)
        raise FileNotFoundError(f"{source}: the SAM checkpoint this SAMed run was trained from is not there any "
                                    "more; the run's checkpoints hold only LoRA and the decoder, so scoring it needs "
                                    "that file (its frozen encoder) back at this path")

    def check_settings(self) -> None:
        """Build the network once, for its settings' own errors (the pipeline calls it where a mistyped setting
        would otherwise read as one changed since a trained run: the network is built only in fit())."""
        net, key = self.net, WEIGHTS_KEYS[self.arch]
        if str(net.get(key)).lower() == "auto":  # no search (and no from-scratch banner) for a check
            self.net = {**net, key: None}
        try:
            self.build_model()
        finally:
            self.net = net

    def _auto_weights(self, ctx: "RunContext | None") -> str | None:
        """The file an `auto` weights key stands for while training: the row's file found locally (SegFormer's
        also in the Hugging Face cache), else None: from scratch, with resolve_weights' banner."""
        from spinebench.segmentation import models

        if self.arch not in PRETRAINED_FILES:
            raise ConfigError(f"model.{WEIGHTS_KEYS[self.arch]}=auto: {self.arch} has no pretrained file of the paper "
                              "to look for; give a local file, or null to train from scratch")
        files, also_looked_in = PRETRAINED_FILES[self.arch][1], []
        if files is None:
            cached, files = models.smp_imagenet_weights(self.net.get("encoder_name", "mit_b5"))
            if cached:
                log.info("%s: starting from smp's ImageNet encoder weights in the Hugging Face cache, %s", self.name, cached)
                return cached
            from huggingface_hub import constants

            also_looked_in = [f"the Hugging Face cache {constants.HF_HUB_CACHE}"]
        choice = resolve_weights("auto", files, ctx.cache_dir if ctx is not None else None, self.name,
                                 also_looked_in=also_looked_in)
        return str(choice.path) if choice.path else None

    def module(self, ctx: "RunContext | None" = None, augment: bool = True,
               trained: dict | None = None) -> SegmentationModule:
        loss = SegmentationLoss(self.num_classes, ce_weight=self.loss_cfg["ce"], dice_weight=self.loss_cfg["dice"],
                                aux_weight=self.loss_cfg["aux"])
        return SegmentationModule(self.build_model(ctx, trained), loss, self.effective_size(ctx), augment=augment)

    @staticmethod
    def loader(dataset: SegmentationSplit, batch_size: int, train: bool, workers: int, device: torch.device,
               seed: int = 0, on_device: str = "false") -> DataLoader | ResidentBatches:
        """Batches (images, masks, indices); `on_device` (trainer.data_on_device) serves them from the split held
        on the device."""
        sampler, drop_last = EpochSampler(dataset, seed=seed, shuffle=train), train and len(dataset) > batch_size
        if wants_resident(on_device, [dataset.images, dataset.masks], device):
            return ResidentBatches([upload(dataset.images, device), upload(dataset.masks, device)], batch_size,
                                   sampler, drop_last, lambda tensors, indices: (*tensors, torch.tensor(indices)))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=device.type == "cuda", drop_last=drop_last, persistent_workers=workers > 0,
                          prefetch_factor=4 if workers > 0 else None)

    def _pretrained(self, model: torch.nn.Module) -> dict[str, Any]:
        source = getattr(model, "pretrained_source", None)
        return {"pretrained": source is not None, "pretrained_source": source}

    # -- protocol ---------------------------------------------------------------------------------------------
    def fit(self, ctx: "RunContext", spec: "DatasetSpec") -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        module = self.module(ctx, augment=trainer.augment)
        info = self._pretrained(module.model)
        if self.arch == "samed" and not info["pretrained"]:
            log.warning("SAMed WITHOUT the SAM checkpoint: random frozen encoder; put sam_vit_b_01ec64.pth in "
                        "$SPINEBENCH_WEIGHTS or <cache>/weights, or set model.sam_checkpoint=PATH. This run records "
                        "pretrained: false.")
        train_set = SegmentationSplit(spec.root, "train", ctx.cache_dir)
        val_limit = trainer.limit_val_batches * trainer.val_batch_size if trainer.limit_val_batches else None
        val_set = SegmentationSplit(spec.root, "val", ctx.cache_dir, limit=val_limit)
        train_loader = self.loader(train_set, trainer.batch_size, True, trainer.num_workers, device, ctx.seed,
                                   on_device=trainer.data_on_device)
        val_loader = self.loader(val_set, trainer.val_batch_size, False, trainer.num_workers, device,
                                 on_device=trainer.data_on_device)
        config = {**ctx.config, WEIGHTS_SOURCE: info["pretrained_source"]}  # in every checkpoint, for test()
        if self.arch == "samed":  # its checkpoints lack the frozen encoder: a resume must rebuild the same one
            config[FROZEN_WEIGHTS] = frozen_weights(info["pretrained_source"])
        result = fit(module, train_loader, val_loader, trainer, ctx.run_dir, config=config, monitor=MONITOR)
        return {**info, "epochs": result.epochs, "best_epoch": result.best_epoch, "best_val": result.best_metric,
                "monitor": trainer.monitor or MONITOR, "train_images_per_s": result.train_images_per_s,
                "input_size": self.effective_size(ctx), "trainable_params": count_parameters(module.model, True),
                "fit_wall_time_s": result.wall_time_s, "history": result.history}

    def test(self, ctx: "RunContext", spec: "DatasetSpec", checkpoint: Path) -> dict[str, Any]:
        trainer, device = ctx.trainer, ctx.device
        state = load_checkpoint(checkpoint)
        module = self.module(ctx, augment=False, trained=state.get("config") or {})
        load_model_state(module.model, state["model"], source=f"checkpoint {checkpoint}")
        module.model.to(device).eval()
        dataset = SegmentationSplit(spec.root, "test", ctx.cache_dir, limit=trainer.limit_test_images)
        loader = self.loader(dataset, trainer.val_batch_size, False, trainer.num_workers, device,
                             on_device=trainer.data_on_device)
        start = time.perf_counter()
        metrics, summary = evaluate_split(module, loader, dataset.names, device, ctx.run_dir, self.n_overlays,
                                          amp=TEST_SPLIT_AMP, mask_paths=dataset.mask_paths)
        log.info("test: %d images in %.2f s", len(dataset), time.perf_counter() - start)
        summary.update({"model": self.name, "data": spec.name, "checkpoint": str(checkpoint)})
        write_json(ctx.run_dir / "summary.json", summary)
        images = [dataset[i][0][None].to(device) for i in range(min(8, len(dataset)))]

        def predict_on(target: torch.device):
            module.model.to(target)
            return module.predict

        speed = batch1_speed(predict_on, images, device, trainer)
        return {"metrics": metrics, "params": count_parameters(module.model), **speed, "input_size": self.effective_size(ctx),
                "test_precision": precision_label(device, TEST_SPLIT_AMP), "checkpoint_epoch": state.get("epoch"),
                "test_images": len(dataset),
                "test_wall_time_s": time.perf_counter() - start, **self._pretrained(module.model)}
