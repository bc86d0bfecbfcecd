#!/usr/bin/env bash
# Sets up and runs the whole test suite (slow tests included: real local LLMs, full data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pytest -q -p no:cacheprovider tests "$@"
