"""Pretrained starting points: a real local file when there is one, never a silent fallback.

A model config's weights key (`model.weights` of the detectors; `model.network.backbone_weights` of DeepLabv3 and
`model.sam_checkpoint` of SAMed take `auto` the same way, spinebench.segmentation.benchmark):
- `auto` (default): the first known file found in `<cache>/weights/`, `$SPINEBENCH_WEIGHTS` (`make
  reproduce WEIGHTS=...`) or the torch hub cache's checkpoints/, never the working directory (a file dropped
  there, perhaps by someone else, is not picked up by a plain training command: name it as a path to use it);
  with `model.download=true` (and not offline) torchvision/ultralytics may download it; otherwise training
  starts from scratch, says so loudly in the log and records `pretrained: false`.
- `null` / `none` / `scratch`: from scratch on purpose (recorded `pretrained: false`).
- a path: that file; a path that does not exist, or a file that cannot be read, is an error (WeightsError,
  one line).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spinebench.errors import WeightsError  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SCRATCH = {"none", "null", "scratch", "false", ""}


@dataclass(frozen=True)
class WeightsChoice:
    path: Path | None  # None: from scratch (or a download is requested, see `download_url`)
    pretrained: bool
    source: str | None  # what the run records as `pretrained_source`
    download_url: str | None = None


def search_dirs(cache_dir: Path | str | None) -> list[Path]:
    """Where `auto` looks, in order: folders the user or the suite filled on purpose, never the working directory."""
    dirs = []
    if cache_dir:
        dirs.append(Path(cache_dir) / "weights")
    if os.environ.get("SPINEBENCH_WEIGHTS"):
        dirs.append(Path(os.environ["SPINEBENCH_WEIGHTS"]))
    try:
        import torch.hub

        dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    except Exception:  # pragma: no cover
        pass
    return dirs


def offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("YOLO_OFFLINE", "HF_HUB_OFFLINE", "SPINEBENCH_OFFLINE")
    )


def resolve_weights(
    weights: str | os.PathLike | None,
    candidates: Sequence[str],
    cache_dir: Path | str | None,
    model_name: str,
    download: bool = False,
    urls: dict[str, str] | None = None,
    also_looked_in: Sequence[str] = (),
) -> WeightsChoice:
    """Decide the starting point of `model_name` (see the module docstring). `also_looked_in`: where the caller
    searched before, named in the from-scratch banner with the folders searched here."""
    if weights is None or str(weights).strip().lower() in SCRATCH:
        log.warning("%s: model.weights=%s -> training from scratch (pretrained: false)", model_name, weights)
        return WeightsChoice(None, False, None)
    if str(weights) != "auto":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"model.weights={weights}: file not found (give an existing checkpoint path, "
                f"'auto' to search {', '.join(candidates)}, or null to train from scratch)"
            )
        return WeightsChoice(path.resolve(), True, str(path.resolve()))
    for folder in search_dirs(cache_dir):
        for name in candidates:
            if (folder / name).is_file():
                log.info("%s: starting from local weights %s", model_name, folder / name)
                return WeightsChoice((folder / name).resolve(), True, str((folder / name).resolve()))
    if download and not offline() and urls:
        name = next(n for n in candidates if n in urls)
        return WeightsChoice(None, True, urls[name], download_url=urls[name])
    log.warning("=" * 78)
    log.warning(
        "%s: NO PRETRAINED WEIGHTS FOUND (looked for %s in %s)%s",
        model_name,
        ", ".join(candidates),
        ", ".join([*(str(d) for d in search_dirs(cache_dir)), *also_looked_in]),
        "" if not download else " and downloads are off (offline)",
    )
    log.warning("%s: TRAINING FROM SCRATCH -> the run records pretrained: false", model_name)
    log.warning("=" * 78)
    return WeightsChoice(None, False, None)
