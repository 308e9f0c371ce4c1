#!/usr/bin/env bash
# One call on a lent CUDA machine (see the device tool): install the wheels it lacks (.whl/, fetched with
# ../shared/tools/fetch-device-wheels.sh .whl and carried along); the detection training and inference throughput
# benchmarks first, with the GPU to themselves; then a Faster R-CNN learning run on the detection phantom with the
# tests marked `gpu` beside it (GPU_CHECK_TEST_MARK="" for the whole suite, which CI runs on the CPU anyway); then
# the segmentation benchmarks in the time left; a short table last. Numbers land in $OUT (the learning run in $OUT/runs, no checkpoints), packed into
# $OUT/gpu_check.tgz on the device.
#   run(command="SPINEBENCH_GIT_COMMIT=<git rev-parse HEAD, typed here> bash scripts/gpu_check.sh", carry=[".whl"],
#       timeout_s=600)        # the copy there has no .git: the commit label of its results comes from that variable
# GPU_CHECK_STAGES (comma-separated) picks the stages; each call below fits the 10-minute budget on its own:
#   detection,inference,learn,segmentation   the default: the call above (learn = the learning run + the gpu tests)
#   detr-yolov7,transunet-swin,ddp           the second call: DETR and YOLOv7 training vs compute-only (issue 28),
#                                            TransUNet and Swin-UNet (issue 29), one process vs the DDP path under
#                                            torchrun on the same GPU (issue 30); YOLOv7 needs the sas-yolov7 wheel
#                                            in .whl (the [yolov7] extra)
# CPU try-out (tiny settings, same code path; the .venv of `make setup`):  GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh
# Exit status 1 when any stage failed (each failure is said where it happened and listed at the end), else 0;
# 2 before any work when a knob is mistyped or the python has no torch (the wheels not carried).
set -uo pipefail
cd "$(dirname "$0")/.."
# the knobs, checked before any work: a typo must not silently become a 5 s slot or the CPU settings
for knob in GPU_CHECK_BUDGET_S GPU_CHECK_DET_S GPU_CHECK_TEST_S GPU_CHECK_LEARN_S LEARN_EPOCHS GPU_CHECK_DET2_S GPU_CHECK_DDP_S; do
  if [ -n "${!knob-}" ] && ! [[ ${!knob} =~ ^[1-9][0-9]*$ ]]; then
    echo "scripts/gpu_check.sh: $knob=${!knob} is not a whole number above 0" >&2; exit 2
  fi
done
if [ -n "${GPU_CHECK_DEVICE-}" ] && [[ ! $GPU_CHECK_DEVICE =~ ^(cuda|cpu)$ ]]; then
  echo "scripts/gpu_check.sh: GPU_CHECK_DEVICE=$GPU_CHECK_DEVICE is not cuda or cpu" >&2; exit 2
fi
ALL_STAGES=(detection inference learn segmentation detr-yolov7 transunet-swin ddp)
STAGES=${GPU_CHECK_STAGES:-detection,inference,learn,segmentation}
for name in ${STAGES//,/ }; do
  if [[ " ${ALL_STAGES[*]} " != *" $name "* ]]; then
    echo "scripts/gpu_check.sh: GPU_CHECK_STAGES=$STAGES names $name, not a stage (${ALL_STAGES[*]})" >&2; exit 2
  fi
done
wants() { [[ ",$STAGES," == *",$1,"* ]]; }  # wants STAGE: it was asked for
OUT=${OUT:-$PWD/outputs/gpu_check}; mkdir -p "$OUT"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ -z "${PY-}" ]; then  # the device has no .venv: its python3 gets the carried wheels
  PY=python3; [ "$DEVICE" = cpu ] && [ -x .venv/bin/python ] && PY=$PWD/.venv/bin/python
fi
FAILED=()  # the stages that failed, for the exit status
DEADLINE=$(( SECONDS + ${GPU_CHECK_BUDGET_S:-560} ))  # stay inside the device call's limit, table included
cap() { local t=$1 left=$(( DEADLINE - SECONDS - 10 )); (( left < t )) && t=$left; (( t < 5 )) && t=5; echo "$t"; }
# stage NAME LOG SECONDS CMD...: run CMD in its time slot, its output in LOG; on failure say how it ended (a crash
# by a signal leaves an empty log: PYTHONFAULTHANDLER puts the Python stack of such a crash in the log)
stage() {
  local name=$1 log=$2 slot how; slot=$(cap "$3"); shift 3
  timeout "$slot" "$@" > "$log" 2>&1; local rc=$?
  (( rc == 0 )) && return 0
  how="exit $rc"
  (( rc == 124 )) && how="stopped at the end of its $slot s slot"
  (( rc > 128 )) && how="killed by signal $(( rc - 128 )) ($(kill -l $(( rc - 128 )) 2>/dev/null))"
  echo "$name failed ($how): $(tail -n 3 "$log")"
  FAILED+=("$name")  # lost in a background stage's subshell: its caller reads the status `wait` returns
  return 1
}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl
  export PYTHONPATH=$PWD/src:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 SPINEBENCH_CACHE=${SPINEBENCH_CACHE:-$PWD/.cache} MPLBACKEND=Agg
# without torch every stage would fail, one after another, on lent device time: stop here instead
if ! $PY - > "$OUT/device.txt" 2>&1 <<'PY'
import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
                    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY
then
  echo "scripts/gpu_check.sh: $PY cannot import torch ($(tail -n 1 "$OUT/device.txt")); on a device machine," \
       "fetch the wheels first (../shared/tools/fetch-device-wheels.sh .whl) and name .whl in carry" >&2
  exit 2
fi
cat "$OUT/device.txt"

# 1. first, with the GPU to themselves: detection training and inference throughput, spinebench vs compute-only
#    (same device, same process) and YOLOv8 vs plain ultralytics; RetinaNet's steps under torch.profiler after
#    its timed runs (it missed the 0.9 target on the H200 at cc30f22: the op tables show where its steps go), and
#    each torchvision model's engine loop on batches already on the GPU (column "held": data path or loop?);
#    RetinaNet first, so that a stage cut short by its slot still measures it
if [ "$DEVICE" = cuda ]; then
  DET=(--device cuda --data detection_phantom_paper --batch 16 --steps 40 --models retinanet,faster_rcnn,yolov8m,ssd300,ssd512 --yolo-epochs 2 --workers 8 --profile retinanet)
  INFER=(--device cuda --data detection_phantom_paper --batch 16 --passes 2 --models faster_rcnn,retinanet,ssd300,ssd512,yolov8m --workers 8 --profile faster_rcnn)
  SEG_MODELS=(unet deeplabv3 segformer samed); SEG=(--device cuda --batch 16 --steps 30 --workers 8)
  DET2=(--device cuda --data detection_phantom_paper --batch 16 --steps 40 --models detr,yolov7 --workers 8)
  SEG2_MODELS=(transunet swin_unet); SEG2=("${SEG[@]}")  # at their configs' input sizes (256, 128)
  DDP=(--device cuda --model unet --data segmentation_phantom --batch 16 --epochs 5)
else
  DET=(--device cpu --data detection_phantom_tiny --batch 2 --steps 2 --models faster_rcnn,yolov8n --max-input-size 160 --yolo-imgsz 160 --yolo-epochs 1 --workers 0 --data-on-device true --profile faster_rcnn)
  INFER=(--device cpu --data detection_phantom_tiny --batch 2 --passes 1 --models faster_rcnn,yolov8n --max-input-size 160 --yolo-imgsz 160 --workers 0 --profile faster_rcnn)
  SEG_MODELS=(unet_light); SEG=(--device cpu --batch 2 --size 64 160 --steps 2 --workers 0)
  DET2=(--device cpu --data detection_phantom_tiny --batch 2 --steps 2 --models detr_light,yolov7_tiny --max-input-size 160 --workers 0 --data-on-device true)
  SEG2_MODELS=(transunet_light swin_unet_light); SEG2=(--device cpu --batch 2 --size 64 64 --steps 2 --workers 0)
  DDP=(--device cpu --model unet_light --data segmentation_phantom_tiny --batch 4 --size 64 64 --steps 2 --epochs 2 --workers 0 --ranks 1,2)
fi
if wants detection; then
  stage "detection benchmark" "$OUT/bench_detection.txt" "${GPU_CHECK_DET_S:-300}" \
    $PY benchmarks/bench_detection_train.py "${DET[@]}" --json "$OUT/bench_detection.json"
fi
if wants inference; then
  stage "inference benchmark" "$OUT/bench_detection_infer.txt" 90 \
    $PY benchmarks/bench_detection_infer.py "${INFER[@]}" --json "$OUT/bench_detection_infer.json"
fi
# 2. a learning run (GPU) and, beside it, the tests that need CUDA (they run only here; at 268 tests the whole
#    suite no longer fit the slot the budget leaves it)
if wants learn; then
  MARK=${GPU_CHECK_TEST_MARK-gpu}; SELECT=(); [ -n "$MARK" ] && SELECT=(-m "$MARK")
  stage tests "$OUT/tests.txt" "${GPU_CHECK_TEST_S:-230}" \
    $PY -m pytest -q -p no:cacheprovider "${SELECT[@]}" ${GPU_CHECK_TESTS:-tests} &
  TESTS_PID=$!
  RUNS=$(mktemp -d)  # fresh each call: a warm machine keeps outputs/, and an old run there would resume or be reported
  trap 'rm -rf "$RUNS"' EXIT  # its checkpoints go however the script ends
  if [ "$DEVICE" = cuda ]; then
    LEARN=(trainer=gpu trainer.epochs=${LEARN_EPOCHS:-24} trainer.batch_size=8 trainer.optimizer.lr=0.01 trainer.grad_clip=10 data=detection_phantom)
  else
    LEARN=(trainer=smoke data=detection_phantom_tiny)
  fi
  stage "learning run" "$OUT/learn_faster_rcnn.log" "${GPU_CHECK_LEARN_S:-230}" \
    $PY -m spinebench.train model=faster_rcnn "${LEARN[@]}" run_name=gpu-check-faster_rcnn paths.log_dir="$RUNS" skip_finished=false
  mkdir -p "$OUT/runs" && (cd "$RUNS" && find . -type f ! -name '*.pt' -exec cp --parents {} "$OUT/runs/" \;)
  wait $TESTS_PID || FAILED+=(tests)
  echo "tests: $(tail -n 1 "$OUT/tests.txt")"
fi

# 3. segmentation training and inference throughput, with what time is left
if wants segmentation; then
  for model in "${SEG_MODELS[@]}"; do
    stage "segmentation benchmark $model" "$OUT/bench_seg_$model.txt" 150 \
      $PY benchmarks/bench_segmentation_train.py --model "$model" "${SEG[@]}" --json "$OUT/bench_seg_$model.json"
  done
fi

# 4. the second call's stages: the newer rows' training throughput, spinebench vs compute-only (DETR and YOLOv7 in
#    one process, as the other detectors; TransUNet and Swin-UNet as the other segmenters), then the DDP path's cost:
#    one process vs torchrun on the same GPU, each a fresh process (benchmarks/bench_ddp.py says how world size 1
#    is made to take the DDP path)
if wants detr-yolov7; then
  stage "detection benchmark detr, yolov7" "$OUT/bench_detection_detr_yolov7.txt" "${GPU_CHECK_DET2_S:-240}" \
    $PY benchmarks/bench_detection_train.py "${DET2[@]}" --json "$OUT/bench_detection_detr_yolov7.json"
fi
if wants transunet-swin; then
  for model in "${SEG2_MODELS[@]}"; do
    stage "segmentation benchmark $model" "$OUT/bench_seg_$model.txt" 100 \
      $PY benchmarks/bench_segmentation_train.py --model "$model" "${SEG2[@]}" --json "$OUT/bench_seg_$model.json"
  done
fi
if wants ddp; then
  stage "ddp benchmark" "$OUT/bench_ddp.txt" "${GPU_CHECK_DDP_S:-150}" \
    $PY benchmarks/bench_ddp.py "${DDP[@]}" --json "$OUT/bench_ddp.json"
fi

# 5. the short table, last
$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1]); rows = []
for name, suffix in (("bench_detection.json", ""), ("bench_detection_detr_yolov7.json", ""),
                     ("bench_detection_infer.json", " infer")):
    if (out / name).exists():
        doc = json.loads((out / name).read_text())
        rows += [(r["model"] + suffix, r["path"], r["images_per_s"], r["reference"], r["reference_images_per_s"], r["ratio"],
                  r.get("data_path_images_per_s"), r.get("data_path_workers_images_per_s"),
                  r.get("engine_on_held_batches_images_per_s"), doc["meta"]["device"])
                 for r in doc["rows"]]
for f in sorted(out.glob("bench_seg_*.json")):
    r = json.loads(f.read_text())
    rows.append((r["model"], "spinebench", r["spinebench_images_per_s"], "compute only", r["compute_only_images_per_s"], r["ratio"],
                 None, None, None, r["device"]))
    if "infer_ratio" in r:
        rows.append((r["model"] + " infer", "evaluate_split", r["infer_spinebench_images_per_s"], "predict only",
                     r["infer_compute_only_images_per_s"], r["infer_ratio"], None, None, None, r["device"]))
if (out / "bench_ddp.json").exists():  # the DDP path at 1 rank vs one process (issue 30: cost under 5%)
    r = json.loads((out / "bench_ddp.json").read_text())
    if "ratio" in r:
        rows.append((r["model"] + " ddp 1 rank", "torchrun DDP", r["ddp_images_per_s"], "one process",
                     r["single_images_per_s"], r["ratio"], None, None, None, r["device"]))
    rows += [(f"{r['model']} ddp {run['world_size']} ranks", "torchrun DDP", run["images_per_s"], "one process",
              r["single_images_per_s"], run["images_per_s"] / r["single_images_per_s"], None, None, None, r["device"])
             for run in r["runs"] if run["world_size"] > 1]
(out / "summary.json").write_text(json.dumps(rows, indent=1))
for metrics in sorted(out.glob("runs/**/metrics.json")):
    m = json.loads(metrics.read_text()); t = m["metrics"]
    # batch 1, each processor; the test suite ran on the CPU cores meanwhile, so these are checks, not figures
    fps = ", ".join(f"{p['fps']:.1f} FPS {proc}" for proc, p in (m.get("speed") or {}).items())
    print(f"learning run {metrics.parent.name} ({m['epochs']} epochs, {m['train_images_per_s']:.0f} img/s, {fps} "
          "beside the tests): "
          + ", ".join(f"test {k} {t[k]:.3f}" for k in ("mAP50", "mAP50_95", "AR100")))
print(f"{'model':<18} {'ours img/s':>11} {'reference':<22} {'ref img/s':>10} {'ratio':>6} {'data path':>10} {'(workers)':>10}"
      f" {'held':>7}  device")
for model, _, ours, ref, ref_ips, ratio, data_path, workers_path, held, device in rows:
    print(f"{model:<18} {ours:>11.1f} {ref:<22} {ref_ips:>10.1f} {ratio:>6.2f} {data_path or float('nan'):>10.1f}"
          f" {workers_path or float('nan'):>10.1f} {held or float('nan'):>7.1f}  {device}")
PY

# 6. the device tool brings back at most 8 files from $OUT: pack them into one archive there (the table is on stdout)
if [ "${GPU_CHECK_PACK:-$([ "$DEVICE" = cuda ] && echo 1 || echo 0)}" = 1 ]; then
  tar czf /tmp/gpu_check.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/gpu_check.tgz "$OUT/" \
    && echo "packed: $OUT/gpu_check.tgz"
fi
if (( ${#FAILED[@]} )); then
  echo "failed stages: $(IFS=,; echo "${FAILED[*]}")"; exit 1
fi
