"""Anatomy segmentation: segmenters (smp, SAMed) and Dice/IoU with nnU-Net's empty-class policy."""
