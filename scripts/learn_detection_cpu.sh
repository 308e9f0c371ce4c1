#!/bin/bash
# Learning runs on the 192/48/64 detection phantom, CPU only, from scratch, one after another:
#   bash scripts/learn_detection_cpu.sh                       # yolov8n faster_rcnn retinanet ssd300 (~2.5 h)
#   bash scripts/learn_detection_cpu.sh ssd512                # ~2.9x SSD300's compute per image: run it on its own
#   bash scripts/learn_detection_cpu.sh retinanet ssd300      # some of them
#   bash scripts/learn_detection_cpu.sh yolov7_tiny detr_light  # the light variants of the YOLOv7 and DETR rows
# Each run lands in outputs/detection_phantom/<run_name>; a killed run resumes when the same line runs again.
# Logs and start/end times: ${LOG_DIR:-outputs/learn-logs}. Then: spinebench report <run folders> --out ...
cd "$(dirname "$0")/.." && LOG_DIR=${LOG_DIR:-outputs/learn-logs} && mkdir -p "$LOG_DIR"
export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1
COMMON=(data=detection_phantom trainer.device=cpu)
# SSD300 and SSD512 share one recipe: the authors' SGD (Nesterov, no weight decay, constant lr) at lr 0.01, clipped
SSD_SGD=(trainer.batch_size=8 trainer.num_workers=1 trainer.optimizer.lr=0.01 trainer.optimizer.nesterov=true
         trainer.optimizer.weight_decay=0 trainer/scheduler=constant trainer.scheduler.warmup_epochs=0
         trainer.grad_clip=10 trainer.fps_images=10)
recipe() {  # the overrides of one model's run, in `args`
  case $1 in
    yolov8n) args=(model=yolov8n model.imgsz=256 trainer.epochs=30 trainer.batch_size=16 trainer.num_workers=2
                   trainer.optimizer.lr=0.01 trainer.fps_images=20 run_name=learn-yolov8n-256-e30) ;;
    faster_rcnn) args=(model=faster_rcnn 'model.input_size=[128,320]' trainer.epochs=6 trainer.batch_size=4
                       trainer.num_workers=1 trainer.optimizer.lr=0.02 trainer.fps_images=10
                       run_name=learn-faster_rcnn-128-e6-fixed) ;;
    retinanet) args=(model=retinanet 'model.input_size=[128,320]' trainer.epochs=10 trainer.batch_size=4
                     trainer.num_workers=1 trainer.optimizer.lr=0.01 trainer.grad_clip=10 trainer.fps_images=10
                     run_name=learn-retinanet-128-e10) ;;
    ssd300) args=(model=ssd300 trainer.epochs=30 "${SSD_SGD[@]}" run_name=learn-ssd300-e30) ;;
    ssd512) args=(model=ssd512 trainer.epochs=20 "${SSD_SGD[@]}" run_name=learn-ssd512-e20) ;;
    # the paper's YOLOv7 recipe file with the tiny network at 128 px and YOLOv7's own SGD (lr 0.01, momentum 0.937)
    yolov7_tiny) args=(experiment=paper/yolov7 model=yolov7_tiny model.imgsz=128 trainer.name=cpu_learn
                       trainer.epochs=80 trainer.batch_size=16 trainer.num_workers=0 trainer/optimizer=sgd
                       '~trainer.optimizer.betas' trainer.optimizer.lr=0.01 trainer.optimizer.momentum=0.937
                       trainer.optimizer.nesterov=true trainer.optimizer.weight_decay=0.0005
                       trainer.scheduler.warmup_epochs=1 trainer.fps_images=10 trainer.progress=false) ;;
    # the paper's DETR recipe file (AdamW, clip 0.1) with the narrow DETR at 96 x 224, lr 2e-4 on every group
    detr_light) args=(experiment=paper/detr model=detr_light 'model.input_size=[96,224]' trainer.name=cpu_learn
                      trainer.epochs=150 trainer.batch_size=8 trainer.num_workers=0 trainer.optimizer.lr=0.0002
                      trainer.grad_clip=0.1 model.backbone_lr_scale=1.0 model.final_lr_scale=1.0
                      trainer.fps_images=10 trainer.progress=false) ;;
    *) echo "unknown model $1 (yolov8n faster_rcnn retinanet ssd300 ssd512 yolov7_tiny detr_light)" >&2; return 1 ;;
  esac
}
MODELS=("$@"); (( ${#MODELS[@]} )) || MODELS=(yolov8n faster_rcnn retinanet ssd300)
for model in "${MODELS[@]}"; do recipe "$model" || exit 2; done  # every name checked before the first run starts
for model in "${MODELS[@]}"; do
  recipe "$model"
  date +%s > "$LOG_DIR/$model.t0"
  /usr/bin/time -v .venv/bin/spinebench-train "${COMMON[@]}" "${args[@]}" > "$LOG_DIR/$model.log" 2>&1
  date +%s > "$LOG_DIR/$model.t1"
done
