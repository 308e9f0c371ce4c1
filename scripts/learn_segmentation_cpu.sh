#!/bin/bash
# CPU learning runs of the light segmenters on the segmentation phantom, each then scored zero-shot on the
# human-like phantom. 2-core CPU, from scratch:
#   bash scripts/learn_segmentation_cpu.sh                                    # unet_light deeplabv3_light
#   bash scripts/learn_segmentation_cpu.sh swin_unet_light transunet_light    # the new rows' light variants
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
COMMON="data=segmentation_phantom trainer.name=cpu_learn trainer.device=cpu trainer.epochs=8 trainer.batch_size=8 trainer.fps_images=10 trainer.num_workers=0 trainer/optimizer=adamw trainer.optimizer.lr=0.001 trainer.optimizer.weight_decay=0.0001 trainer.progress=false"
size_of() {  # the input each network's grid takes near the release's aspect (Swin: multiples of 32; TransUNet: 16)
  case $1 in
    unet_light|deeplabv3_light) echo "[64,160]" ;;
    swin_unet_light|transunet_light) echo "[64,128]" ;;
    *) echo "unknown model $1 (unet_light deeplabv3_light swin_unet_light transunet_light)" >&2; return 1 ;;
  esac
}
MODELS=("$@"); (( ${#MODELS[@]} )) || MODELS=(unet_light deeplabv3_light)
for m in "${MODELS[@]}"; do size_of "$m" > /dev/null || exit 2; done  # every name checked before the first run
for m in "${MODELS[@]}"; do
  s=$(date +%s)
  .venv/bin/spinebench-train model=$m "model.input_size=$(size_of "$m")" $COMMON
  echo "TRAIN $m wall $(( $(date +%s) - s )) s"
  s=$(date +%s)
  .venv/bin/spinebench-eval ckpt=outputs/segmentation_phantom/$m-cpu_learn-s0 data=segmentation_human_phantom
  echo "EVAL $m wall $(( $(date +%s) - s )) s"
done
