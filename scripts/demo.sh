#!/usr/bin/env bash
# `make demo`: the reproduce pipeline end to end on a small SYNTHETIC phantom with the smoke trainer, on the CPU,
# for a newcomer without GPU or data: every paper row trains briefly, is tested, the segmenters are scored
# zero-shot on the human-like phantom, and `spinebench report` writes results/demo/. The numbers check the
# plumbing; they say nothing about the models or the paper.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-outputs/demo}
RESULTS=${DEMO_RESULTS:-results/demo}
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1
# The paper experiments set their own epochs and batch size: bring them back to the smoke trainer's budget.
SMOKE=(trainer=smoke trainer.name=demo trainer.device=cpu trainer.epochs=2 trainer.batch_size=2
       trainer.limit_train_batches=2 trainer.limit_test_images=null paths.log_dir="$OUT" skip_finished=true)
start=$(date +%s)
"$BIN"/spinebench-train -m 'experiment=paper/yolov8m,paper/faster_rcnn,paper/retinanet,paper/ssd300,paper/ssd512' \
  data=detection_phantom_tiny "${SMOKE[@]}"
"$BIN"/spinebench-train -m 'experiment=paper/deeplabv3,paper/unet,paper/segformer,paper/samed' \
  data=segmentation_phantom_tiny "${SMOKE[@]}"
runs=$(ls -d "$OUT"/segmentation_phantom_tiny/*-demo-s0 | paste -sd, -)
"$BIN"/spinebench-eval -m ckpt="$runs" data=segmentation_human_phantom data.phantom.n_test=8 paths.log_dir="$OUT"
"$BIN"/spinebench report "$OUT" --out "$RESULTS"
echo "demo finished in $(( $(date +%s) - start )) s: $RESULTS/README.md (SYNTHETIC PHANTOM, CPU smoke runs)"
