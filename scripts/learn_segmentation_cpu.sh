#!/bin/bash
# CPU learning run (issue 4): light U-Net and light DeepLabv3 on the segmentation phantom, then zero-shot on the
# human-like phantom. 2-core CPU shared with other jobs.
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
COMMON="data=segmentation_phantom model.input_size=[64,160] trainer.name=cpu_learn trainer.device=cpu trainer.epochs=8 trainer.batch_size=8 trainer.fps_images=10 trainer.num_workers=0 trainer/optimizer=adamw trainer.optimizer.lr=0.001 trainer.optimizer.weight_decay=0.0001 trainer.progress=false"
for m in unet_light deeplabv3_light; do
  s=$(date +%s)
  .venv/bin/spinebench-train model=$m $COMMON
  echo "TRAIN $m wall $(( $(date +%s) - s )) s"
  s=$(date +%s)
  .venv/bin/spinebench-eval ckpt=outputs/segmentation_phantom/$m-cpu_learn-s0 data=segmentation_human_phantom
  echo "EVAL $m wall $(( $(date +%s) - s )) s"
done
