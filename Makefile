# spinebench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?=            # folder holding detection/ and segmentation/ as `spinebench data fetch --out` writes them
HUMAN ?=           # optional: a human set in the release's format (test_images/ + test_masks/) for zero-shot
WEIGHTS ?=         # optional: a folder of pretrained files (yolov8m.pt, torchvision's, sam_vit_b_01ec64.pth; README)
MODELS ?=          # comma-separated paper rows, e.g. MODELS=yolov8m,deeplabv3 (default: every row we run)
OVERRIDES ?=       # a Hydra override for every training run, e.g. OVERRIDES="trainer.num_workers=16" (not the seed: SEED)
SEED ?= 0          # the runs are outputs/<data>/<row>-paper-s$(SEED)
RESULTS ?= results

comma := ,
space := $(subst ,, )
# The paper rows are the experiment files (configs/experiment/paper/<row>.yaml), each a detector or a segmenter by
# its data default (`- override /data: detection_...` or `segmentation_...`); manuscript.yaml holds their numbers.
EXPERIMENT_FILES := $(sort $(wildcard configs/experiment/paper/*.yaml))
ROWS := $(basename $(notdir $(EXPERIMENT_FILES)))
rows_of = $(sort $(basename $(notdir $(shell grep -lE '^[[:space:]]*-[[:space:]]*override /data:[[:space:]]*$(1)_' /dev/null $(EXPERIMENT_FILES)))))
DETECTORS := $(call rows_of,detection)
SEGMENTERS := $(call rows_of,segmentation)
NO_TASK := $(filter-out $(DETECTORS) $(SEGMENTERS),$(ROWS))
SELECTED := $(if $(strip $(MODELS)),$(subst $(comma),$(space),$(strip $(MODELS))),$(DETECTORS) $(SEGMENTERS))
DET := $(filter $(DETECTORS),$(SELECTED))
SEG := $(filter $(SEGMENTERS),$(SELECTED))
experiments = $(subst $(space),$(comma),$(addprefix paper/,$(1)))
DET_DATA := $(if $(strip $(DATA)),data=detection_real data.root=$(abspath $(strip $(DATA)))/detection,data=detection_phantom)
SEG_DATA := $(if $(strip $(DATA)),data=segmentation_real data.root=$(abspath $(strip $(DATA)))/segmentation,data=segmentation_phantom)
HUMAN_DATA := $(if $(strip $(HUMAN)),data=segmentation_human_real data.root=$(abspath $(strip $(HUMAN))),data=segmentation_human_phantom)
WITH_WEIGHTS := $(if $(strip $(WEIGHTS)),SPINEBENCH_WEIGHTS=$(abspath $(strip $(WEIGHTS))) ,)
UNKNOWN := $(filter-out $(DETECTORS) $(SEGMENTERS),$(SELECTED))
# where the runs land (configs/paths/default.yaml)
OUTPUTS := $(if $(SPINEBENCH_ROOT),$(abspath $(SPINEBENCH_ROOT))/outputs,outputs)
DET_DIR := $(OUTPUTS)/$(if $(strip $(DATA)),detection_real,detection_phantom)
SEG_DIR := $(OUTPUTS)/$(if $(strip $(DATA)),segmentation_real,segmentation_phantom)
HUMAN_DIR := $(OUTPUTS)/$(if $(strip $(HUMAN)),segmentation_human_real,segmentation_human_phantom)
RUN = $(1)-paper-s$(strip $(SEED))
SEG_RUNS = $(patsubst %/metrics.json,%,$(wildcard $(foreach m,$(SEG),$(SEG_DIR)/$(call RUN,$(m))/metrics.json)))
PAPER_RUNS = $(foreach m,$(DET),$(DET_DIR)/$(call RUN,$(m))) $(foreach m,$(SEG),$(SEG_DIR)/$(call RUN,$(m)) $(HUMAN_DIR)/eval-$(call RUN,$(m))@$(notdir $(SEG_DIR)))
# marks a failed step of reproduce: the report is still written, then make fails
FAILED := $(OUTPUTS)/.reproduce-failed
RUNS ?= $(OUTPUTS)

.PHONY: help setup test test-all lint docs format demo reproduce zero-shot report export phantom-figure bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup:  ## create .venv and install spinebench with its test extras (torch 2.14.1 from the local disk)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test,export]'

test:  ## the quick tier CI runs: unit and smoke tests (CPU only, under 5 minutes on 2 cores)
	$(BIN)/python -m pytest -q -m "not slow"

test-all:  ## everything: also the longer resume scenarios and benchmark-script checks marked slow
	$(BIN)/python -m pytest -q

lint:  ## ruff's rules and format check (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs:  ## the documentation site (mkdocs, --strict: a broken link or page fails) -> .site/
	$(BIN)/mkdocs build --strict

format:  ## apply ruff's fixes and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo:  ## every paper row with debug=smoke on a small phantom, CPU, no data needed (results/demo/)
	bash scripts/demo.sh

reproduce:  ## every paper row on a CUDA GPU: make reproduce DATA=/data/spinal [WEIGHTS=/w] [MODELS=yolov8m,unet] [HUMAN=...]
	$(if $(NO_TASK),$(error $(foreach r,$(NO_TASK),$(filter %/$(r).yaml,$(EXPERIMENT_FILES))): no task (a `- override /data: detection_...` or `segmentation_...` default)))
	$(if $(UNKNOWN),$(error unknown MODELS: $(UNKNOWN) (rows, one per configs/experiment/paper/<row>.yaml: $(ROWS))))
	$(if $(shell echo '$(strip $(SEED))' | grep -Ex '[0-9]+'),,$(error SEED=$(strip $(SEED)) is not a whole number))
	$(if $(strip $(DATA)),$(if $(wildcard $(strip $(DATA))),,$(error DATA=$(strip $(DATA)) does not exist (see README: spinebench data fetch))))
	$(if $(strip $(HUMAN)),$(if $(wildcard $(strip $(HUMAN))),,$(error HUMAN=$(strip $(HUMAN)) does not exist)))
	$(if $(strip $(WEIGHTS)),$(if $(wildcard $(strip $(WEIGHTS))),,$(error WEIGHTS=$(strip $(WEIGHTS)) does not exist)))
	@$(if $(strip $(DATA)),echo "reproducing on the real release in $(DATA)",echo "WARNING: no DATA=... given: running on the SYNTHETIC PHANTOM, not the paper's data")
	@mkdir -p $(OUTPUTS) && rm -f $(FAILED)
	$(if $(DET),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(DET)) $(DET_DATA) trainer=gpu skip_finished=true seed=$(strip $(SEED)) $(OVERRIDES) || touch $(FAILED))
	$(if $(SEG),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(SEG)) $(SEG_DATA) trainer=gpu skip_finished=true seed=$(strip $(SEED)) $(OVERRIDES) || touch $(FAILED))
	$(MAKE) zero-shot || touch $(FAILED)
	$(MAKE) report RUNS="$(PAPER_RUNS)"
	@if [ -f $(FAILED) ]; then rm -f $(FAILED); echo "reproduce: these runs did not finish (each error is above and in its folder's log; the report holds what finished):"; \
	  for run in $(PAPER_RUNS); do [ -f "$$run/metrics.json" ] || echo "  $$run"; done; exit 1; fi

zero-shot:  ## score the finished segmentation paper runs on the human set (HUMAN=...) or the human-like phantom
	$(if $(SEG_RUNS),$(BIN)/spinebench-eval -m ckpt=$(subst $(space),$(comma),$(SEG_RUNS)) $(HUMAN_DATA),@echo "no finished segmentation run to evaluate zero-shot")

report:  ## tables and plots of the finished runs in RUNS (default: everything under outputs/) -> RESULTS/
	$(BIN)/spinebench report $(RUNS) --out $(RESULTS)

# every finished paper run (<row>-paper-s<seed>, its metrics.json written) under OUTPUTS; evaluations have no best.pt
EXPORT_RUNS = $(sort $(patsubst %/metrics.json,%,$(wildcard $(foreach r,$(ROWS),$(OUTPUTS)/*/$(r)-paper-s*/metrics.json))))

export:  ## every finished paper run under outputs/ to ONNX, checked against PyTorch and timed (<run>/export/)
	@$(if $(strip $(EXPORT_RUNS)),status=0; for run in $(EXPORT_RUNS); do \
	  $(BIN)/spinebench export ckpt=$$run || { status=1; echo "export: $$run did not export (the line above says why)"; }; \
	done; exit $$status,echo "no finished paper run under $(OUTPUTS) to export")

phantom-figure:  ## regenerate docs/phantom_example.png
	$(BIN)/python scripts/make_phantom_figure.py

bench:  ## phantom generation speed (the training and inference throughput benchmarks: scripts/gpu_check.sh, README Speed)
	$(BIN)/python benchmarks/bench_phantom.py

clean:  ## remove run outputs and caches (not results/, nor the pretrained files in .cache/weights/)
	rm -rf outputs .cache/phantom .cache/decoded .cache/ultralytics .pytest_cache
