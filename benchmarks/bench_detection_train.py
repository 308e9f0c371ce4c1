"""Training throughput of the detectors through spinebench vs the model's compute-only step rate.

For each torchvision detector, and each detector of spinebench's own EngineDetector (DETR, YOLOv7), in the same
process and on the same device:
  spinebench   images/s of the engine after a warm-up epoch, over at least --steps steps (spinebench.engine.fit:
               cached uint8 batches, gathered from the split held on a CUDA device or else pinned by workers,
               device augmentation, autocast, optimizer step); timed before the compute-only loop and again after
               it (resumed from the checkpoint), and the mean of the two taken, so that a drift of the device's
               speed during the run cancels (both are in the JSON)
  compute      images/s of model + loss + backward + optimizer step on batches already on the device (an epoch's
               first --steps batches, augmented beforehand: the same mix of images with and without a box), with
               the optimizer fit() builds (its parameter groups). DETR and YOLOv7: their TrainModule's `losses`
               (DETR's resize to its input and set loss with the Hungarian matcher; YOLOv7's letterbox, OTA loss
               and the EMA update of its weights), what their engine step runs after the data path
  ratio        spinebench / compute (the data path costs under 10% when >= 0.9)
  held         images/s of the engine's own loop (spinebench.engine.fit) on those same batches already on the
               device: the engine minus its data path, timed between the compute-only loop and the second engine
               timing. It splits a gap: spinebench < held = compute puts it in the data path, spinebench = held <
               compute in the loop around the step
  data path    images/s of the loader + device augmentation alone, no model (what could starve the GPU); the
               loader is spinebench-train's: on a CUDA device the split held in its memory (trainer.data_on_device),
               and then the workers' DataLoader is timed too, for comparison
  fetch ms     the main thread's CPU time per batch spent getting it from the loader (both loaders)
For YOLOv8: spinebench's YoloV8.fit vs plain `YOLO("yolov8<s>.yaml").train(...)` with ultralytics' defaults on
the same exported data, images/s = train images x epochs / wall time (both include ultralytics' validation),
after one untimed warm-up run so that neither pays the process's first-run costs.
--profile MODELS records 10 engine steps (one epoch, its checkpoint write left out) and 10 compute-only steps of
each listed torchvision model with torch.profiler, after the timed runs, and writes the op tables to
profile_<model>_{engine,compute}.txt.

    python benchmarks/bench_detection_train.py                                  # CPU, tiny (minutes)
    python benchmarks/bench_detection_train.py --device cuda --data detection_phantom --batch 16 \
        --steps 50 --models faster_rcnn,retinanet,ssd300,ssd512,yolov8m --yolo-epochs 3 --json bench.json
    python benchmarks/bench_detection_train.py --models detr_light,yolov7_tiny --max-input-size 160 --steps 2 \
        --workers 0 --data-on-device true                                     # DETR, YOLOv7 (the [yolov7] extra), CPU
    python benchmarks/bench_detection_train.py --device cuda --data detection_phantom_paper --batch 16 \
        --steps 40 --models detr,yolov7 --workers 8 --json bench_detr_yolov7.json   # the paper's layouts
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
TORCHVISION_TARGET = "spinebench.detection.torchvision_benchmark.TorchvisionDetector"
PROFILED_STEPS = 10  # --profile: steps of each path recorded by torch.profiler (fewer if an epoch is shorter)
# the summary table's columns beyond the rates (title, row key, width, decimals), shown when a row has the key
OPTIONAL_COLUMNS = [
    ("held", "engine_on_held_batches_images_per_s", 8, 2),
    ("data path", "data_path_images_per_s", 10, 1),
    ("(workers)", "data_path_workers_images_per_s", 10, 1),
    ("fetch ms", "batch_fetch_main_thread_ms", 8, 2),
    ("(workers)", "batch_fetch_main_thread_ms_workers", 9, 2),
]
PHANTOMS = ("detection_phantom_tiny", "detection_phantom", "detection_phantom_paper")  # configs/data/<name>.yaml


def config_target(name: str) -> str | None:
    """The `_target_` of configs/model/<name>.yaml, through the files it extends (read, not composed: cheap enough
    for an argparse type)."""
    import yaml

    node = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text()) or {}
    if "_target_" in node:
        return node["_target_"]
    parents = [p for p in node.get("defaults") or [] if isinstance(p, str) and p != "_self_"]
    return next((target for target in map(config_target, parents) if target), None)


def torchvision_configs() -> list[str]:
    """The model configs whose `_target_` is TorchvisionDetector (configs/model/*.yaml), sorted."""
    return sorted(
        path.stem
        for path in (REPO / "configs" / "model").glob("*.yaml")
        if config_target(path.stem) == TORCHVISION_TARGET
    )


TORCHVISION = torchvision_configs()  # faster_rcnn, retinanet, ssd300, ssd512


def is_engine_detector(name: str) -> bool:
    """configs/model/<name>.yaml builds an EngineDetector (DETR, YOLOv7 and their light variants): a detector
    outside torchvision's API, trained by the same engine."""
    from spinebench.detection.engine_detector import EngineDetector

    target = config_target(name) or ""
    module, _, attribute = target.rpartition(".")
    try:
        built = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(built, type) and issubclass(built, EngineDetector)


def compose_train(overrides: list[str]):
    """configs/train.yaml composed with `overrides`, as spinebench-train composes it."""
    from hydra import compose, initialize_config_dir

    from spinebench.hydra_run import CONFIG_DIR  # registers trainer/base and the resolvers train.yaml needs

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def model_benchmark(name: str, **settings):
    """The Benchmark of configs/model/<name>.yaml as spinebench-train builds it (Hydra's compose + instantiate,
    with spinebench.build's key checks), `settings` merged over the config's model keys first (weights=None: no
    pretrained file looked for): a benchmark measures the network the config trains."""
    from omegaconf import OmegaConf, open_dict

    from spinebench.build import build

    node = compose_train([f"model={name}"]).model
    with open_dict(node):
        node = OmegaConf.merge(node, settings)
    return build(node, "model")


def dataset(name: str, cache: Path):
    """The phantom of data config `name`, in the cache folder where spinebench-train would put it (its `_target_`,
    spinebench.data.source.prepare_dataset, generates it there on first use)."""
    from spinebench.build import build

    return build(compose_train([f"data={name}", f"paths.cache_dir={cache}"]).data, "data")


def trainer_cfg(args, epochs: int, **extra):
    from spinebench.engine import TrainerConfig

    return TrainerConfig.from_config(
        {
            "device": args.device,
            "epochs": epochs,
            "batch_size": args.batch,
            "num_workers": args.workers,
            "progress": "false",
            "limit_train_batches": args.steps,
            "max_input_size": args.max_input_size,
            "deterministic": args.device == "cpu",
            "scheduler": {"_target_": "spinebench.engine.schedules.constant", "_partial_": True, "warmup_epochs": 0.0},
            **extra,
        }
    )


def data_path_rate(loader, device: torch.device, steps: int) -> tuple[float, float]:
    """images/s of the data path alone (the loader's batches moved and augmented on the device, no model), and
    the main thread's CPU ms per batch spent getting each batch from the loader: time taken from the thread that
    launches the model's kernels (waiting for a worker costs no CPU and is not counted)."""
    from spinebench.detection.data import to_device

    images, done, fetch_cpu, start = 0, 0, 0.0, time.perf_counter()
    while done < steps:
        batches = iter(loader)
        while done < steps:
            before = time.thread_time()
            batch = next(batches, None)
            fetch_cpu += time.thread_time() - before
            if batch is None:
                break
            batch_images, _, _ = to_device(batch, device, augment=True)
            images, done = images + len(batch_images), done + 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start), 1000 * fetch_cpu / done


def torchvision_subject(family, ctx):
    """A torchvision detector: its network, its engine TrainModule, and the compute-only step's loss (the model's
    summed loss dict, called directly)."""
    from spinebench.detection.torchvision_benchmark import DetectorModule

    model, _ = family._build(ctx, load_weights=False)
    return (
        model,
        lambda: DetectorModule(model, None, augment=True),
        lambda _, images, targets: sum(model(images, targets).values()),
    )


def engine_detector_subject(family, ctx):
    """DETR or YOLOv7 (an EngineDetector): its network at the run's input size, the TrainModule spinebench-train
    trains it with (DETR's parameter groups, YOLOv7's EMA and no-decay groups), and the compute-only step's loss:
    that module's own `losses` (DETR's resize and set loss, YOLOv7's letterbox, OTA loss and EMA update) on
    batches already on the device."""
    family.size = family.effective_size(ctx)  # as EngineDetector.fit
    model, _ = family.build(ctx, load_weights=False)
    return (
        model,
        lambda: family.train_module(model, {}, ctx),
        lambda module, images, targets: module.losses(images, targets)["loss"],
    )


def on_held_batches(module):
    """`module` fed batches as to_device returned them: nothing left to move (the engine minus its data path)."""
    module.training_step = lambda batch, device: module.losses(*batch[:2])
    return module


def bench_torchvision(name: str, args, spec, cache: Path) -> dict:
    return bench_engine(name, args, spec, cache, torchvision_subject)


def bench_engine_detector(name: str, args, spec, cache: Path) -> dict:
    return bench_engine(name, args, spec, cache, engine_detector_subject)


def bench_engine(name: str, args, spec, cache: Path, subject) -> dict:
    """The rates of the module docstring for one model trained by spinebench.engine.fit; `subject(family, ctx)`
    gives its network, a factory of its TrainModule and its compute-only loss `loss(module, images, targets)`."""
    from spinebench.contract import RunContext
    from spinebench.data.detection import read_detection_split
    from spinebench.data.resident import ResidentBatches
    from spinebench.detection.data import build_dataset, detection_loader, to_device
    from spinebench.engine import autocast_for, fit, resolve_device
    from spinebench.engine.loop import build_optimizer
    from spinebench.speed import pass_rate

    device = resolve_device(args.device)
    dataset = build_dataset(read_detection_split(spec.root, "train"), cache)
    loader = detection_loader(dataset, args.batch, True, args.workers, device, on_device=args.data_on_device)
    # a warm-up epoch, then as many epochs as it takes to time at least --steps steps (a small phantom has short
    # epochs: their boundaries are part of the cost, as in real training)
    per_epoch = min(len(loader), args.steps)
    cfg = trainer_cfg(args, epochs=1 + math.ceil(args.steps / per_epoch), data_on_device=args.data_on_device)
    family = model_benchmark(name, weights=None)  # configs/model/<name>.yaml, untrained
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(Path(tmp), cache, cfg, device, 0, {})
        model, train_module, step_loss = subject(family, ctx)
        result = fit(train_module(), loader, None, cfg, tmp, monitor="none")
        timed = result.history[1:]  # equal-size epochs: the mean of their rates is the rate of all of them
        spinebench = sum(h["images_per_s"] for h in timed) / len(timed)
        data_only, fetch_ms = data_path_rate(loader, device, args.steps)
        workers_only, workers_fetch_ms = data_only, fetch_ms
        if isinstance(loader, ResidentBatches):  # the workers' DataLoader too, for comparison
            workers_loader = detection_loader(dataset, args.batch, True, args.workers, device)
            workers_only, workers_fetch_ms = data_path_rate(workers_loader, device, args.steps)
        # compute only: the same model on an epoch's first --steps batches, moved and augmented on the device
        # beforehand. The engine's own mix of images with and without a box: the detectors' loss costs depend on
        # it, and one fixed batch set the reference by its own count of boxes (7 to 13 of 16 on the paper phantom).
        model.train()
        reference = train_module()
        params = reference.parameter_groups() if hasattr(reference, "parameter_groups") else model.parameters()
        optimizer = build_optimizer(list(params), cfg)  # the optimizer fit() builds
        held = [to_device(batch, device, augment=True) for _, batch in zip(range(args.steps), loader)]

        def train_steps(n: int) -> None:  # n optimizer steps over the held batches in turn
            for i in range(n):
                images, targets, _ = held[i % len(held)]
                with autocast_for(device, cfg.amp):
                    loss = step_loss(reference, images, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        timed_images = sum(len(held[i % len(held)][1]) for i in range(args.steps))
        compute = pass_rate(lambda: train_steps(args.steps), timed_images, device)  # after one untimed pass
        # the engine's loop on those held batches: a warm-up epoch and one timed epoch, in a folder of its own
        on_held = fit(
            on_held_batches(train_module()), held, None, trainer_cfg(args, epochs=2), Path(tmp) / "held", monitor="none"
        ).history[1]["images_per_s"]
        # the engine's timed epochs once more, resumed from its checkpoint: engine, compute-only, engine. A drift of
        # the device's speed during the run then shows as two engine rates apart, and their mean cancels it.
        again = fit(
            train_module(),
            loader,
            None,
            trainer_cfg(args, epochs=cfg.epochs + len(timed), data_on_device=args.data_on_device),
            tmp,
            monitor="none",
        )
        after = sum(h["images_per_s"] for h in again.history[cfg.epochs :]) / len(timed)
        if name in args.profile:  # after the timed runs: the profiler slows what it records
            steps = min(len(loader), PROFILED_STEPS)  # one engine epoch
            profile_cfg = trainer_cfg(args, epochs=1, limit_train_batches=steps, data_on_device=args.data_on_device)
            write_profiles(
                name,
                args,
                f"{steps} steps",
                {
                    "engine": without_checkpoints(
                        lambda: fit(train_module(), loader, None, profile_cfg, Path(tmp) / "profiled", monitor="none")
                    ),
                    "compute": lambda: train_steps(steps),
                },
            )
    engine = (spinebench + after) / 2
    return {
        "model": name,
        "path": "spinebench engine",
        "images_per_s": engine,
        "reference": "compute-only",
        "reference_images_per_s": compute,
        "ratio": engine / compute,
        "images_per_s_before_reference": spinebench,
        "engine_on_held_batches_images_per_s": on_held,
        "images_per_s_after_reference": after,
        "data_path_images_per_s": data_only,
        "data_on_device": isinstance(loader, ResidentBatches),
        "data_path_workers_images_per_s": workers_only,
        "batch_fetch_main_thread_ms": fetch_ms,
        "batch_fetch_main_thread_ms_workers": workers_fetch_ms,
        "input_size": family.effective_size(ctx),
        "batch": cfg.batch_size,
        "device": str(device),
    }


def without_checkpoints(run):
    """`run` with the engine's end-of-epoch checkpoint write left out. A profiled engine epoch would otherwise
    record the copy of every weight and optimizer buffer to the host, hundreds of synchronizing copies that the
    compute-only steps do not make, and bury the steps' own syncs under them in the op table."""

    def without():
        with mock.patch("spinebench.engine.loop.save_checkpoints"):
            return run()

    return without


def write_profiles(name: str, args, length: str, runs: dict) -> None:
    """profile_<model>_<run>.txt beside --json: torch.profiler's op table (CPU, and CUDA when there is one) of each
    run (each `length` long, e.g. "10 steps"), sorted by self CPU time. The host-side calls that wait for the
    device (cudaStreamSynchronize, cudaMemcpyAsync) and their counts show where one path's steps spend what the
    other's do not."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    folder = args.json.parent if args.json else Path(".")
    for label, run in runs.items():
        with profile(activities=activities) as profiler:
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
        (folder / f"profile_{name}_{label}.txt").write_text(f"{name}, {label}, {length}\n{table}\n")


def bench_yolo(name: str, args, spec, cache: Path) -> dict:
    from spinebench.contract import RunContext
    from spinebench.data.detection import read_detection_split
    from spinebench.detection.yolo import export_yolo_dataset, keep_torch_threads, ultralytics_env
    from spinebench.engine import resolve_device

    family = model_benchmark(name, weights=None, imgsz=args.yolo_imgsz)  # configs/model/<name>.yaml, untrained
    size = family.size
    cfg = trainer_cfg(
        args,
        epochs=args.yolo_epochs,
        limit_train_batches=None,
        optimizer={
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": 0.01,
            "momentum": 0.937,
            "weight_decay": 0.0005,
        },
    )
    device = resolve_device(cfg.device)
    ultralytics_env(cache)
    from ultralytics import YOLO

    n_train = len(read_detection_split(spec.root, "train"))
    imgsz = family.effective_imgsz(RunContext(Path("."), cache, cfg, device, 0, {}))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_yaml = export_yolo_dataset(spec.root, tmp / "plain_data")

        def plain(epochs: int, run: str) -> float:
            start = time.perf_counter()
            with keep_torch_threads():  # ultralytics resets torch's thread count; the next benchmark needs it back
                YOLO(f"yolov8{size}.yaml").train(
                    data=str(data_yaml),
                    epochs=epochs,
                    batch=cfg.batch_size,
                    imgsz=imgsz,
                    device="cpu" if device.type == "cpu" else 0,
                    workers=args.workers,
                    pretrained=False,
                    project=str(tmp),
                    name=run,
                    exist_ok=True,
                    plots=False,
                    verbose=False,
                    seed=0,
                    deterministic=cfg.deterministic,
                )
            return n_train * epochs / (time.perf_counter() - start)

        plain(1, "warmup")  # untimed: the process's first ultralytics run pays imports, CUDA context, autotuning
        facts = family.fit(RunContext(tmp / "spinebench", cache, cfg, device, 0, {}), spec)
        reference = plain(cfg.epochs, "plain")
    return {
        "model": name,
        "path": "spinebench YoloV8.fit",
        "images_per_s": facts["train_images_per_s"],
        "reference": "plain YOLO().train",
        "reference_images_per_s": reference,
        "ratio": facts["train_images_per_s"] / reference,
        "input_size": [imgsz, imgsz],
        "batch": cfg.batch_size,
        "device": str(device),
    }


def torchvision_models(action: str):
    """An argparse type for comma-separated names of torchvision detectors only (the YOLO paths run inside
    ultralytics), refusing the others with "cannot <action> <names>: one of ..."."""

    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in TORCHVISION]
        if unknown:
            raise argparse.ArgumentTypeError(f"cannot {action} {', '.join(unknown)}: one of {', '.join(TORCHVISION)}")
        return names

    return parse


def add_common_arguments(parser: argparse.ArgumentParser, batch: int) -> None:
    """The arguments this benchmark shares with bench_detection_infer.py."""
    parser.add_argument("--models", default="faster_rcnn,ssd300,yolov8n")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default="detection_phantom_tiny", choices=PHANTOMS)
    parser.add_argument("--cache", default=os.environ.get("SPINEBENCH_CACHE", str(REPO / ".cache")))
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-input-size", type=int, default=None, help="cap input sizes (CPU runs)")
    parser.add_argument("--yolo-imgsz", type=int, default=320)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--data-on-device",
        default="auto",
        choices=("auto", "true", "false"),
        help="trainer.data_on_device (auto: the split held on a CUDA device, as spinebench-train does)",
    )
    parser.add_argument(
        "--profile",
        type=torchvision_models("profile"),
        default=[],
        help="torchvision models whose spinebench "
        "and compute-only paths to record with torch.profiler after the timed runs (op tables beside --json)",
    )


def row_functions(names: list[str], torchvision_row, yolo_row, engine_row=None) -> list:
    """Each model's row function (yolov8*: `yolo_row`; DETR, YOLOv7: `engine_row`; the rest `torchvision_row`),
    checked before any work: a name without a config, or an engine detector where there is no `engine_row`, stops
    in one line."""
    unknown = [name for name in names if not (REPO / "configs" / "model" / f"{name}.yaml").is_file()]
    if unknown:
        raise SystemExit(f"no model config {', '.join(unknown)} (configs/model/<name>.yaml)")
    rows = []
    for name in names:
        if name.startswith("yolov8"):
            rows.append(yolo_row)
        elif is_engine_detector(name):
            if engine_row is None:
                raise SystemExit(f"{name}: this benchmark times the torchvision detectors and YOLOv8 only")
            rows.append(engine_row)
        else:
            rows.append(torchvision_row)
    return rows


def run_models(args, torchvision_row, yolo_row, engine_row=None) -> list[dict]:
    """One row per model of --models (row_functions says whose), written to --json after each (a run cut short by
    a time limit keeps what it measured); the table last."""
    logging.basicConfig(level=logging.WARNING)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    functions = row_functions(names, torchvision_row, yolo_row, engine_row)
    cache = Path(args.cache)
    spec = dataset(args.data, cache)
    from spinebench.runinfo import device_name, git_commit, write_json

    rows = []
    meta = {
        "device": None,
        "torch": torch.__version__,
        "data": f"{spec.label}: data={args.data}",
        "git": git_commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    for name, row_function in zip(names, functions):
        row = row_function(name, args, spec, cache)
        rows.append(row)
        meta["device"] = device_name(row["device"])
        print(
            f"{row['model']:<12} {row['path']:<24} {row['images_per_s']:>9.2f} img/s   {row['reference']:<20} "
            f"{row['reference_images_per_s']:>9.2f} img/s   ratio {row['ratio']:.2f}",
            flush=True,
        )
        if args.json:
            write_json(args.json, {"meta": meta, "rows": rows})
    # the columns of the rows' keys: the inference benchmark has no held, data-path or fetch rates to show
    optional = [
        (title, key, width, digits) for title, key, width, digits in OPTIONAL_COLUMNS if any(key in r for r in rows)
    ]
    print(
        f"\n{'model':<12} {'input':<11} {'batch':>5} {'spinebench':>11} {'reference':>11} {'ratio':>6}"
        + "".join(f" {title:>{width}}" for title, _, width, _ in optional)
        + f"  ({meta['device']})"
    )
    for r in rows:
        print(
            f"{r['model']:<12} {'x'.join(map(str, r['input_size'])):<11} {r['batch']:>5} {r['images_per_s']:>11.2f} "
            f"{r['reference_images_per_s']:>11.2f} {r['ratio']:>6.2f}"
            + "".join(f" {r.get(key, float('nan')):>{width}.{digits}f}" for _, key, width, digits in optional)
            + f"  vs {r['reference']}"
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, batch=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per epoch / compute loop")
    parser.add_argument("--yolo-epochs", type=int, default=1)
    run_models(parser.parse_args(argv), bench_torchvision, bench_yolo, bench_engine_detector)
    return 0


if __name__ == "__main__":
    sys.exit(main())
