"""Injury localization: detectors (torchvision, ultralytics) and the one COCO evaluator."""
