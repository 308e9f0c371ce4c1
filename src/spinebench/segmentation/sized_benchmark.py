"""`SizedSegmentationBenchmark`: the segmentation benchmark of a network built for one input size.

A ViT's position embedding (TransUNet) and a Swin's window grid and attention masks (Swin-UNet) are laid out for
the size they see, and TransUNet's parameter count grows with it (105,323,306 at the paper's 256). So the network
is built for the run's input size, `model.input_size` (capped by `trainer.max_input_size` in smoke runs, rounded
to the builder's multiple): the benchmark passes it as the builder's `img_size`, and a size the builder's grid
cannot take is a ConfigError when the network is built, before training. The native 275 x 690 (`input_size:
null`) is refused: these networks are trained at a square resize, as their authors did.

A builder says which multiple its sides must be with `@built_for_input(multiple)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from spinebench.classes import SEGMENTATION_CLASSES
from spinebench.contract import RunContext
from spinebench.errors import ConfigError
from spinebench.segmentation.benchmark import SegmentationBenchmark
from spinebench.segmentation.models import NETWORK

SIZE_KEY = "img_size"  # the builders' argument the benchmark fills in


def built_for_input(multiple: int) -> Callable:
    """Mark a builder whose network is built for an `img_size` whose sides are multiples of `multiple`."""

    def mark(builder: Callable) -> Callable:
        builder.input_multiple = multiple
        return builder

    return mark


class SizedSegmentationBenchmark(SegmentationBenchmark):
    def __init__(
        self,
        name: str,
        network: Callable[..., Any],
        row: str | None = None,
        input_size: Sequence[int] | None = (256, 256),
        loss: dict | None = None,
        num_classes: int = len(SEGMENTATION_CLASSES),
        n_overlays: int = 8,
    ):
        super().__init__(name, network, row, input_size, loss, num_classes, n_overlays)
        multiple = getattr(getattr(network, "func", network), "input_multiple", None)
        if multiple is None:
            raise ConfigError(
                f"{NETWORK}: {name}'s builder is not one built for an input size (spinebench.segmentation."
                "transunet.build_transunet or swin_unet.build_swin_unet); use SegmentationBenchmark for it"
            )
        if self.input_size is None:
            raise ConfigError(
                f"model.input_size=null: {name} is built for one input size (its patch and window grid), not the "
                f"native 275 x 690; give model.input_size=[H, W], sides multiples of {multiple}"
            )
        if SIZE_KEY in (getattr(network, "keywords", None) or {}):
            raise ConfigError(f"{NETWORK}.{SIZE_KEY}: {name} is built for model.input_size; set that instead")
        self.size_multiple = multiple

    def _network_arguments(self, ctx: RunContext | None, trained: dict | None, search: bool = True) -> dict:
        return {**super()._network_arguments(ctx, trained, search), SIZE_KEY: self.effective_size(ctx)}
