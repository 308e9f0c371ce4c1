#!/usr/bin/env bash
# One call on a lent CUDA machine (see the device tool): install the wheels it lacks (.whl/, fetched with
# ../shared/tools/fetch-device-wheels.sh .whl and carried along), run the test suite (its CUDA tests included),
# then the training-throughput benchmarks, and print a short table last. Numbers land in $OUT.
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# CPU try-out (tiny settings, same code path):  GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/outputs/gpu_check}; mkdir -p "$OUT"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
  export PYTHONPATH=$PWD/src:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 SPINEBENCH_CACHE=${SPINEBENCH_CACHE:-$PWD/.cache} MPLBACKEND=Agg
$PY - <<'PY' | tee "$OUT/device.txt"
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
                    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

# 1. the test suite (the CUDA-only tests run here and nowhere else)
timeout 240 $PY -m pytest -q -x -p no:cacheprovider ${GPU_CHECK_TESTS:-tests} > "$OUT/tests.txt" 2>&1
echo "tests: $(tail -n 1 "$OUT/tests.txt")"

# 2. training throughput: spinebench vs compute-only (same device, same process) and YOLOv8 vs plain ultralytics
if [ "$DEVICE" = cuda ]; then
  DET=(--device cuda --data detection_phantom --batch 16 --steps 30 --models faster_rcnn,retinanet,ssd300,ssd512,yolov8m --yolo-epochs 2)
  SEG_MODELS=(unet deeplabv3 segformer samed); SEG=(--device cuda --batch 16 --steps 30)
else
  DET=(--device cpu --data detection_phantom_tiny --batch 2 --steps 2 --models faster_rcnn,yolov8n --max-input-size 160 --yolo-imgsz 160 --yolo-epochs 1 --workers 0)
  SEG_MODELS=(unet_light); SEG=(--device cpu --batch 2 --size 64 160 --steps 2 --workers 0)
fi
timeout 300 $PY benchmarks/bench_detection_train.py "${DET[@]}" --json "$OUT/bench_detection.json" > "$OUT/bench_detection.txt" 2>&1 \
  || echo "detection benchmark failed: $(tail -n 3 "$OUT/bench_detection.txt")"
for model in "${SEG_MODELS[@]}"; do
  timeout 120 $PY benchmarks/bench_segmentation_train.py --model "$model" "${SEG[@]}" --json "$OUT/bench_seg_$model.json" \
    > "$OUT/bench_seg_$model.txt" 2>&1 || echo "segmentation benchmark $model failed: $(tail -n 3 "$OUT/bench_seg_$model.txt")"
done

# 3. the short table, last
$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1]); rows = []
det = out / "bench_detection.json"
if det.exists():
    doc = json.loads(det.read_text())
    rows += [(r["model"], r["path"], r["images_per_s"], r["reference"], r["reference_images_per_s"], r["ratio"], doc["meta"]["device"]) for r in doc["rows"]]
for f in sorted(out.glob("bench_seg_*.json")):
    r = json.loads(f.read_text())
    rows.append((r["model"], "spinebench", r["spinebench_images_per_s"], "compute only", r["compute_only_images_per_s"], r["ratio"], r["device"]))
(out / "summary.json").write_text(json.dumps(rows, indent=1))
print(f"{'model':<12} {'ours img/s':>11} {'reference':<22} {'ref img/s':>10} {'ratio':>6}  device")
for model, _, ours, ref, ref_ips, ratio, device in rows:
    print(f"{model:<12} {ours:>11.1f} {ref:<22} {ref_ips:>10.1f} {ratio:>6.2f}  {device}")
PY
