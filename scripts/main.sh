#!/usr/bin/env bash
# The main job: train Routoo and the baselines on the bundled MMLU-Pro train split and print
# the cost/quality table on the held-out test split (open-weight pool), with JSON and a plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
routoo evaluate --dataset mmlu_pro --pool open \
  --reference Mixtral-8x7B-Instruct-v0.1,Meta-Llama-3_1-70B-Instruct \
  --json results/mmlu_pro_open.json --plot results/mmlu_pro_open.png
