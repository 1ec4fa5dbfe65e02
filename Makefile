# alphadrive-trl — every command a user needs. `make help` lists them.
# Variables select what runs; with none, training targets run the tiny CPU demo on the embedded synthetic data.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Matching torch + torchvision wheels that work together on CPU and GPU (see README, "Install").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,sim

DATA_DIR ?= data/synthetic
DEMO_SAMPLES ?= 5000
TINY_ARCH ?= qwen2_5_vl
TINY_MODEL ?= outputs/tiny-$(TINY_ARCH)-init
# Perception pre-training (`make base-model`): scene captions of their own seed, disjoint from the demo data.
CAPTION_DIR ?= data/synthetic-captions
CAPTION_SAMPLES ?= 5000
CAPTION_SEED ?= 101
BASE_RECIPE ?= recipes/tiny-qwen2.5-vl/pretrain/config_perception.yaml
BASE_MODEL ?= outputs/tiny-$(TINY_ARCH)-base
SFT_RECIPE ?= recipes/tiny-qwen2.5-vl/sft/config_demo.yaml
# The demo's GRPO: AlphaDrive's rewards with one expert completion in each group of 8 (chosen on validation in session
# 14; README, Quick start). grpo/config_demo.yaml is the same GRPO without it, as in the paper.
GRPO_RECIPE ?= recipes/tiny-qwen2.5-vl/grpo/config_demo_expert.yaml
RECIPE ?=
ACCELERATE_CONFIG ?=
NUM_PROCESSES ?= 1
# Without RECIPE, training runs on CPU_PROCESSES torchrun ranks (DDP over gloo, one core each): 2 or 1. The demo
# recipes' batch sizes are per rank (2 ranks x 8 = a GRPO step of 2 scenes x 8 generations); with CPU_PROCESSES=1 the
# Makefile accumulates 2 batches per step instead (DEMO_BATCH_FLAGS), so that a step holds the same samples.
CPU_PROCESSES ?= 2
OUTPUT_DIR ?=
SFT_OUTPUT ?= $(if $(OUTPUT_DIR),$(OUTPUT_DIR)/sft,outputs/demo-sft)
GRPO_OUTPUT ?= $(if $(OUTPUT_DIR),$(OUTPUT_DIR)/grpo,outputs/demo-grpo)
EVAL_DIR ?= $(if $(OUTPUT_DIR),$(OUTPUT_DIR)/eval,outputs/demo-eval)
EVAL_SAMPLES ?= 500
EVAL_K ?= 4
EVAL_FLAGS = --dataset $(DATA_DIR) --split test --max-samples $(EVAL_SAMPLES) --num-samples $(EVAL_K) --batch-size 32 --max-new-tokens 128
ARGS ?=
# `make sim-demo`: train and drive in highway-env. Rollout seeds (SIM_DATA_SEED + k) never meet the closed-loop seeds
# (SIM_DRIVE_SEED + k); the open-loop test split holds episodes no training run saw. Rows carry the frame 0.5 s before
# the decision too (--history-frames 1, motion cues); the sim recipes' `max_images: 2`, saved with each checkpoint,
# makes the closed loop give the trained policies that earlier frame as well.
SIM_DIR ?= outputs/sim-demo
SIM_EPISODES ?= 30
SIM_DATA_SEED ?= 1000
SIM_DATA_FLAGS ?= --stride 1 --history-frames 1
SIM_SFT_RECIPE ?= recipes/tiny-qwen2.5-vl/sft/config_sim_demo.yaml
SIM_GRPO_RECIPE ?= recipes/tiny-qwen2.5-vl/grpo/config_sim_demo.yaml
SIM_SFT_ARGS ?=
SIM_GRPO_ARGS ?=
# `make sim-demo-facts`: the same with the scene in words in the prompt too (privileged perception; its own recipes).
SIM_FACTS_DIR ?= outputs/sim-demo-facts
SIM_EVAL_FLAGS ?= --num-samples 4 --batch-size 32 --max-new-tokens 24
SIM_DRIVE_EPISODES ?= 10
SIM_DRIVE_SEED ?= 0
SIM_DRIVE_FLAGS ?= --max-new-tokens 24

# `make sft RECIPE=...` overrides the demo recipe; OUTPUT_DIR overrides the recipe's output_dir.
SFT_CONFIG := $(if $(RECIPE),$(RECIPE),$(SFT_RECIPE))
GRPO_CONFIG := $(if $(RECIPE),$(RECIPE),$(GRPO_RECIPE))
OUT_FLAG := $(if $(OUTPUT_DIR),--output_dir $(OUTPUT_DIR),)
# The demo recipes read data/synthetic and outputs/tiny-...-init; DATA_DIR/TINY_MODEL redirect them (not real recipes).
DEMO_FLAGS := $(if $(RECIPE),,--dataset_name $(DATA_DIR))
# With ACCELERATE_CONFIG (e.g. recipes/accelerate_configs/zero2.yaml) training goes through `accelerate launch`.
LAUNCH = $(if $(ACCELERATE_CONFIG),$(BIN)/accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NUM_PROCESSES) -m,$(PY) -m)
# The demo recipes: several CPU ranks through torchrun (`accelerate launch --cpu` ran one rank only: STACK-NOTES).
DEMO_LAUNCH = $(if $(ACCELERATE_CONFIG)$(filter 1,$(CPU_PROCESSES)),$(LAUNCH),$(BIN)/torchrun --standalone --nproc_per_node $(CPU_PROCESSES) -m)
DEMO_BATCH_FLAGS = $(if $(filter 1,$(CPU_PROCESSES)),--gradient_accumulation_steps 2,)
# `make sft` / `make grpo`: a RECIPE of the user's own runs as written; without one, the demo recipes run as above.
TRAIN_LAUNCH = $(if $(RECIPE),$(LAUNCH),$(DEMO_LAUNCH))
TRAIN_BATCH_FLAGS = $(if $(RECIPE),,$(DEMO_BATCH_FLAGS))

export HF_HUB_OFFLINE ?= 1
# One OpenMP thread per process: on these small CPU runs two threads were measured 13-16x *slower* (thread
# contention), and multi-process launches (torchrun/accelerate) use one per process anyway. Override freely.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONWARNINGS ?= ignore

.PHONY: help install test test-fast quality style data tiny-model base-model sft grpo pipeline pipeline-sft pipeline-grpo eval eval-sft eval-grpo eval-compare eval-curves eval-sft-beside demo bench gpu-check reproduce closed-loop sim-demo sim-demo-facts clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]" $(TORCH_SPEC)
	$(PY) -c "import torch, torchvision, qwen_vl_utils, trl, alphadrive_trl; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| trl', trl.__version__)"
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the package with dev + sim extras (quick when done)

test: install ## Run the whole test suite (what CI runs)
	$(PY) -m pytest tests -q -ra $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test-fast: install ## Tests without the slow end-to-end ones
	$(PY) -m pytest tests -q -m "not slow" $(ARGS)

quality: install ## Lint and format check (ruff)
	$(BIN)/ruff check src data_prep tests benchmarks
	$(BIN)/ruff format --check src data_prep tests benchmarks

style: install ## Auto-format and fix lint (ruff)
	$(BIN)/ruff check --fix src data_prep tests benchmarks
	$(BIN)/ruff format src data_prep tests benchmarks

data: install ## Build the synthetic dataset used by the demo recipes (DATA_DIR, DEMO_SAMPLES)
	$(PY) -m data_prep.synthetic --output-dir $(DATA_DIR) --num-samples $(DEMO_SAMPLES) --seed 0 $(ARGS)

tiny-model: install ## Build the tiny random Qwen-VL model the demo trains (TINY_ARCH, TINY_MODEL)
	@test -f $(TINY_MODEL)/config.json || $(PY) -m alphadrive_trl.tiny_models --arch $(TINY_ARCH) --output-dir $(TINY_MODEL) --preset demo

base-model: install tiny-model ## Perception pre-training of the tiny model on scene captions (cached; BASE_MODEL)
	@test -f $(BASE_MODEL)/model.safetensors || test -f $(CAPTION_DIR)/dataset_dict.json || $(PY) -m data_prep.synthetic --output-dir $(CAPTION_DIR) --num-samples $(CAPTION_SAMPLES) --seed $(CAPTION_SEED) --captions
	@test -f $(BASE_MODEL)/model.safetensors || $(PY) -m alphadrive_trl.sft --config $(BASE_RECIPE) --dataset_name $(CAPTION_DIR) --model_name_or_path $(TINY_MODEL) --output_dir $(BASE_MODEL)

sft: install ## SFT warm-up (RECIPE, ACCELERATE_CONFIG, NUM_PROCESSES, OUTPUT_DIR)
	$(if $(RECIPE),,@$(MAKE) --no-print-directory data-if-missing base-model)
	$(TRAIN_LAUNCH) alphadrive_trl.sft --config $(SFT_CONFIG) $(DEMO_FLAGS) $(TRAIN_BATCH_FLAGS) $(if $(RECIPE),,--model_name_or_path $(BASE_MODEL)) $(OUT_FLAG) $(ARGS)

grpo: install ## GRPO from the SFT checkpoint (RECIPE, ACCELERATE_CONFIG, NUM_PROCESSES, OUTPUT_DIR)
	$(if $(RECIPE),,@$(MAKE) --no-print-directory data-if-missing)
	$(TRAIN_LAUNCH) alphadrive_trl.grpo --config $(GRPO_CONFIG) $(DEMO_FLAGS) $(TRAIN_BATCH_FLAGS) $(OUT_FLAG) $(ARGS)

pipeline: install ## SFT on 20% of the data from the base model, then GRPO on the rest (SFT_RECIPE, GRPO_RECIPE, OUTPUT_DIR)
	@$(MAKE) --no-print-directory pipeline-sft
	@$(MAKE) --no-print-directory pipeline-grpo

pipeline-sft:
	@$(MAKE) --no-print-directory data-if-missing base-model
	$(DEMO_LAUNCH) alphadrive_trl.sft --config $(SFT_RECIPE) $(DEMO_BATCH_FLAGS) --stage sft --dataset_name $(DATA_DIR) --model_name_or_path $(BASE_MODEL) --output_dir $(SFT_OUTPUT) $(ARGS)

pipeline-grpo:
	$(DEMO_LAUNCH) alphadrive_trl.grpo --config $(GRPO_RECIPE) $(DEMO_BATCH_FLAGS) --stage grpo --dataset_name $(DATA_DIR) --model_name_or_path $(SFT_OUTPUT) --output_dir $(GRPO_OUTPUT) $(ARGS)

eval: install ## Evaluate the demo checkpoints on the synthetic test split and compare them
	@$(MAKE) --no-print-directory eval-sft eval-grpo
	@$(MAKE) --no-print-directory eval-compare

# $(call evaluate,CHECKPOINT,OUT,FLAGS): greedy + sampled answers (FLAGS pick the data), then metrics and report in OUT.
evaluate = $(PY) -m alphadrive_trl.evaluation generate --model $(1) $(3) --output $(2)/predictions.jsonl \
	&& $(PY) -m alphadrive_trl.evaluation score --predictions $(2)/predictions.jsonl --output-dir $(2)

eval-sft:
	$(call evaluate,$(SFT_OUTPUT),$(EVAL_DIR)/sft,$(EVAL_FLAGS))

eval-grpo:
	$(call evaluate,$(GRPO_OUTPUT),$(EVAL_DIR)/grpo,$(EVAL_FLAGS))

eval-compare:
	$(BIN)/alphadrive-eval compare $(EVAL_DIR)/sft $(EVAL_DIR)/grpo --names SFT SFT+GRPO

eval-curves: ## Plot the demo runs' training curves (SFT loss, GRPO reward, sampled accuracy, KL) into EVAL_DIR
	$(BIN)/alphadrive-eval curves $(SFT_OUTPUT) $(GRPO_OUTPUT) --names SFT GRPO --output $(EVAL_DIR)/training_curves.png

# The warm-up's evaluation runs on the second core beside the GRPO checkpoint's; its log goes to a file so that the
# other progress bar stays readable.
eval-sft-beside:
	@mkdir -p $(EVAL_DIR) && echo "Evaluating the SFT warm-up on the other core (log: $(EVAL_DIR)/sft.log)"
	($(call evaluate,$(SFT_OUTPUT),$(EVAL_DIR)/sft,$(EVAL_FLAGS))) > $(EVAL_DIR)/sft.log 2>&1 || { cat $(EVAL_DIR)/sft.log; exit 1; }

demo: install ## data -> tiny SFT -> GRPO -> eval on CPU (2 cores), then print the headline numbers
	@$(MAKE) --no-print-directory pipeline
	@$(MAKE) --no-print-directory -j$(CPU_PROCESSES) eval-grpo eval-sft-beside
	@$(MAKE) --no-print-directory eval-compare eval-curves
	@echo "Report: $(EVAL_DIR)/grpo/report.md (SFT: $(EVAL_DIR)/sft/report.md); training curves: $(EVAL_DIR)/training_curves.png"

data-if-missing:
	@test -f $(DATA_DIR)/dataset_dict.json || $(MAKE) --no-print-directory data

bench: install ## Benchmarks vs vanilla TRL / naive code, one table of ratios
	$(PY) benchmarks/run_all.py $(ARGS)

gpu-check: install ## On a GPU: the 2B GRPO recipe's step time vs trl.GRPOTrainer, and the demo pipeline on CUDA
	$(PY) benchmarks/gpu_check.py --output-dir outputs/gpu-check $(ARGS)

reproduce: install ## The small-scale AlphaDrive reproduction study (3 seeds; about 100 min on 2 cores)
	$(PY) benchmarks/reproduce.py $(ARGS)

closed-loop: install ## Closed-loop driving in highway-env: demo checkpoint vs expert/keep/random baselines
	$(PY) -m alphadrive_trl.closed_loop compare --models expert keep random $(GRPO_OUTPUT) --episodes 3 --seed 0 --output-dir outputs/closed-loop $(ARGS)

sim-demo: install ## Train and drive in highway-env: expert rollouts -> SFT -> GRPO -> open-loop eval -> closed loop (SIM_DIR)
	@$(MAKE) --no-print-directory base-model
	$(PY) -m data_prep.highway_env --output-dir $(SIM_DIR)/data --episodes $(SIM_EPISODES) --seed $(SIM_DATA_SEED) --overwrite $(SIM_DATA_FLAGS)
	$(PY) -m alphadrive_trl.sft --config $(SIM_SFT_RECIPE) --dataset_name $(SIM_DIR)/data --model_name_or_path $(BASE_MODEL) --output_dir $(SIM_DIR)/sft $(SIM_SFT_ARGS)
	$(PY) -m alphadrive_trl.grpo --config $(SIM_GRPO_RECIPE) --dataset_name $(SIM_DIR)/data --model_name_or_path $(SIM_DIR)/sft --output_dir $(SIM_DIR)/grpo $(SIM_GRPO_ARGS)
	@rm -f $(SIM_DIR)/eval/sft/predictions.jsonl $(SIM_DIR)/eval/grpo/predictions.jsonl
	$(call evaluate,$(SIM_DIR)/sft,$(SIM_DIR)/eval/sft,--dataset $(SIM_DIR)/data --split test $(SIM_EVAL_FLAGS))
	$(call evaluate,$(SIM_DIR)/grpo,$(SIM_DIR)/eval/grpo,--dataset $(SIM_DIR)/data --split test $(SIM_EVAL_FLAGS))
	$(PY) -m alphadrive_trl.evaluation compare $(SIM_DIR)/eval/sft $(SIM_DIR)/eval/grpo --names SFT SFT+GRPO --output $(SIM_DIR)/eval/comparison.md
	$(PY) -m alphadrive_trl.evaluation curves $(SIM_DIR)/sft $(SIM_DIR)/grpo --names SFT GRPO --output $(SIM_DIR)/eval/training_curves.png
	$(PY) -m alphadrive_trl.closed_loop compare --models expert keep random sft=$(SIM_DIR)/sft grpo=$(SIM_DIR)/grpo --episodes $(SIM_DRIVE_EPISODES) --seed $(SIM_DRIVE_SEED) --output-dir $(SIM_DIR)/closed-loop $(SIM_DRIVE_FLAGS)
	@echo "Open loop: $(SIM_DIR)/eval/comparison.md; closed loop: $(SIM_DIR)/closed-loop/comparison.md"

sim-demo-facts: ## `make sim-demo` with the scene in words in the prompt (privileged perception) -> SIM_FACTS_DIR
	$(MAKE) sim-demo SIM_DIR=$(SIM_FACTS_DIR) SIM_SFT_RECIPE=recipes/tiny-qwen2.5-vl/sft/config_sim_demo_facts.yaml \
		SIM_GRPO_RECIPE=recipes/tiny-qwen2.5-vl/grpo/config_sim_demo_facts.yaml

clean: ## Remove outputs and caches (keeps .venv and data)
	rm -rf outputs .pytest_cache .ruff_cache .hypothesis
