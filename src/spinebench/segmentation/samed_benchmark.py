"""`SamedBenchmark`: SAMed's rules on top of SegmentationBenchmark, all of which follow from one fact: its
checkpoints hold only LoRA, the prompt encoder and the mask decoder (spinebench.segmentation.samed), so the
frozen ViT-B encoder comes back from the SAM file (or, without one, from the seeded random initialisation).

- Input: square, `model.image_size` on a side (`model.input_size` may only repeat it); a size capped by
  `trainer.max_input_size` stays a multiple of SAM's 16-pixel patch.
- `model.sam_checkpoint`: a path, null (random frozen encoder, warned about loudly, recorded pretrained: false),
  or `auto`: sam_vit_b_01ec64.pth found in the weights folders.
- Every checkpoint records the SAM file (FROZEN_WEIGHTS: name and size, so the same file in another folder
  still counts), and a resume that would rebuild the encoder from another file, or from none where there was
  one, is refused (`resume_rules`): the trained layers would sit on another encoder.
- A finished run is scored with the SAM file its training recorded, found again by name and size if it moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from spinebench.classes import SEGMENTATION_CLASSES
from spinebench.contract import ResumeRule, RunContext
from spinebench.engine.config import input_size as checked_input_size
from spinebench.engine.config import positive_int
from spinebench.errors import ConfigError, WeightsError
from spinebench.segmentation.benchmark import WEIGHTS_SOURCE, SegmentationBenchmark, is_auto
from spinebench.segmentation.samed import PATCH_SIZE

log = logging.getLogger(__name__)
SAM_FILES = ["sam_vit_b_01ec64.pth"]  # the SAM ViT-B checkpoint the SAMed paper starts from
# A checkpoint config's record of the file of the weights its checkpoints do NOT hold, as "<file name>, <bytes>
# bytes", or None (seeded random init). Unlike weights_source (where the file was found) it is compared on resume.
FROZEN_WEIGHTS = "frozen_weights"
OWN_SETTINGS = ("image_size", "sam_checkpoint")  # the benchmark's, passed to the network: not network keys


def frozen_weights(source: str | None) -> str | None:
    """How a checkpoint config records the file of its frozen weights: its name and size, so the same file found
    in another folder (another machine's weights folder) still resumes."""
    if source is None:
        return None
    path = Path(source)
    return f"{path.name}, {path.stat().st_size} bytes"


def same_frozen_encoder(saved: dict[str, Any], current: dict[str, Any]) -> tuple[str, ...]:
    """A resume rule: refuse a resume whose SAM file (FROZEN_WEIGHTS) differs from the one the run trained on,
    since it would change the frozen encoder under the trained layers. A checkpoint without the key (none was
    recorded) is not compared."""
    if FROZEN_WEIGHTS not in saved:
        return (FROZEN_WEIGHTS,)
    if saved[FROZEN_WEIGHTS] != current.get(FROZEN_WEIGHTS):

        def said(value: Any) -> str:
            return value or "none (its seeded random initialisation)"

        raise ConfigError(
            f"this run's frozen weights (not in its checkpoints) came from {said(saved[FROZEN_WEIGHTS])}"
            f"; this start found {said(current.get(FROZEN_WEIGHTS))}, and resuming would change the "
            "frozen encoder under the trained layers. Give it the same file, give this run its own "
            "folder (run_name=...), or move checkpoints/ away to start over"
        )
    return ()


class SamedBenchmark(SegmentationBenchmark):
    size_multiple = PATCH_SIZE

    def __init__(
        self,
        name: str,
        network: Callable[..., torch.nn.Module],
        row: str | None = None,
        image_size: int = 512,
        sam_checkpoint: str | None = "auto",
        input_size: Sequence[int] | None = None,
        loss: dict | None = None,
        num_classes: int = len(SEGMENTATION_CLASSES),
        n_overlays: int = 8,
    ):
        size = positive_int(image_size, "model.image_size")
        if size % PATCH_SIZE:
            raise ConfigError(f"model.image_size={size}: must be a multiple of {PATCH_SIZE} (SAM's patch size)")
        if input_size is not None and checked_input_size(input_size) != [size, size]:
            raise ConfigError(
                f"SAMed takes square {size}x{size} inputs (model.image_size); "
                f"model.input_size={list(input_size)} disagrees"
            )
        given = sorted(set(OWN_SETTINGS) & set(getattr(network, "keywords", None) or {}))
        if given:
            raise ConfigError(f"model.network.{given[0]}: SAMed's is model.{given[0]}")
        super().__init__(name, network, row, [size, size], loss, num_classes, n_overlays)
        self.sam_checkpoint = sam_checkpoint

    def _network_arguments(self, ctx: RunContext | None, trained: dict | None, search: bool = True) -> dict:
        if trained is not None:
            sam = self._trained_weights(trained, self.sam_checkpoint, ctx)
        elif is_auto(self.sam_checkpoint):
            sam = self._auto_weights(ctx) if search else None
        else:
            sam = self.sam_checkpoint
        return {"image_size": self.effective_size(ctx)[0], "sam_checkpoint": sam}

    def _auto_weights(self, ctx: RunContext | None) -> str | None:
        return self._find_weights(SAM_FILES, ctx)

    def _trained_weights(self, trained: dict, given: Any, ctx: RunContext | None = None) -> str | None:
        """The SAM file a finished run is rebuilt from: the one its training recorded (else the one its config
        names). Moved since (another weights folder), the file found now is used when its name and size are the
        recorded ones: the resume rule accepts it on the same grounds."""
        if WEIGHTS_SOURCE in trained:
            source = trained[WEIGHTS_SOURCE]
        else:  # a checkpoint that does not record it
            source = None if is_auto(given) else given
        if source is None or Path(str(source)).expanduser().is_file():
            return source
        found = self._auto_weights(ctx) if is_auto(given) else given
        if (
            trained.get(FROZEN_WEIGHTS)
            and found
            and Path(str(found)).expanduser().is_file()
            and frozen_weights(found) == trained[FROZEN_WEIGHTS]
        ):
            log.info("%s: the SAM file it was trained from, %s, is now at %s", self.name, source, found)
            return str(found)
        raise WeightsError(
            f"{source}: the SAM checkpoint this SAMed run was trained from is not there any more; the "
            "run's checkpoints hold only LoRA and the decoder, so scoring it needs that file (its "
            "frozen encoder) back at this path"
        )

    def _starting_point(self, model: torch.nn.Module) -> dict[str, Any]:
        info = super()._starting_point(model)
        if not info["pretrained"]:
            log.warning(
                "SAMed WITHOUT the SAM checkpoint: random frozen encoder; put sam_vit_b_01ec64.pth in "
                "$SPINEBENCH_WEIGHTS or <cache>/weights, or set model.sam_checkpoint=PATH. This run records "
                "pretrained: false."
            )
        return info

    def checkpoint_keys(self, pretrained_source: str | None) -> dict[str, Any]:
        """Also the frozen encoder's file: a resume must rebuild the same encoder (same_frozen_encoder)."""
        return {**super().checkpoint_keys(pretrained_source), FROZEN_WEIGHTS: frozen_weights(pretrained_source)}

    def resume_rules(self) -> tuple[ResumeRule, ...]:
        return (*super().resume_rules(), same_frozen_encoder)
