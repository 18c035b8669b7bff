# museg_lit — common commands. `make help` lists them.
PYTHON ?= python
# the store the runs write to: $MUSEG_ROOT/logs when MUSEG_ROOT is set (conf/paths/default.yaml), else ./logs
LOG_DIR ?= $(if $(MUSEG_ROOT),$(MUSEG_ROOT),.)/logs
MLFLOW_DB ?= $(LOG_DIR)/mlflow.db

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-all test-docs test-slurm lint format train train-stage1 train-stage2 mlflow-ui data etbench-videos clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: ## install ffmpeg (Debian, if missing) and the package with the dev tools (editable)
	@command -v ffmpeg >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq ffmpeg) \
	  || echo "ffmpeg not found: install it (apt-get install ffmpeg) for the video tests and benchmarks"; }
	$(PYTHON) -m pip install -e ".[dev]"

test: ## run the default test suite (no network, no GPU, no slow tests)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest

test-fast: ## unit + config tiers only (tests/unit: no training steps, no slow tests), < 2 min on 2 cores
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests/unit -m "not slow and not gpu and not integration" -q

test-all: ## run every CPU test, slow ones, the documented commands and the SLURM tier included
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -m "not gpu"

test-docs: ## run every CPU command of the README as written (MUSEG_ROOT in a temp folder); CI runs it after `make test`
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests/docs -m docs -s

test-slurm: ## bring up a real single-node SLURM cluster here (installs slurm-wlm + munge if absent; root), run tests/slurm, tear it down
	MUSEG_REQUIRE_SLURM=1 HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests/slurm -m slurm -s

lint: ## ruff lint of src and tests
	$(PYTHON) -m ruff check src tests experiments

format: ## ruff format + import sort
	$(PYTHON) -m ruff check --fix --select I src tests experiments
	$(PYTHON) -m ruff format src tests experiments

train: ## the embedded default: tiny Qwen2.5-VL on generated videos, CPU, MLflow in logs/
	$(PYTHON) -m museg_lit.train

train-stage1: ## MUSEG stage 1 (needs MODEL=<Qwen2.5-VL-7B dir> and the videos under data/museg)
	$(PYTHON) -m museg_lit.train +experiment=stage1 model.path=$(MODEL) trainer=gpu

train-stage2: ## MUSEG stage 2 from a stage-1 export (MODEL=<stage-1 export dir>)
	$(PYTHON) -m museg_lit.train +experiment=stage2 model.path=$(MODEL) trainer=gpu

mlflow-ui: ## serve the runs' MLflow store on http://127.0.0.1:5000
	$(PYTHON) -m mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --default-artifact-root $(LOG_DIR)/mlartifacts --host 127.0.0.1 --port 5000

data: ## download MUSEG's annotation files (train, grounding eval, E.T. Bench) into data/museg (videos: see README)
	$(PYTHON) -m museg_lit.data.download --out data/museg

clean: ## remove caches and generated data (keeps logs/)
	rm -rf .cache data/synthetic .pytest_cache .ruff_cache

# ---- evaluation (MUSEG's protocol; README "Evaluation"). MODEL=tiny | a local checkpoint dir;
# VIDEO_ROOT=folder holding charades/, thumos14/, ... (default data/museg/videos); EVAL_ARGS=extra overrides.
# Rerunning a target resumes an interrupted evaluation (predictions in logs/eval/<set>/<model folder>).
# MODEL_CFG: the model config of a checkpoint dir (3B if its name says so; same settings otherwise).
VIDEO_ROOT ?=
EVAL_ARGS ?=
EVAL_CKPT = $(or $(MODEL),tiny)
MODEL_CFG ?= $(if $(findstring 3B,$(EVAL_CKPT))$(findstring 3b,$(EVAL_CKPT)),qwen2_5_vl_3b,qwen2_5_vl_7b)
EVAL_MODEL = $(if $(filter tiny,$(EVAL_CKPT)),model=tiny name=tiny,model=$(MODEL_CFG) model.path=$(abspath $(EVAL_CKPT)) name=$(notdir $(abspath $(EVAL_CKPT))))
EVAL = $(PYTHON) -m museg_lit.eval $(EVAL_MODEL) $(if $(VIDEO_ROOT),data.video_root=$(abspath $(VIDEO_ROOT)))
.PHONY: eval-charades eval-thumos14 eval-thumos15 eval-perception-test eval-etbench eval-etbench-subset

eval-charades: ## Charades-STA m_iou (MUSEG-7B 59.7); MODEL=DIR|tiny VIDEO_ROOT=DIR
	$(EVAL) data=charades_sta task=tvg $(EVAL_ARGS)

eval-thumos14: ## THUMOS14 mean_f1_multi (MUSEG-7B 29.7); MODEL=DIR|tiny VIDEO_ROOT=DIR
	$(EVAL) data=thumos14 task=tal $(EVAL_ARGS)

eval-thumos15: ## THUMOS15 mean_f1_multi (MUSEG-7B 29.3); MODEL=DIR|tiny VIDEO_ROOT=DIR
	$(EVAL) data=thumos15 task=tal $(EVAL_ARGS)

eval-perception-test: ## Perception Test mean_f1_multi (MUSEG-7B 31.7); MODEL=DIR|tiny VIDEO_ROOT=DIR
	$(EVAL) data=perception_test task=tal $(EVAL_ARGS)

ETBENCH_SRC ?= data/museg/videos/et_bench
ETBENCH_VIDEOS ?= data/museg/videos/et_bench_processed
etbench-videos: ## re-encode E.T. Bench videos as MUSEG did (ffmpeg -i SRC -map 0:v TGT): ETBENCH_SRC -> ETBENCH_VIDEOS
	$(PYTHON) -m museg_lit.evaluation.etbench_videos $(ETBENCH_SRC) $(ETBENCH_VIDEOS)

# E.T. Bench reads $(ETBENCH_VIDEOS) (make etbench-videos) unless VIDEO_ROOT says otherwise; SENTSIM=DIR: a local
# all-MiniLM-L6-v2 (huggingface-cli download sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR) = sentsim_model=DIR
SENTSIM ?=
EVAL_ETBENCH = $(PYTHON) -m museg_lit.eval $(EVAL_MODEL) data.video_root=$(abspath $(or $(VIDEO_ROOT),$(ETBENCH_VIDEOS))) $(if $(SENTSIM),sentsim_model=$(abspath $(SENTSIM)))
eval-etbench: ## E.T. Bench, all 12 tasks, AVG (MUSEG-7B 36.8); MODEL= SENTSIM=DIR [VIDEO_ROOT=]
	$(EVAL_ETBENCH) data=et_bench $(EVAL_ARGS)

eval-etbench-subset: ## E.T. Bench 470-sample subset (MUSEG's subset.json), AVG (MUSEG-7B 35.9); same arguments
	$(EVAL_ETBENCH) data=et_bench_subset $(EVAL_ARGS)

# ---- the learning proof (issue 12): SFT warm start, MUSEG-reward GRPO, held-out table + picture
.PHONY: learn-demo
learn-demo: ## SFT then GRPO on generated videos (CPU, < 30 min), held-out eval; writes experiments/results/learning.{md,png}
	$(PYTHON) experiments/learning.py $(LEARN_ARGS)

# ---- benchmarks
.PHONY: bench-step
bench-step: ## GRPO step benchmark: shared prefix vs repeated prompts (A/B, medians); writes experiments/results/bench_step.{md,json}
	$(PYTHON) experiments/bench_step.py $(BENCH_ARGS)

.PHONY: bench-checksum
bench-checksum: ## cost of the SHA-256 in each checkpoint record (vs CRC-32, BLAKE2b); writes experiments/results/bench_checksum.md
	$(PYTHON) experiments/bench_checksum.py $(BENCH_ARGS)

.PHONY: bench-decode
bench-decode: ## decode benchmark: load_video vs qwen-vl-utils (decord) vs ffmpeg; writes experiments/results/bench_decode.{md,json}
	$(PYTHON) experiments/bench_decode.py $(BENCH_ARGS)

.PHONY: bench-local-sweep
bench-local-sweep: ## the README's 2-job sweep: one after another vs parallel local processes (threads capped / every core); writes experiments/results/bench_local_sweep.md
	$(PYTHON) experiments/bench_local_sweep.py $(BENCH_ARGS)
