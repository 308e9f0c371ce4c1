#!/usr/bin/env bash
# `make demo`: the reproduce pipeline end to end on the SYNTHETIC phantom, on the CPU, for a newcomer without GPU or
# data, in about ten minutes on 2 cores. Rows with a demo recipe (configs/experiment/demo/<row>.yaml: a small
# variant that learns on the CPU in a minute or two) are trained for real; every other paper row
# (configs/experiment/paper/*.yaml) runs through its real config at the smoke budget (debug=smoke), which the report
# labels as a pipeline check, not a score. The segmenters are then scored zero-shot on the human-like phantom and
# `spinebench report` writes results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO_OUT:-outputs/demo}
RESULTS=${DEMO_RESULTS:-results/demo}
export HF_HUB_OFFLINE=1 YOLO_OFFLINE=1

task_of() {  # an experiment file's task, from its data default (as the Makefile reads it)
  grep -oE "^[[:space:]]*-[[:space:]]*override /data:[[:space:]]*(detection|segmentation)" "$1" | grep -oE "detection|segmentation"
}
# Rows whose package is an optional extra (pyproject.toml): run when it is installed, else named and skipped
declare -A EXTRA=([yolov7]="sas_yolov7:pip install -e '.[yolov7]'")
# The experiments of a task ("demo" or "paper" group): demo recipes, and the paper rows that have none
experiments() {
  local group=$1 task=$2 file row rows=()
  for file in configs/experiment/"$group"/*.yaml; do
    row=$(basename "$file" .yaml)
    [[ $(task_of "$file") == "$task" ]] || continue
    [[ $group == paper && -f configs/experiment/demo/$row.yaml ]] && continue
    if [[ -n ${EXTRA[$row]:-} ]] && ! "$BIN"/python -c "import ${EXTRA[$row]%%:*}" 2>/dev/null; then
      echo "demo: the $row row needs an optional extra (${EXTRA[$row]#*:}); skipped" >&2
      continue
    fi
    rows+=("$group/$row")
  done
  (IFS=,; echo "${rows[*]}")
}
COMMON=(paths.log_dir="$OUT" skip_finished=true)
start=$(date +%s)
failed=0  # a failed job is named by its command and the demo goes on: the report shows what did finish
run() {  # a sweep of experiments (skipped when the list is empty)
  local list=$1; shift
  [[ -n $list ]] || return 0
  "$BIN"/spinebench-train -m "experiment=$list" "$@" "${COMMON[@]}" || failed=1
}
run "$(experiments demo detection)"
run "$(experiments demo segmentation)"
run "$(experiments paper detection)" debug=smoke
run "$(experiments paper segmentation)" debug=smoke
runs=()  # the segmenters that finished (a folder without metrics.json is refused by spinebench-eval)
for run_dir in "$OUT"/segmentation_phantom/*; do
  [[ -f $run_dir/metrics.json ]] && runs+=("$run_dir")
done
if (( ${#runs[@]} )); then
  "$BIN"/spinebench-eval -m ckpt="$(IFS=,; echo "${runs[*]}")" data=segmentation_human_phantom \
    data.phantom.n_test=32 paths.log_dir="$OUT" || failed=1
else
  echo "demo: no segmentation run finished; the zero-shot evaluation is skipped" >&2; failed=1
fi
"$BIN"/spinebench report "$OUT" --out "$RESULTS"
echo "demo finished in $(( $(date +%s) - start )) s (SYNTHETIC PHANTOM, CPU)"
echo "  report: $RESULTS/README.md   tables: $RESULTS/detection.csv $RESULTS/segmentation.csv   plots: $RESULTS/plots/"
if (( failed )); then
  echo "demo: some jobs failed (their errors are above); the report shows the runs that finished" >&2
  exit 2
fi
