"""The bundled data: datasets, prompt vectors, the shipped predictors (sources in ATTRIBUTION.md)."""

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent
# Every bundled dataset, a folder of this package with questions.jsonl.gz and models.json
# (copied and validated by scripts/bundle_datasets.py).
BUNDLED_DATASETS = ("mmlu_pro", "mmlu_routellm", "reasoning_mix", "task_mix", "routellm_gsm8k", "arena_bench")
