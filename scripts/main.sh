#!/usr/bin/env bash
# The main job: evaluate the shipped general predictor (trained on every bundled dataset's train split)
# against the baselines trained here on each dataset's own train split, on that dataset's held-out test
# split: MMLU-Pro's open-weight pool (24 models) and full pool (29 models), then one table per newer
# dataset; tables on stdout, JSON (and MMLU-Pro plots) in results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PREDICTOR=routoo_shared/datasets/predictors/general
echo "== mmlu_pro, open-weight pool (24 models) =="
routoo evaluate --dataset mmlu_pro --pool open --predictor "$PREDICTOR" \
  --reference Mixtral-8x7B-Instruct-v0.1,Meta-Llama-3_1-70B-Instruct \
  --json results/mmlu_pro_open.json --plot results/mmlu_pro_open.png
echo
echo "== mmlu_pro, full pool (29 models) =="
routoo evaluate --dataset mmlu_pro --predictor "$PREDICTOR" \
  --reference Meta-Llama-3_1-70B-Instruct,gemini-1.5-pro-002 \
  --json results/mmlu_pro_full.json --plot results/mmlu_pro_full.png
for pair in reasoning_mix:claude-3-5-sonnet-20241022 task_mix:llama-3.1-nemotron-51b-instruct \
            routellm_gsm8k:gpt-4-1106-preview mmlu_routellm:gpt-4-1106-preview arena_bench:gpt-4-0314; do
  dataset=${pair%%:*}
  echo
  echo "== $dataset =="
  routoo evaluate --dataset "$dataset" --predictor "$PREDICTOR" --reference "${pair#*:}" --bootstrap 500 \
    --json "results/$dataset.json"
done
