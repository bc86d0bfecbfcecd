#!/usr/bin/env bash
# The main job: evaluate the shipped predictor (trained on the bundled MMLU-Pro train split) against
# the baselines trained here on the same split, on the held-out test split, for the open-weight pool
# (24 models) and the full pool (29 models); tables on stdout, JSON and plots in results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PREDICTOR=routoo_shared/datasets/predictors/mmlu_pro
echo "== open-weight pool (24 models) =="
routoo evaluate --dataset mmlu_pro --pool open --predictor "$PREDICTOR" \
  --reference Mixtral-8x7B-Instruct-v0.1,Meta-Llama-3_1-70B-Instruct \
  --json results/mmlu_pro_open.json --plot results/mmlu_pro_open.png
echo
echo "== full pool (29 models) =="
routoo evaluate --dataset mmlu_pro --predictor "$PREDICTOR" \
  --reference Meta-Llama-3_1-70B-Instruct,gemini-1.5-pro-002 \
  --json results/mmlu_pro_full.json --plot results/mmlu_pro_full.png
