"""Cross-entropy + Dice (MONAI's DiceLoss) with the ignore index masked out of both terms.

The paper trains DeepLabv3, U-Net and SegFormer with CE, SAMed with 0.2 CE + 0.8 Dice. MONAI's DiceLoss has no
`ignore_index`, so ignored pixels are removed by hand: their softmax probabilities and one-hot targets are both
set to zero, so they add nothing to any intersection or denominator. CE uses PyTorch's `ignore_index`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from spinebench.classes import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        ce_weight: float = 1.0,
        dice_weight: float = 0.0,
        aux_weight: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0 (ce {ce_weight}, dice {dice_weight})")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.ce_weight, self.dice_weight, self.aux_weight = ce_weight, dice_weight, aux_weight
        # SAMed's DiceLoss (TransUNet's utils.py), the one row with a Dice term: one Dice per class summed over the
        # whole batch (batch=True), and the terms of its denominator squared (squared_pred=True)
        self.dice = DiceLoss(include_background=True, to_onehot_y=False, softmax=False, batch=True, squared_pred=True)

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        parts = {}
        total = logits.new_zeros(())
        if self.ce_weight:
            parts["ce"] = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
            total = total + self.ce_weight * parts["ce"]
        if self.dice_weight:
            valid = (target != self.ignore_index).unsqueeze(1)
            probs = logits.softmax(dim=1) * valid
            onehot = F.one_hot(torch.where(valid[:, 0], target, 0), self.num_classes).permute(0, 3, 1, 2) * valid
            parts["dice"] = self.dice(probs, onehot.to(probs.dtype))
            total = total + self.dice_weight * parts["dice"]
        parts["loss"] = total
        return parts

    def forward(self, output, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """`output`: logits (B x C x H x W) or (logits, aux logits); `target`: B x H x W int64. Returns parts + loss."""
        target = target.long()
        aux = None
        if isinstance(output, (tuple, list)):
            output, aux = output
        parts = self._single(output, target)
        if aux is not None and self.aux_weight:
            aux_loss = self._single(aux, target)["loss"]
            parts["aux"] = aux_loss
            parts["loss"] = parts["loss"] + self.aux_weight * aux_loss
        return parts
