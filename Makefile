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
SEEDS ?= $(SEED)   # several seeds, e.g. SEEDS=0,1,2: each row once per seed; the report shows mean +- sd
GPUS ?=            # jobs at once on this machine, one GPU each (Hydra's joblib launcher); empty: one at a time
PARTITION ?=       # reproduce-slurm: the SLURM partition
ACCOUNT ?=         # reproduce-slurm: the SLURM account (optional)
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
SEED_LIST := $(subst $(comma),$(space),$(strip $(SEEDS)))
SEED_ARG := $(subst $(space),$(comma),$(SEED_LIST))
LAUNCH := $(if $(strip $(GPUS)),hydra/launcher=gpus gpus=$(strip $(GPUS)))
SLURM := hydra/launcher=slurm hydra.launcher.partition=$(strip $(PARTITION))$(if $(strip $(ACCOUNT)), hydra.launcher.account=$(strip $(ACCOUNT)))
RUN = $(1)-paper-s$(2)
SEG_RUNS = $(patsubst %/metrics.json,%,$(wildcard $(foreach s,$(SEED_LIST),$(foreach m,$(SEG),$(SEG_DIR)/$(call RUN,$(m),$(s))/metrics.json))))
PAPER_RUNS = $(foreach s,$(SEED_LIST),$(foreach m,$(DET),$(DET_DIR)/$(call RUN,$(m),$(s))) $(foreach m,$(SEG),$(SEG_DIR)/$(call RUN,$(m),$(s)) $(HUMAN_DIR)/eval-$(call RUN,$(m),$(s))@$(notdir $(SEG_DIR))))
# marks a failed step of reproduce: the report is still written, then make fails
FAILED := $(OUTPUTS)/.reproduce-failed
RUNS ?= $(OUTPUTS)

.PHONY: help setup test test-all lint docs format demo reproduce reproduce-slurm check-reproduce plan zero-shot report export phantom-figure bench clean

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

check-reproduce:  # what reproduce and reproduce-slurm refuse before anything runs
	$(if $(NO_TASK),$(error $(foreach r,$(NO_TASK),$(filter %/$(r).yaml,$(EXPERIMENT_FILES))): no task (a `- override /data: detection_...` or `segmentation_...` default)))
	$(if $(UNKNOWN),$(error unknown MODELS: $(UNKNOWN) (rows, one per configs/experiment/paper/<row>.yaml: $(ROWS))))
	$(if $(SEED_LIST),,$(error SEEDS is empty: give SEED=N or SEEDS=0,1,2))
	$(foreach s,$(SEED_LIST),$(if $(shell echo '$(s)' | grep -Ex '[0-9]+'),,$(error SEED=$(s) is not a whole number)))
	$(if $(strip $(GPUS)),$(if $(shell echo '$(strip $(GPUS))' | grep -Ex '[1-9][0-9]*'),,$(error GPUS=$(strip $(GPUS)): the number of GPUs to run jobs on, a whole number >= 1)))
	$(if $(strip $(DATA)),$(if $(wildcard $(strip $(DATA))),,$(error DATA=$(strip $(DATA)) does not exist (see README: spinebench data fetch))))
	$(if $(strip $(HUMAN)),$(if $(wildcard $(strip $(HUMAN))),,$(error HUMAN=$(strip $(HUMAN)) does not exist)))
	$(if $(strip $(WEIGHTS)),$(if $(wildcard $(strip $(WEIGHTS))),,$(error WEIGHTS=$(strip $(WEIGHTS)) does not exist)))
	@$(if $(strip $(DATA)),echo "reproducing on the real release in $(DATA)",echo "WARNING: no DATA=... given: running on the SYNTHETIC PHANTOM, not the paper's data")
	@$(BIN)/spinebench plan --rows $(subst $(space),$(comma),$(DET) $(SEG)) --seeds $(SEED_ARG) --gpus $(or $(strip $(GPUS)),1)

plan:  ## rows, seeds, jobs and estimated H200 GPU-hours of a reproduction: make plan [MODELS=...] [SEEDS=0,1,2] [GPUS=4]
	@$(BIN)/spinebench plan --rows $(subst $(space),$(comma),$(DET) $(SEG)) --seeds $(SEED_ARG) --gpus $(or $(strip $(GPUS)),1)

reproduce: check-reproduce  ## every paper row on CUDA: make reproduce DATA=/data/spinal [WEIGHTS=/w] [MODELS=yolov8m,unet] [HUMAN=...] [SEEDS=0,1,2] [GPUS=4]
	@mkdir -p $(OUTPUTS) && rm -f $(FAILED)
	$(if $(DET),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(DET)) $(DET_DATA) trainer=gpu skip_finished=true seed=$(SEED_ARG) $(strip $(LAUNCH) $(OVERRIDES)) || touch $(FAILED))
	$(if $(SEG),$(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=$(call experiments,$(SEG)) $(SEG_DATA) trainer=gpu skip_finished=true seed=$(SEED_ARG) $(strip $(LAUNCH) $(OVERRIDES)) || touch $(FAILED))
	$(MAKE) zero-shot || touch $(FAILED)
	$(MAKE) report RUNS="$(PAPER_RUNS)"
	@if [ -f $(FAILED) ]; then rm -f $(FAILED); echo "reproduce: these runs did not finish (each error is above and in its folder's log; the report holds what finished):"; \
	  for run in $(PAPER_RUNS); do [ -f "$$run/metrics.json" ] || echo "  $$run"; done; exit 1; fi

# One submission per row (its SLURM request is its experiment's `resources`), all rows at once; each waits for its
# row x seed jobs, which resume from last.pt when requeued. The zero-shot scoring and the report run here after.
reproduce-slurm: check-reproduce  ## the same as SLURM jobs: make reproduce-slurm DATA=/data/spinal PARTITION=gpu [ACCOUNT=lab] [SEEDS=0,1,2]
	$(if $(strip $(PARTITION)),,$(error PARTITION=<the cluster's partition> is required for reproduce-slurm))
	@mkdir -p $(OUTPUTS) && rm -f $(FAILED)
	@pids=""; \
	for row in $(DET); do $(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=paper/$$row $(DET_DATA) trainer=gpu skip_finished=true seed=$(SEED_ARG) $(SLURM) $(OVERRIDES) & pids="$$pids $$!"; done; \
	for row in $(SEG); do $(WITH_WEIGHTS)$(BIN)/spinebench-train -m experiment=paper/$$row $(SEG_DATA) trainer=gpu skip_finished=true seed=$(SEED_ARG) $(SLURM) $(OVERRIDES) & pids="$$pids $$!"; done; \
	for pid in $$pids; do wait $$pid || touch $(FAILED); done
	$(MAKE) zero-shot || touch $(FAILED)
	$(MAKE) report RUNS="$(PAPER_RUNS)"
	@if [ -f $(FAILED) ]; then rm -f $(FAILED); echo "reproduce-slurm: these runs did not finish (each error is above and in its folder's log; the report holds what finished):"; \
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
