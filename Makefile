# spinebench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=            # folder holding detection/ and segmentation/ as `spinebench data fetch --out` writes them
HUMAN ?=           # optional: a human set in the release's format (test_images/ + test_masks/) for zero-shot
WEIGHTS ?=         # optional: a folder of pretrained files (yolov8m.pt, torchvision's, sam_vit_b_01ec64.pth; README)
MODELS ?=          # comma-separated manuscript rows, e.g. MODELS=yolov8m,deeplabv3 (default: every row we run)
OVERRIDES ?=       # any Hydra override for every run, e.g. OVERRIDES="trainer.num_workers=16"
RESULTS ?= results

comma := ,
space := $(subst ,, )
DETECTORS := yolov8m faster_rcnn retinanet ssd300 ssd512
SEGMENTERS := deeplabv3 unet segformer samed
SELECTED := $(if $(strip $(MODELS)),$(subst $(comma),$(space),$(strip $(MODELS))),$(DETECTORS) $(SEGMENTERS))
DET := $(filter $(DETECTORS),$(SELECTED))
SEG := $(filter $(SEGMENTERS),$(SELECTED))
experiments = $(subst $(space),$(comma),$(addprefix paper/,$(1)))
DET_DATA := $(if $(strip $(DATA)),data=detection_real data.root=$(abspath $(strip $(DATA)))/detection,data=detection_phantom)
SEG_DATA := $(if $(strip $(DATA)),data=segmentation_real data.root=$(abspath $(strip $(DATA)))/segmentation,data=segmentation_phantom)
HUMAN_DATA := $(if $(strip $(HUMAN)),data=segmentation_human_real data.root=$(abspath $(strip $(HUMAN))),data=segmentation_human_phantom)
WITH_WEIGHTS := $(if $(strip $(WEIGHTS)),SPINEBENCH_WEIGHTS=$(abspath $(strip $(WEIGHTS))) ,)
UNKNOWN := $(filter-out $(DETECTORS) $(SEGMENTERS),$(SELECTED))
DET_DIR := outputs/$(if $(strip $(DATA)),detection_real,detection_phantom)
SEG_DIR := outputs/$(if $(strip $(DATA)),segmentation_real,segmentation_phantom)
HUMAN_DIR := outputs/$(if $(strip $(HUMAN)),segmentation_human_real,segmentation_human_phantom)
SEG_RUNS = $(patsubst %/metrics.json,%,$(wildcard $(foreach m,$(SEG),$(SEG_DIR)/$(m)-paper-s0/metrics.json)))
PAPER_RUNS = $(foreach m,$(DET),$(DET_DIR)/$(m)-paper-s0) $(foreach m,$(SEG),$(SEG_DIR)/$(m)-paper-s0 $(HUMAN_DIR)/eval-$(m)-paper-s0@$(notdir $(SEG_DIR)))
RUNS ?= outputs

.PHONY: help setup test test-all demo reproduce zero-shot report phantom-figure bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup:  ## create .venv and install spinebench with its test extras (torch 2.14.1 from the local disk)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'

test:  ## the CI test suite (CPU only, under 10 minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-all:  ## also the longer CPU runs marked slow
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo:  ## the whole pipeline on a small phantom with the smoke trainer, CPU, no data needed (results/demo/)
	bash scripts/demo.sh

reproduce:  ## every paper row on a CUDA GPU: make reproduce DATA=/data/spinal [WEIGHTS=/w] [MODELS=yolov8m,unet] [HUMAN=...]
	$(if $(UNKNOWN),$(error unknown MODELS: $(UNKNOWN) (rows: $(DETECTORS) $(SEGMENTERS))))
	$(if $(strip $(DATA)),$(if $(wildcard $(strip $(DATA))),,$(error DATA=$(strip $(DATA)) does not exist (see README: spinebench data fetch))))
	$(if $(strip $(HUMAN)),$(if $(wildcard $(strip $(HUMAN))),,$(error HUMAN=$(strip $(HUMAN)) does not exist)))
	$(if $(strip $(WEIGHTS)),$(if $(wildcard $(strip $(WEIGHTS))),,$(error WEIGHTS=$(strip $(WEIGHTS)) does not exist)))
	@$(if $(strip $(DATA)),echo "reproducing on the real release in $(DATA)",echo "WARNING: no DATA=... given: running on the SYNTHETIC PHANTOM, not the paper's data")
	$(if $(DET),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(DET)) $(DET_DATA) trainer=gpu skip_finished=true $(OVERRIDES))
	$(if $(SEG),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(SEG)) $(SEG_DATA) trainer=gpu skip_finished=true $(OVERRIDES))
	$(MAKE) zero-shot report RUNS="$(PAPER_RUNS)"

zero-shot:  ## score the finished segmentation paper runs on the human set (HUMAN=...) or the human-like phantom
	$(if $(SEG_RUNS),$(BIN)/spinebench-eval -m ckpt=$(subst $(space),$(comma),$(SEG_RUNS)) $(HUMAN_DATA),@echo "no finished segmentation run to evaluate zero-shot")

report:  ## tables and plots of the finished runs in RUNS (default: everything under outputs/) -> RESULTS/
	$(BIN)/spinebench report $(RUNS) --out $(RESULTS)

phantom-figure:  ## regenerate docs/phantom_example.png
	$(BIN)/python scripts/make_phantom_figure.py

bench:  ## phantom generation speed (the training and inference throughput benchmarks: scripts/gpu_check.sh, README Speed)
	$(BIN)/python benchmarks/bench_phantom.py

clean:  ## remove run outputs and caches (not results/)
	rm -rf outputs .cache .pytest_cache
