#!/usr/bin/env bash
# `make demo`: the reproduce pipeline end to end on a small SYNTHETIC phantom with the smoke budget, on the CPU,
# for a newcomer without GPU or data: every paper row (configs/experiment/paper/*.yaml) trains briefly, is tested,
# the segmenters are scored zero-shot on the human-like phantom, and `spinebench report` writes results/demo/. The
# numbers check the plumbing; they say nothing about the models or the paper.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-outputs/demo}
RESULTS=${DEMO_RESULTS:-results/demo}
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1
# The rows of a task, as the Makefile finds them: the experiment files whose data default is that task's
experiments() {
  local file rows=()
  for file in configs/experiment/paper/*.yaml; do
    grep -qE "^[[:space:]]*-[[:space:]]*override /data:[[:space:]]*$1_" "$file" && rows+=("paper/$(basename "$file" .yaml)")
  done
  (IFS=,; echo "${rows[*]}")
}
# debug=smoke (configs/debug/smoke.yaml) is composed after the experiment: the smoke budget wins over the paper's
# epochs and batch size, and each run lands in its own folder, <row>-paper-s0-smoke
SMOKE=(debug=smoke paths.log_dir="$OUT" skip_finished=true)
start=$(date +%s)
failed=0  # a failed job is named by its command and the demo goes on: the report shows what did finish
"$BIN"/spinebench-train -m "experiment=$(experiments detection)" data=detection_phantom_tiny "${SMOKE[@]}" || failed=1
"$BIN"/spinebench-train -m "experiment=$(experiments segmentation)" data=segmentation_phantom_tiny "${SMOKE[@]}" \
  || failed=1
runs=()  # the segmenters that finished (a folder without metrics.json is refused by spinebench-eval)
for run in "$OUT"/segmentation_phantom_tiny/*-s0-smoke; do
  [[ -f $run/metrics.json ]] && runs+=("$run")
done
if (( ${#runs[@]} )); then
  "$BIN"/spinebench-eval -m ckpt="$(IFS=,; echo "${runs[*]}")" data=segmentation_human_phantom data.phantom.n_test=8 \
    paths.log_dir="$OUT" || failed=1
else
  echo "demo: no segmentation run finished; the zero-shot evaluation is skipped" >&2; failed=1
fi
"$BIN"/spinebench report "$OUT" --out "$RESULTS"
echo "demo finished in $(( $(date +%s) - start )) s: $RESULTS/README.md (SYNTHETIC PHANTOM, CPU smoke runs)"
if (( failed )); then
  echo "demo: some jobs failed (their errors are above); the report shows the runs that finished" >&2
  exit 2
fi
