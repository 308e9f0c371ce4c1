"""YOLOv8 through the ultralytics engine itself, offline and contained in the run folder (the model configs'
`_target_`; a Benchmark of spinebench.contract).

Containment (environment.md): YOLO_OFFLINE=1, YOLO_CONFIG_DIR=<cache>/ultralytics with local Arial fonts copied
from matplotlib's DejaVuSans, the split exported into `<run>/yolo_data` by symlinks (labels as YOLO txt) with
an absolute data.yaml, and absolute project=<run>, name=yolo: ultralytics writes nothing outside the run and
cache folders. `model.args.*` go to `YOLO.train` unchanged and win over the trainer mapping.

Trainer mapping: epochs, batch_size, optimizer (name/lr/momentum/weight_decay), warmup_epochs, cosine ->
cos_lr, min_lr_ratio -> lrf, amp, num_workers, seed, deterministic, device; limit_train_batches -> fraction.
Resume: `<run>/yolo/weights/last.pt` of an unfinished run -> `YOLO(last).train(resume=True)`; that file is
what `resume_files` names to the runner (ultralytics' layout is this module's alone).
Checkpoints: ultralytics' weights/{last,best}.pt are copied to `<run>/checkpoints/` (ultralytics' format).
Scoring: predictions on the test split (conf 0.001, NMS IoU 0.7, max 100 boxes) go through
spinebench.detection.coco like every detector; ultralytics' own test mAP is kept as `ultralytics_mAP50` /
`ultralytics_mAP50_95` for reference only (its interpolation differs from COCO's).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinebench.classes import DETECTION_CLASSES
from spinebench.contract import CHECKPOINT_DIR, Benchmark, RunContext
from spinebench.data.check import refuse_unreadable
from spinebench.data.detection import DetectionSample, read_detection_split
from spinebench.data.layout import find_splits
from spinebench.data.splits import release_root
from spinebench.detection.coco import coco_ground_truth, detections_to_coco
from spinebench.detection.outputs import score_and_write
from spinebench.engine import distributed
from spinebench.errors import ConfigError, RunStateError, WeightsError
from spinebench.runinfo import count_parameters
from spinebench.speed import batch1_speed
from spinebench.weights import resolve_weights

if TYPE_CHECKING:
    from spinebench.data.source import DatasetSpec

log = logging.getLogger(__name__)

SIZES = ("n", "s", "m", "l", "x")
YOLO_DIR, DATA_DIR, TEST_DATA_DIR, STATE_FILE = "yolo", "yolo_data", "yolo_test_data", "spinebench_yolo.json"
# ultralytics builds its own optimizer by name: the trainer's torch class (its `_target_`) as ultralytics names it
OPTIMIZERS = {
    "SGD": "SGD",
    "Adam": "Adam",
    "Adamax": "Adamax",
    "AdamW": "AdamW",
    "NAdam": "NAdam",
    "RAdam": "RAdam",
    "RMSprop": "RMSProp",
}


def ultralytics_optimizer(optimizer: dict[str, Any], scheduler: dict[str, Any]) -> dict[str, Any]:
    """ultralytics' optimizer, lr0, momentum, weight_decay, warmup_epochs, cos_lr and lrf for the trainer's
    optimizer and schedule (`_partial_` targets). A keyword the config leaves out takes the torch class's default;
    ultralytics' Adam family takes `momentum` as beta1."""
    import inspect

    from hydra.utils import get_class

    target = str(optimizer.get("_target_", ""))
    if target.rsplit(".", 1)[-1] not in OPTIMIZERS:
        raise ConfigError(
            f"trainer.optimizer._target_={target or None}: ultralytics builds only "
            f"{', '.join(OPTIMIZERS)} (torch.optim classes)"
        )
    defaults = {k: p.default for k, p in inspect.signature(get_class(target)).parameters.items()}

    def value(key: str) -> Any:
        return optimizer.get(key, defaults.get(key))

    return {
        "optimizer": OPTIMIZERS[target.rsplit(".", 1)[-1]],
        "lr0": value("lr"),
        "momentum": value("momentum") if "momentum" in defaults else list(value("betas"))[0],
        "weight_decay": value("weight_decay"),
        "warmup_epochs": scheduler.get("warmup_epochs", 0.0),
        "cos_lr": str(scheduler.get("_target_", "")).rsplit(".", 1)[-1].lower() == "cosine",
        "lrf": scheduler.get("min_lr_ratio") or 0.01,
    }


PREDICT = {"conf": 0.001, "iou": 0.7, "max_det": 100}


# ------------------------------------------------------------------------------------------------ containment
def ultralytics_env(cache_dir: Path | str, allow_download: bool = False) -> Path:
    """Set YOLO_OFFLINE / YOLO_CONFIG_DIR and place the fonts, BEFORE ultralytics is imported. Returns the config dir."""
    if not allow_download:
        os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"  # ultralytics must never pip-install into the environment mid-run
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(cache_dir).resolve() / "ultralytics")))
    fonts = config_dir / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (fonts / name).is_file() and dejavu.is_file():
            shutil.copyfile(dejavu, fonts / name)
    if "ultralytics" in sys.modules:
        from ultralytics.utils import USER_CONFIG_DIR

        if Path(USER_CONFIG_DIR).resolve() != fonts.resolve():
            log.warning("ultralytics was imported before spinebench set YOLO_CONFIG_DIR: it uses %s", USER_CONFIG_DIR)
    return config_dir


def _yolo():
    from ultralytics import YOLO

    return YOLO


@contextlib.contextmanager
def keep_torch_threads():
    """ultralytics' select_device sets torch's CPU threads to cpu_count - 1 for the whole process (1 on a 2-core
    machine): restore them afterwards, so later runs of a multirun and the FPS measurement keep the process's own."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ export
def yolo_label_lines(sample: DetectionSample) -> list[str]:
    lines = []
    for (x0, y0, x1, y1), label in zip(sample.boxes.tolist(), sample.labels.tolist()):
        cx, cy = (x0 + x1) / 2 / sample.width, (y0 + y1) / 2 / sample.height
        w, h = (x1 - x0) / sample.width, (y1 - y0) / sample.height
        lines.append(f"{int(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def export_yolo_dataset(
    data: Path | DatasetSpec,
    out: Path,
    splits: Sequence[str] | None = None,
    samples: dict[str, list[DetectionSample]] | None = None,
) -> Path:
    """YOLO layout at `out` (images/<split>/ symlinks to the release, labels/<split>/*.txt); returns data.yaml.
    `data`: a release root, or a DatasetSpec (whose split file, when it has one, lists each split's images)."""
    out = Path(out).resolve()
    available = find_splits(release_root(data), "detection")
    splits = [s for s in (splits or ("train", "val", "test")) if s in available]
    samples = dict(samples or {})
    for split in splits:
        images_dir, labels_dir = out / "images" / split, out / "labels" / split
        for folder in (images_dir, labels_dir):
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        for sample in samples.get(split) or read_detection_split(data, split):
            (images_dir / sample.image.name).symlink_to(sample.image.resolve())
            (labels_dir / f"{sample.image.stem}.txt").write_text(
                "".join(line + "\n" for line in yolo_label_lines(sample))
            )
        cache = out / "labels" / f"{split}.cache"
        if cache.exists():
            cache.unlink()
    data = {"path": str(out), "names": {i: name for i, name in enumerate(DETECTION_CLASSES)}}
    for split in ("train", "val", "test"):
        if split in splits:
            data[split] = f"images/{split}"
    for required in ("train", "val"):  # ultralytics requires both keys even to evaluate a test split
        if required not in data:
            data[required] = data.get("val") or data.get("test")
    yaml_path = out / "data.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def _finished(checkpoint: Path) -> bool:
    """ultralytics strips the optimizer and sets epoch -1 in the final checkpoints."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return ckpt.get("epoch", -1) == -1 or ckpt.get("optimizer") is None


class YoloV8(Benchmark):
    task = "detection"

    def __init__(
        self,
        name: str,
        size: str = "m",
        row: str | None = None,
        imgsz: int = 320,
        weights: str | None = "auto",
        download: bool = False,
        args: dict[str, Any] | None = None,
    ):
        if size not in SIZES:
            raise ConfigError(f"model.size must be one of {', '.join(SIZES)}, got {size!r}")
        if isinstance(imgsz, bool) or not isinstance(imgsz, int):
            raise ConfigError(f"model.imgsz must be an integer, got {imgsz!r}")
        self.name, self.size, self.row, self.imgsz = name, size, row, int(imgsz)
        self.weights, self.download, self.args = weights, bool(download), dict(args or {})

    # -- settings ---------------------------------------------------------------------------------------------
    def effective_imgsz(self, ctx: RunContext) -> int:
        cap = ctx.trainer.max_input_size
        size = min(self.imgsz, cap) if cap else self.imgsz
        return max(32, int(size) // 32 * 32)

    def _device(self, ctx: RunContext) -> str | int:
        return "cpu" if ctx.device.type != "cuda" else (ctx.device.index or 0)

    def train_args(self, ctx: RunContext, data_yaml: Path, n_train: int) -> dict[str, Any]:
        t = ctx.trainer
        args = {
            "data": str(data_yaml),
            "epochs": t.epochs,
            "batch": t.batch_size,
            "imgsz": self.effective_imgsz(ctx),
            "device": self._device(ctx),
            "workers": t.num_workers,
            "seed": ctx.seed,
            "deterministic": t.deterministic,
            "project": str(Path(ctx.run_dir).resolve()),
            "name": YOLO_DIR,
            "exist_ok": True,
            **ultralytics_optimizer(t.optimizer, t.scheduler),
            "amp": t.amp,
            "verbose": False,
            "plots": False,
        }
        if t.limit_train_batches:
            args["fraction"] = min(1.0, t.limit_train_batches * t.batch_size / max(n_train, 1))
        args.update(self.args)
        for key in ("project", "name"):  # containment is not negotiable
            if key in self.args:
                log.warning("model.args.%s is ignored: ultralytics writes into the run folder", key)
        args["project"], args["name"] = str(Path(ctx.run_dir).resolve()), YOLO_DIR
        return args

    # -- protocol ---------------------------------------------------------------------------------------------
    def resume_files(self, run_dir: Path) -> list[Path]:
        """ultralytics' own last.pt (written each epoch, what a restart resumes from), and the copy in checkpoints/
        of a run that finished training."""
        candidates = [Path(run_dir) / YOLO_DIR / "weights" / "last.pt", *super().resume_files(Path(run_dir))]
        return [path for path in candidates if path.is_file()]

    def fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        if distributed.launched():
            raise ConfigError(
                "YOLOv8 trains on several GPUs through ultralytics' own DDP, not under torchrun: run spinebench-train "
                "alone with model.args.device=[0,1]"
            )
        with keep_torch_threads():
            return self._fit(ctx, spec)

    def test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path) -> dict[str, Any]:
        with keep_torch_threads() as threads:
            return self._test(ctx, spec, checkpoint, threads)

    def check_args(self) -> None:
        """model.args checked as ultralytics would, before any work: a misspelt or mistyped one is a one-line
        ConfigError (ultralytics' own is a SyntaxError after a page of help, mid-run)."""
        from ultralytics import cfg as ultralytics_cfg
        from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

        renamed = getattr(ultralytics_cfg, "_handle_deprecation", dict)  # old names it still takes (half, boxes, ...)
        for key in renamed(dict(self.args)):
            if key not in DEFAULT_CFG_DICT:
                close = difflib.get_close_matches(key, DEFAULT_CFG_DICT, n=3)
                raise ConfigError(
                    f"model.args.{key} is not an ultralytics argument"
                    + (f" (close: {', '.join(close)})" if close else "")
                )
        try:
            get_cfg(overrides=dict(self.args))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.args: {error}") from error

    def _fit(self, ctx: RunContext, spec: DatasetSpec) -> dict[str, Any]:
        # ultralytics skips an image it cannot read with a warning: spinebench's readers refuse it, for every model
        refuse_unreadable(spec, "detection", ("train", "val"))
        ultralytics_env(ctx.cache_dir, allow_download=self.download)
        YOLO = _yolo()
        self.check_args()
        run_dir = Path(ctx.run_dir).resolve()
        train_samples = read_detection_split(spec, "train")
        weights_dir = run_dir / YOLO_DIR / "weights"
        state_file = run_dir / YOLO_DIR / STATE_FILE
        last = weights_dir / "last.pt"
        start = time.perf_counter()
        trained_epochs = 0
        if last.is_file() and state_file.is_file():
            state = json.loads(state_file.read_text())
            data_yaml = export_yolo_dataset(spec, run_dir / DATA_DIR, samples={"train": train_samples})
            start = time.perf_counter()
            if _finished(last):
                log.info("%s: %s is a finished ultralytics run: nothing to train", self.name, last)
            else:
                done = _epochs_done(run_dir / YOLO_DIR)
                log.info(
                    "%s: resuming ultralytics training from %s (epoch %d; ultralytics' resume does not restore "
                    "its data order and augmentation randomness: not bit-identical to an uninterrupted run)",
                    self.name,
                    last,
                    done,
                )
                state.setdefault("resumed_from", done)  # the first resume: metrics.json says the run was resumed
                state_file.write_text(json.dumps(state))
                YOLO(str(last)).train(resume=True)
                trained_epochs = ctx.trainer.epochs - done
        else:
            choice = resolve_weights(
                self.weights,
                [f"yolov8{self.size}.pt"],
                ctx.cache_dir,
                self.name,
                download=self.download,
                urls={f"yolov8{self.size}.pt": f"yolov8{self.size}.pt"},
            )
            source = (
                str(choice.path)
                if choice.path
                else (f"yolov8{self.size}.pt" if choice.download_url else f"yolov8{self.size}.yaml")
            )
            model = _load_yolo(YOLO, source, choice.path)  # before anything is written: a bad file leaves no folder
            exporting = time.perf_counter()
            data_yaml = export_yolo_dataset(spec, run_dir / DATA_DIR, samples={"train": train_samples})
            start += time.perf_counter() - exporting  # not training time (as before: plain ultralytics has no export)
            state = {"pretrained": choice.pretrained, "pretrained_source": choice.source, "model_source": source}
            state_file.parent.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps(state))
            args = self.train_args(ctx, data_yaml, len(train_samples))
            args["pretrained"] = bool(choice.pretrained)
            log.info(
                "%s: ultralytics YOLO(%s).train(%s)",
                self.name,
                source,
                ", ".join(f"{k}={v}" for k, v in args.items() if k not in ("project",)),
            )
            model.train(**args)
            trained_epochs = ctx.trainer.epochs
        wall = time.perf_counter() - start
        ckpt_dir = run_dir / CHECKPOINT_DIR
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt"):
            if (weights_dir / name).is_file():
                shutil.copyfile(weights_dir / name, ckpt_dir / name)
        fraction = self.train_args(ctx, data_yaml, len(train_samples)).get("fraction", 1.0)
        images = len(train_samples) * fraction * trained_epochs
        return {
            "pretrained": state["pretrained"],
            "pretrained_source": state["pretrained_source"],
            "resumed_from": state.get("resumed_from"),
            "epochs": ctx.trainer.epochs,
            "input_size": [self.effective_imgsz(ctx)] * 2,
            "train_images_per_s": images / wall if trained_epochs and wall > 0 else None,
            "train_images_per_s_note": "ultralytics loop, epochs incl. validation",
        }

    def _test(self, ctx: RunContext, spec: DatasetSpec, checkpoint: Path, threads: int) -> dict[str, Any]:
        ultralytics_env(ctx.cache_dir)
        YOLO = _yolo()
        run_dir = Path(ctx.run_dir).resolve()
        if not Path(checkpoint).is_file():
            raise RunStateError(f"{checkpoint}: checkpoint not found")
        samples = read_detection_split(spec, "test")
        if ctx.trainer.limit_test_images:
            samples = samples[: ctx.trainer.limit_test_images]
        data_yaml = export_yolo_dataset(spec, run_dir / TEST_DATA_DIR, splits=("test",), samples={"test": samples})
        model = YOLO(str(checkpoint))
        imgsz, device = self.effective_imgsz(ctx), self._device(ctx)
        batch = ctx.trainer.val_batch_size
        detections = predict_coco(model, samples, imgsz, device, batch)
        precision = "float16" if model.predictor.model.fp16 else "float32"  # what ultralytics' `half` left on
        metrics = score_and_write(run_dir, coco_ground_truth(samples), detections, f"{self.name} - {spec.name}")
        reference = model.val(
            data=str(data_yaml),
            split="test",
            imgsz=imgsz,
            batch=batch,
            device=device,
            project=str(run_dir),
            name=f"{YOLO_DIR}_test",
            exist_ok=True,
            plots=False,
            verbose=False,
            **{k: v for k, v in PREDICT.items() if k != "max_det"},
        )
        import cv2

        frames = [cv2.imread(str(s.image)) for s in samples[:8]]
        import torch

        torch.set_num_threads(threads)  # model.val() above reset them: time inference like the other detectors

        def predict_on(target: torch.device):  # ultralytics sets its predictor up again for another device
            where = device if target == ctx.device else "cpu"
            return lambda im: model.predict(im, imgsz=imgsz, device=where, verbose=False, **PREDICT)

        speed = batch1_speed(predict_on, frames, ctx.device, ctx.trainer)
        return {
            "metrics": metrics,
            "params": count_parameters(model.model),
            **speed,
            "input_size": [imgsz, imgsz],
            "test_precision": precision,
            "test_images": len(samples),
            "ultralytics_mAP50": float(reference.box.map50),
            "ultralytics_mAP50_95": float(reference.box.map),
            "ultralytics_note": "reference only: ultralytics' own test-split mAP (its interpolation); "
            "`metrics` come from spinebench.detection.coco like every detector",
        }


def _load_yolo(YOLO, source: str, path: Path | None):
    """YOLO(source), with a file given by model.weights that ultralytics cannot load named in one line."""
    try:
        return YOLO(source)
    except Exception as error:
        if path is None:
            raise
        raise WeightsError(
            f"model.weights={path}: ultralytics cannot load it ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from error


def predict_coco(model, samples: Sequence[DetectionSample], imgsz: int, device: str | int, batch: int) -> list[dict]:
    """COCO results of `samples` (image ids = position + 1) from an ultralytics YOLO, through ultralytics' own
    inference loop: one streaming predict over a manifest of the files, `batch` images at a time (a Python list
    would be read whole into one batch). ultralytics sorts the files and makes their paths absolute, so each result
    is matched to its sample by absolute path, never by position."""
    image_ids = {str(Path(s.image).absolute()): index + 1 for index, s in enumerate(samples)}
    detections = []
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "images.txt"
        manifest.write_text("\n".join(image_ids) + "\n")
        for result in model.predict(
            str(manifest), stream=True, batch=batch, imgsz=imgsz, device=device, verbose=False, **PREDICT
        ):
            boxes = result.boxes
            detections += detections_to_coco(
                image_ids[str(Path(result.path).absolute())],
                boxes.xyxy.float().cpu().numpy(),
                boxes.conf.float().cpu().tolist(),
                boxes.cls.long().cpu().tolist(),
            )
    return detections


def _epochs_done(folder: Path) -> int:
    results = folder / "results.csv"
    if not results.is_file():
        return 0
    return max(0, len(results.read_text().strip().splitlines()) - 1)
