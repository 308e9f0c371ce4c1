"""Dice/IoU with nnU-Net's policy: hand-computed cases and agreement with MONAI where the policies coincide."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinebench.classes import IGNORE_INDEX
from spinebench.segmentation.metrics import SegmentationScorer, confusion_counts, dice_iou

NAMES = ("a", "b", "c")


def t(rows):
    return torch.tensor(rows, dtype=torch.uint8)


def test_hand_computed_counts_and_scores():
    ref = t([[0, 0, 1, 1], [2, 2, 1, 1]])
    pred = t([[0, 1, 1, 1], [2, 0, 1, 1]])
    tp, fp, fn = confusion_counts(pred, ref, 3)
    assert tp.tolist() == [[1, 4, 1]] and fp.tolist() == [[1, 1, 0]] and fn.tolist() == [[1, 0, 1]]
    dice, iou = dice_iou(tp, fp, fn)
    np.testing.assert_allclose(dice[0], [2 / 4, 8 / 9, 2 / 3])
    np.testing.assert_allclose(iou[0], [1 / 3, 4 / 5, 1 / 2])


def test_empty_reference_with_prediction_scores_zero_not_nan():
    ref = t([[0, 0], [0, 0]])
    pred = t([[0, 2], [0, 0]])  # class 2 predicted, absent from the reference: a false positive
    dice, iou = dice_iou(*confusion_counts(pred, ref, 3))
    assert dice[0, 2] == 0 and iou[0, 2] == 0
    assert math.isnan(dice[0, 1]) and math.isnan(iou[0, 1])  # class 1 absent from both


def test_empty_prediction_scores_zero():
    ref = t([[1, 1], [0, 0]])
    pred = t([[0, 0], [0, 0]])
    dice, iou = dice_iou(*confusion_counts(pred, ref, 2))
    assert dice[0, 1] == 0 and iou[0, 1] == 0
    assert dice[0, 0] == pytest.approx(2 * 2 / (2 * 2 + 2))


def test_both_empty_is_nan_and_left_out_of_means():
    scorer = SegmentationScorer(NAMES)
    scorer.update(t([[[0, 1], [0, 1]]]), t([[[0, 1], [0, 1]]]), ["x"])  # class 2 nowhere
    m = scorer.metrics()
    assert m["dice_per_class"] == {"a": 1.0, "b": 1.0, "c": None}
    assert m["mean_dice"] == 1.0 and m["mIoU"] == 1.0


def test_ignore_pixels_are_excluded():
    ref = t([[1, IGNORE_INDEX], [1, IGNORE_INDEX]])
    pred = t([[1, 2], [1, 0]])  # wrong only where the reference is ignored
    tp, fp, fn = confusion_counts(pred, ref, 3)
    assert tp.tolist() == [[0, 2, 0]] and fp.sum() == 0 and fn.sum() == 0
    dice, _ = dice_iou(tp, fp, fn)
    assert dice[0, 1] == 1 and math.isnan(dice[0, 0]) and math.isnan(dice[0, 2])


def test_class_missing_everywhere_and_per_case_nanmean():
    scorer = SegmentationScorer(NAMES)
    # image 1: class 1 perfect; image 2: class 1 absent from both (NaN, not 1 or 0); class 2 never anywhere
    scorer.update(t([[[0, 1]], [[0, 0]]]), t([[[0, 1]], [[0, 0]]]), ["one", "two"])
    scorer.update(t([[[1, 1]]]), t([[[0, 1]]]), ["three"])  # class 0 missed (FN), class 1 half (FP)
    m = scorer.metrics()
    assert m["dice_per_class"]["a"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["dice_per_class"]["b"] == pytest.approx((1 + 2 / 3) / 2)  # image "two" is NaN for b: left out
    assert m["dice_per_class"]["c"] is None
    assert m["mean_dice"] == pytest.approx(((2 / 3) + (5 / 6)) / 2)
    summary = scorer.summary()
    assert [c["case"] for c in summary["metric_per_case"]] == ["one", "two", "three"]
    assert summary["metric_per_case"][1]["metrics"]["1"]["Dice"] is None
    assert summary["metric_per_case"][2]["metrics"]["0"] == {
        "Dice": 0.0,
        "IoU": 0.0,
        "TP": 0,
        "FP": 0,
        "FN": 1,
        "n_pred": 0,
        "n_ref": 1,
    }
    assert summary["foreground_mean"]["Dice"] == pytest.approx(5 / 6)  # classes 1..2, class 2 NaN left out


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="map predictions back"):
        confusion_counts(t([[0, 1]]), t([[0], [1]]), 2)
    with pytest.raises(ValueError, match="class index 7"):
        confusion_counts(t([[0, 1]]), t([[0, 7]]), 2)


def test_agrees_with_monai_where_every_class_is_in_every_reference():
    from monai.metrics import DiceMetric, MeanIoU

    generator = torch.Generator().manual_seed(0)
    num_classes, batch = 4, 5
    ref = torch.randint(0, num_classes, (batch, 32, 48), generator=generator)
    pred = torch.where(
        torch.rand(batch, 32, 48, generator=generator) < 0.7,
        ref,
        torch.randint(0, num_classes, (batch, 32, 48), generator=generator),
    )
    dice, iou = dice_iou(*confusion_counts(pred, ref, num_classes))

    def onehot(x):
        return torch.nn.functional.one_hot(x, num_classes).permute(0, 3, 1, 2).float()

    monai_dice = DiceMetric(include_background=True, reduction="none")(onehot(pred), onehot(ref))
    monai_iou = MeanIoU(include_background=True, reduction="none")(onehot(pred), onehot(ref))
    np.testing.assert_allclose(dice, monai_dice.numpy(), rtol=1e-6)
    np.testing.assert_allclose(iou, monai_iou.numpy(), rtol=1e-6)


@pytest.mark.gpu
def test_counts_on_gpu_match_cpu():
    ref = torch.randint(0, 10, (8, 275, 690), dtype=torch.uint8)
    pred = torch.randint(0, 10, (8, 275, 690), dtype=torch.uint8)
    cpu = confusion_counts(pred, ref, 10)
    gpu = confusion_counts(pred.cuda(), ref.cuda(), 10)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


def test_training_masks_are_resized_on_the_pixel_centres_their_images_are():
    """Images shrink by bilinear interpolation on pixel centres (align_corners=False); their masks must sample the
    same centres. A boundary at native column 100 lies at 256-grid column (100 + 0.5) * 256 / 690 - 0.5 = 36.8: the
    first column of the right-hand class is 37 ("nearest" gave 38, labels ~0.85 native px off their images)."""
    from spinebench.segmentation.losses import SegmentationLoss
    from spinebench.segmentation.task import SegmentationModule

    masks = torch.ones(1, 275, 690, dtype=torch.uint8)
    masks[..., 100:] = 2
    module = SegmentationModule(torch.nn.Identity(), SegmentationLoss(10), input_size=(96, 256), augment=False)
    _, y = module.inputs((torch.zeros(1, 275, 690, dtype=torch.uint8), masks), torch.device("cpu"))
    assert int((y[0, 0] == 2).nonzero()[0]) == 37


def test_the_dice_term_is_samed_s_dice_loss():
    """SAMed trains with TransUNet's DiceLoss: per class 1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s) over the
    whole batch, averaged over the classes (s = 1e-5)."""
    from spinebench.segmentation.losses import SegmentationLoss

    generator = torch.Generator().manual_seed(0)
    logits, target = (
        torch.randn(2, 10, 8, 12, generator=generator),
        torch.randint(0, 10, (2, 8, 12), generator=generator),
    )
    probs, onehot = logits.softmax(1), torch.nn.functional.one_hot(target, 10).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    samed = 1 - (2 * (probs * onehot).sum(dims) + 1e-5) / ((probs**2).sum(dims) + (onehot**2).sum(dims) + 1e-5)
    ours = SegmentationLoss(10, ce_weight=0.0, dice_weight=1.0)(logits, target)["dice"]
    assert float(ours) == pytest.approx(float(samed.mean()), rel=1e-5)
