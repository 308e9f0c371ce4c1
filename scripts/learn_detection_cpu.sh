#!/bin/bash
# Learning run: YOLOv8n then Faster R-CNN on the 192/48/64 detection phantom, CPU only.
cd "$(dirname "$0")/.." && mkdir -p "${LOG_DIR:-outputs/learn-logs}"
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1
date +%s > ${LOG_DIR:-outputs/learn-logs}/t0
/usr/bin/time -v .venv/bin/spinebench-train model=yolov8n data=detection_phantom trainer.device=cpu \
  model.imgsz=256 trainer.epochs=30 trainer.batch_size=16 trainer.num_workers=2 trainer.optimizer.lr=0.01 \
  trainer.fps_images=20 run_name=learn-yolov8n-256-e30 > ${LOG_DIR:-outputs/learn-logs}/yolo.log 2>&1
date +%s > ${LOG_DIR:-outputs/learn-logs}/t1
/usr/bin/time -v .venv/bin/spinebench-train model=faster_rcnn data=detection_phantom trainer.device=cpu \
  'model.input_size=[128,320]' trainer.epochs=6 trainer.batch_size=4 trainer.num_workers=1 \
  trainer.optimizer.lr=0.02 trainer.fps_images=10 run_name=learn-faster_rcnn-128-e6-fixed > ${LOG_DIR:-outputs/learn-logs}/frcnn.log 2>&1
date +%s > ${LOG_DIR:-outputs/learn-logs}/t2
