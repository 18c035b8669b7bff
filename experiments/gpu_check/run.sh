#!/usr/bin/env bash
# GPU check of trainer=fsdp (issue 6, item 7): the tiny model and a 3B-sized random-weight
# Qwen2.5-VL, FSDP2 in bf16 (fp32 master weights, fp32 reductions), activation checkpointing on.
# Reports step time and peak GPU memory per rank as JSON in experiments/gpu_check/results/.
#
#   experiments/gpu_check/run.sh            # all visible GPUs
#   experiments/gpu_check/run.sh 2          # 2 GPUs
#   GPU_CHECK_WORK=/scratch/gc experiments/gpu_check/run.sh   # where data and the 15 GB checkpoint go
#
# Nothing is downloaded (HF_HUB_OFFLINE=1); see README.md for what each step measures.
set -euo pipefail
cd "$(dirname "$0")/../.."
NGPU=${1:-$(python -c "import torch; print(torch.cuda.device_count())")}
WORK=${GPU_CHECK_WORK:-gpu_check_work}
RESULTS=experiments/gpu_check/results
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$RESULTS" "$WORK"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$RESULTS/gpus.csv"

# 0. the GPU-marked test: 2-process (or 1) FSDP training of the tiny model over NCCL, bf16
python -m pytest -m gpu tests/integration/test_fsdp.py -q -p no:cacheprovider | tee "$RESULTS/pytest_gpu.txt"

# 1. tiny model: G=8 completions of 256 tokens per prompt, 1 prompt per GPU, 5 steps
torchrun --standalone --nproc_per_node="$NGPU" experiments/gpu_check/check.py train --size tiny --steps 5 \
  --root "$WORK" --report "$RESULTS/tiny_${NGPU}gpu.json" \
  rollout.num_generations=8 rollout.max_new_tokens=256 data.batch_size=1

# 2. Qwen2.5-VL-3B architecture, random weights (3.75 B parameters), built locally once (~15 GB)
python experiments/gpu_check/check.py build --out "$WORK/qwen2_5_vl_3b_random"
# 448x448 frames (256 visual tokens per frame pair), up to 32 frames: ~1.5-3k visual tokens per prompt;
# random weights never emit EOS, so every completion is max_new_tokens long (a worst case)
torchrun --standalone --nproc_per_node="$NGPU" experiments/gpu_check/check.py train --size 3b \
  --ckpt "$WORK/qwen2_5_vl_3b_random" --steps 4 --root "$WORK" --report "$RESULTS/3b_${NGPU}gpu.json" \
  rollout.num_generations=8 rollout.max_new_tokens=512 data.batch_size=1 \
  data.frames.max_frames=32 data.frames.min_pixels=200704 data.frames.max_pixels=200704

echo "reports: $RESULTS/tiny_${NGPU}gpu.json $RESULTS/3b_${NGPU}gpu.json"
