"""Writes a phantom in the exact on-disk layout of either release, plus PHANTOM.json marking it synthetic.

Every image gets its own seed, SeedSequence((seed, task, domain, split, index)), so worker processes
write the same bytes as a single process. The writer refuses any non-empty folder without PHANTOM.json, so
it can never clobber a user's real release.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import struct
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from spinebench.classes import IMAGE_HEIGHT, IMAGE_WIDTH
from spinebench.data.phantom.anatomy import DOMAINS, RANGES, Anatomy, animal_knobs, build_anatomy, sample_knobs
from spinebench.data.phantom.speckle import render_bmode
from spinebench.data.segmentation import encode_mask
from spinebench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TASKS = ("segmentation", "detection")
SPLITS = ("train", "val", "test")
VERSION = 1
GENERATOR = "spinebench.data.phantom"
NOTE = "Synthetic phantom; not the Kumar et al. release"
MARKER = "PHANTOM.json"

# Share of injured (post-injury) images in the releases (manuscript.md: 5,756/10,223 and 1,368/2,245).
INJURED_SHARE = {"segmentation": 5756 / 10223, "detection": 1368 / 2245}
EMPTY_XML_SHARE = 0.2  # negatives that carry an XML without objects, as some VOC exports do
ANIMALS = {"train": range(1, 17), "val": range(17, 21), "test": range(21, 26)}  # disjoint animals per split
_CODES = {"segmentation": 1, "detection": 2, "porcine": 1, "human": 2, "train": 1, "val": 2, "test": 3}
_PNG_INFO = (("Software", GENERATOR), ("Comment", "SYNTHETIC PHANTOM - not real ultrasound data"))


@dataclass
class PhantomSample:
    """One rendered image with its exact labels (for tests, figures and box checks)."""

    image: np.ndarray  # H x W uint8 B-mode
    labels: np.ndarray  # H x W uint8 class indices
    envelope: np.ndarray  # H x W float32 envelope before log compression
    coherent: np.ndarray  # H x W bool, pixels carrying a specular line (not fully developed speckle)
    box: tuple[int, int, int, int] | None  # tight hematoma box (xmin, ymin, xmax, ymax), pixel edges
    injured: bool
    params: dict


def image_seed(seed: int, task: str, domain: str, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), _CODES[task], _CODES[domain], _CODES[split], int(index)])


def render_sample(
    seed: int | np.random.SeedSequence = 0,
    domain: str = "porcine",
    injured: bool = True,
    animal: int | None = None,
    overrides: dict | None = None,
) -> PhantomSample:
    """Render one (image, labels) pair; `overrides` pins knobs (e.g. {"frequency_mhz": 12.0})."""
    _check_domain(domain)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence([int(seed), 99])
    rng = np.random.default_rng(sequence)
    base = animal_knobs(np.random.default_rng([int(animal), _CODES[domain], 7]), domain) if animal is not None else None
    knobs = sample_knobs(rng, domain, base)
    knobs.update(overrides or {})
    anatomy: Anatomy = build_anatomy(rng, domain, injured, knobs)
    image, envelope, coherent = render_bmode(anatomy, knobs, rng, domain)
    return PhantomSample(
        image=image,
        labels=anatomy.labels,
        envelope=envelope,
        coherent=coherent,
        box=anatomy.hematoma_box,
        injured=injured,
        params=anatomy.params,
    )


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown phantom domain {domain!r}: expected one of {', '.join(DOMAINS)}")


def plan_split(task: str, domain: str, seed: int, split: str, n: int) -> list[dict]:
    """File name (stem), index, injury status and animal of every image of a split (exact injured share)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _CODES[task], _CODES[domain], _CODES[split], 10**6]))
    injured = np.zeros(n, dtype=bool)
    injured[: int(round(INJURED_SHARE[task] * n))] = True
    rng.shuffle(injured)
    animals = rng.choice(list(ANIMALS[split]), size=n)
    prefix = "pig" if domain == "porcine" else "pt"
    return [
        {
            "index": i,
            "injured": bool(injured[i]),
            "animal": int(animals[i]),
            "name": f"{prefix}{animals[i]:02d}_{'post' if injured[i] else 'pre'}_{i:04d}",
        }
        for i in range(n)
    ]


def _text_chunk(key: str, value: str) -> bytes:
    data = key.encode("latin-1") + b"\0" + value.encode("latin-1")
    return struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))


_TEXT = b"".join(_text_chunk(key, value) for key, value in _PNG_INFO)
# Speckle barely compresses, so Huffman-only is as small as full deflate and twice as fast; masks are runs.
_GREY_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
_MASK_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a grey (H x W) or RGB (H x W x 3) uint8 array, tagged synthetic in tEXt chunks after IHDR."""
    if array.ndim == 3:
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]), _MASK_FLAGS)  # cv2 wants BGR
    else:
        ok, encoded = cv2.imencode(".png", array, _GREY_FLAGS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    raw = encoded.tobytes()
    return raw[:33] + _TEXT + raw[33:]  # 8-byte signature + 25-byte IHDR chunk, then our text


def _save_png(array: np.ndarray, path: Path) -> None:
    path.write_bytes(png_bytes(array))


def voc_xml(folder: str, filename: str, box: tuple[int, int, int, int] | None) -> str:
    """Pascal-VOC annotation; `box` None gives an XML without objects (a negative)."""
    obj = ""
    if box is not None:
        xmin, ymin, xmax, ymax = box
        obj = (
            "  <object>\n    <name>hematoma</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
            "    <difficult>0</difficult>\n    <bndbox>\n"
            f"      <xmin>{xmin}</xmin>\n      <ymin>{ymin}</ymin>\n      <xmax>{xmax}</xmax>\n      <ymax>{ymax}</ymax>\n"
            "    </bndbox>\n  </object>\n"
        )
    return (
        "<annotation>\n"
        f"  <folder>{escape(folder)}</folder>\n  <filename>{escape(filename)}</filename>\n"
        f"  <source>\n    <database>{GENERATOR} (synthetic phantom)</database>\n  </source>\n"
        f"  <size>\n    <width>{IMAGE_WIDTH}</width>\n    <height>{IMAGE_HEIGHT}</height>\n    <depth>1</depth>\n  </size>\n"
        f"  <segmented>0</segmented>\n{obj}</annotation>\n"
    )


def render_planned(task: str, domain: str, seed: int, split: str, item: dict) -> PhantomSample:
    """The sample write_phantom writes for one `plan_split` entry (labels included, e.g. to check boxes)."""
    sequence = image_seed(seed, task, domain, split, item["index"])
    return render_sample(sequence, domain, item["injured"], animal=item["animal"])


LEAK_KINDS = ("gain", "shift", "speckle", "jpeg")  # how a leaked copy differs from its train original


def _shift(array: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Probe motion: the field of view moves by (dx, dy) pixels, the edge rows/columns repeat."""
    rows = np.clip(np.arange(array.shape[0]) - dy, 0, array.shape[0] - 1)
    cols = np.clip(np.arange(array.shape[1]) - dx, 0, array.shape[1] - 1)
    return array[rows][:, cols]


def _new_speckle(image: np.ndarray, rng: np.random.Generator, level: float) -> np.ndarray:
    """Partly decorrelated speckle: PSF-sized grains of fresh noise added in the log-compressed domain."""
    grains = cv2.GaussianBlur(rng.normal(0.0, 1.0, image.shape).astype(np.float32), (0, 0), 1.2)
    grains *= level / max(float(grains.std()), 1e-6)
    return np.clip(image.astype(np.float32) + grains, 0, 255).round().astype(np.uint8)


def derive_frame(sample: PhantomSample, kind: str, rng: np.random.Generator) -> PhantomSample:
    """A near-duplicate of `sample`: `sweep` (the next frame of a sweep: 1-3 px of probe motion, slight gain,
    new speckle) or one of LEAK_KINDS (gain and brightness, a 1-3 px shift, new speckle, JPEG re-encoding)."""
    if kind not in ("sweep", *LEAK_KINDS):
        raise ValueError(f"unknown frame kind {kind!r}")
    image, labels, box = sample.image, sample.labels, sample.box
    dx = dy = 0
    if kind in ("sweep", "shift"):
        dx, dy = (int(v) * int(s) for v, s in zip(rng.integers(1, 4, 2), rng.choice([-1, 1], 2)))
        image, labels = _shift(image, dx, dy), _shift(labels, dx, dy)
        if box is not None:
            xmin, ymin, xmax, ymax = box
            box = (max(xmin + dx, 0), max(ymin + dy, 0), min(xmax + dx, IMAGE_WIDTH), min(ymax + dy, IMAGE_HEIGHT))
    if kind == "sweep":
        gain, offset = rng.uniform(0.95, 1.05), rng.uniform(-4, 4)
    elif kind == "gain":  # darker or brighter by 15-30 %, and an offset
        gain, offset = rng.choice([rng.uniform(0.7, 0.85), rng.uniform(1.15, 1.3)]), rng.uniform(-15, 15)
    if kind in ("sweep", "gain"):
        image = np.clip(image.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)
    if kind in ("sweep", "speckle"):
        image = _new_speckle(image, rng, 10.0 if kind == "sweep" else 20.0)
    if kind == "jpeg":
        quality = int(rng.integers(50, 81))
        _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    params = dict(sample.params, derived={"kind": kind, "shift": [dx, dy]})
    return PhantomSample(image, labels, sample.envelope, sample.coherent, box, sample.injured, params)


def _write_one(job: tuple) -> None:
    task, domain, seed, split, out, item = job
    sequence = image_seed(seed, task, domain, split, item["index"])
    source = item.get("source")
    if source is None:
        sample = render_planned(task, domain, seed, split, item)
    else:  # a near-duplicate of another planned image (a later sweep frame, or a copy leaked from train)
        sample = render_planned(task, domain, seed, source["split"], source)
        sample = derive_frame(sample, item["kind"], np.random.default_rng(sequence.spawn(2)[1]))
    out = Path(out)
    name = item["name"] + ".png"
    if task == "segmentation":
        _save_png(sample.image, out / f"{split}_images" / name)
        _save_png(encode_mask(sample.labels), out / f"{split}_masks" / name)
        return
    _save_png(sample.image, out / split / name)
    box = sample.box if item["injured"] else None
    empty_xml = not item["injured"] and np.random.default_rng(sequence.spawn(1)[0]).random() < EMPTY_XML_SHARE
    if box is not None or empty_xml:
        (out / split / (item["name"] + ".xml")).write_text(voc_xml(split, name, box), encoding="utf-8")


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _folders(task: str, split: str) -> tuple[str, ...]:
    return (f"{split}_images", f"{split}_masks") if task == "segmentation" else (split,)


def _prepare(out: Path) -> None:
    """Refuse a non-empty non-phantom folder; clear an old phantom's split folders (and nothing else)."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; refusing to write a phantom there")
    entries = list(out.iterdir())
    if not entries:
        return
    marker = out / MARKER
    try:
        meta = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    except (OSError, ValueError):
        meta = None
    if not (isinstance(meta, dict) and meta.get("synthetic") is True and meta.get("generator") == GENERATOR):
        raise DataError(
            f"{out}: folder is not empty and holds no {MARKER} of a phantom; refusing to write into it "
            "(it may hold real data). Pick an empty or new folder."
        )
    ours = {name for task in TASKS for split in SPLITS for name in _folders(task, split)} | {MARKER}
    for entry in entries:
        if entry.name not in ours:
            raise DataError(f"{out}: holds {entry.name!r}, which no phantom writes; refusing to overwrite the folder")
    for entry in entries:
        if entry.is_dir():
            stray = [p for p in entry.iterdir() if p.suffix.lower() not in (".png", ".xml")]
            if stray:
                raise DataError(f"{stray[0]}: not a phantom file; refusing to overwrite {out}")
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_phantom(
    task: str,
    out: Path,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    seed: int = 0,
    domain: str = "porcine",
    workers: int = 1,
    sweep_frames: int = 1,
    leak_share: float = 0.0,
) -> Path:
    """Write a synthetic phantom of one release (`task`) under `out`; returns `out`.

    Layout: segmentation -> `{split}_images/` + `{split}_masks/` (VOC-palette RGB); detection -> `{split}/`
    with PNG and Pascal-VOC XML side by side (pre-injury images: no XML or an XML without objects).

    `sweep_frames` > 1 writes each split as sweeps: runs of that many consecutive near-duplicate frames of one
    animal. `leak_share` > 0 makes that share of the val and test images altered copies of train images (named
    after the train animal), listed in PHANTOM.json's `planted`: data with the leakage `spinebench data audit`
    looks for. The defaults write the clean phantom, byte for byte as before.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown phantom task {task!r}: expected one of {', '.join(TASKS)}")
    _check_domain(domain)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"n_{split} must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out)
    _prepare(out)
    meta = {
        "synthetic": True,
        "generator": GENERATOR,
        "version": VERSION,
        "task": task,
        "domain": domain,
        "seed": int(seed),
        "counts": {k: int(v) for k, v in counts.items()},
        "parameters": {
            "knobs": {name: list(bounds) for name, bounds in RANGES[domain].items()},
            "injured_share": INJURED_SHARE[task],
            "image_size": [IMAGE_WIDTH, IMAGE_HEIGHT],
        },
        "note": NOTE,
        "complete": False,  # True once every file is written: a killed generation is redone, never used
    }
    if isinstance(sweep_frames, bool) or not isinstance(sweep_frames, (int, np.integer)) or sweep_frames < 1:
        raise ConfigError(f"sweep_frames must be a positive integer, got {sweep_frames!r}")
    if not 0.0 <= float(leak_share) <= 1.0:
        raise ConfigError(f"leak_share must lie in [0, 1], got {leak_share!r}")
    plans = {split: plan_split(task, domain, seed, split, int(n)) for split, n in counts.items() if n}
    if sweep_frames > 1 or leak_share > 0:
        meta["sweeps"] = {"sweep_frames": int(sweep_frames), "leak_share": float(leak_share)}
        meta["planted"] = _plant(plans, task, domain, seed, int(sweep_frames), float(leak_share))
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    jobs = []
    for split, plan in plans.items():
        for folder in _folders(task, split):
            (out / folder).mkdir(parents=True, exist_ok=True)
        jobs += [(task, domain, int(seed), split, str(out), item) for item in plan]
    if workers > 1 and not _main_reimportable():
        log.warning(
            "the main script (%s) cannot be re-imported by worker processes: writing the phantom in one process",
            getattr(sys.modules.get("__main__"), "__file__", "?"),
        )
        workers = 1
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            _write_one(job)
    else:
        # Never plain fork: OpenCV's thread pool does not survive fork() in a parent that already used it
        # (the children hang). A forkserver preloaded with this module starts workers almost as fast.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
        else:
            context = multiprocessing.get_context("spawn")
        # An executor, not a Pool: a Pool whose workers die at start respawns them forever (a hang), an executor
        # stops with BrokenProcessPool.
        try:
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_worker_init) as pool:
                for _ in pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                    pass
        except BrokenProcessPool as error:
            raise RuntimeError(
                "the phantom's worker processes died. They import the main script again: a script "
                'that calls spinebench must run its work under `if __name__ == "__main__":` (see '
                "'Safe importing of main module' in Python's multiprocessing docs), or write the "
                "phantom with workers=1"
            ) from error
    meta["complete"] = True
    (out / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _image_path(task: str, split: str, name: str) -> str:
    return f"{split}_images/{name}.png" if task == "segmentation" else f"{split}/{name}.png"


def _plant(plans: dict[str, list[dict]], task: str, domain: str, seed: int, frames: int, share: float) -> list[dict]:
    """Turn plan entries into near-duplicates in place: later sweep frames copy their sweep's first frame
    (animal, injury, name), and `share` of val/test entries become altered copies of train sweeps' first
    frames. Returns the planted cross-split pairs (release-relative paths and the alteration)."""
    prefix = "pig" if domain == "porcine" else "pt"

    def rename(item: dict) -> None:
        item["name"] = f"{prefix}{item['animal']:02d}_{'post' if item['injured'] else 'pre'}_{item['index']:04d}"

    for split, plan in plans.items():
        for item in plan:
            if item["index"] % frames:
                first = plan[item["index"] - item["index"] % frames]
                item.update(animal=first["animal"], injured=first["injured"], kind="sweep")
                item["source"] = {k: first[k] for k in ("index", "injured", "animal")} | {"split": split}
                rename(item)
    planted = []
    originals = [item for item in plans.get("train", []) if "source" not in item]
    if not share or not originals:
        return planted
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _CODES[task], _CODES[domain], 10**6 + 1]))
    for split in ("val", "test"):
        plan = plans.get(split, [])
        chosen = sorted(rng.choice(len(plan), size=int(round(share * len(plan))), replace=False).tolist())
        for n, position in enumerate(chosen):
            item, first = plan[position], originals[int(rng.integers(len(originals)))]
            item.update(animal=first["animal"], injured=first["injured"], kind=LEAK_KINDS[n % len(LEAK_KINDS)])
            item["source"] = {k: first[k] for k in ("index", "injured", "animal")} | {"split": "train"}
            rename(item)
            planted.append(
                {
                    "a": _image_path(task, "train", first["name"]),
                    "b": _image_path(task, split, item["name"]),
                    "kind": item["kind"],
                }
            )
    return planted


def _main_reimportable() -> bool:
    """Whether a forkserver/spawn child can import __main__ again: not for `python -` (its __file__ is
    '<stdin>'), where every worker dies at start and the pool respawns them forever."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):  # python -m package.module
        return True
    path = getattr(main, "__file__", None)
    return path is None or Path(path).is_file()  # None: an interactive session, nothing to import


def phantom_differences(
    root: Path,
    task: str,
    n_train: int = 64,
    n_val: int = 16,
    n_test: int = 16,
    seed: int = 0,
    domain: str = "porcine",
    workers: int = 1,
) -> list[str]:
    """How the phantom in `root` differs from the complete one write_phantom(task, ...) would write (generator
    version included; a generation killed half-way is not complete); empty when it can be used as it is."""
    try:
        stamp = json.loads((Path(root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"no readable {MARKER}"]
    if not isinstance(stamp, dict):
        return [f"{MARKER} is not a JSON object"]
    wanted = {
        "task": task,
        "version": VERSION,
        "domain": domain,
        "seed": int(seed),
        "counts": {"train": int(n_train), "val": int(n_val), "test": int(n_test)},
        "complete": True,
    }
    return [f"{key} {stamp.get(key)!r}, asked {value!r}" for key, value in wanted.items() if stamp.get(key) != value]
