"""What a fresh process pays for Routoo: import time against the framework's own, the first routing
decision, and ``routoo route`` cold and warm.

Every figure is a fresh Python process, timed from outside (wall seconds) and run in turns with its
baseline (A B A B ...), so a noisy machine moves both; medians of ``--runs`` pairs. ``routoo route``
"cold" is its first run after the predictor's on-disk caches are removed, "warm" the runs after.
Prints a table and writes ``benchmarks/results/cold_start.json``.

    python benchmarks/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cold_start.json"
PROMPT = "What is the derivative of x^3?"
FIRST_DECISION = (
    "import time; t = time.perf_counter()\n"
    "from routoo_shared.routing.router import Router\n"
    f"Router.from_directory().route({PROMPT!r})\n"
    "print(time.perf_counter() - t)\n"
)


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def paired(a: list[str], b: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Medians of A and of B over ``runs`` alternating fresh processes (one warm-up each first)."""
    wall(a, env), wall(b, env)
    times = [(wall(a, env), wall(b, env)) for _ in range(runs)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    python = [sys.executable, "-c"]
    cache = Path(tempfile.mkdtemp(prefix="routoo-cold-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ROUTOO_CACHE_DIR": str(cache)}
    rows = {}
    imports = (
        ("import langchain_routoo", "import langchain_core.language_models"),
        ("from langchain_routoo import RoutooChatModel", "from langchain_core.language_models import BaseChatModel"),
        ("import llama_index_routoo", "import llama_index.core.llms"),
        ("from llama_index_routoo import RoutooLLM", "from llama_index.core.llms import LLM"),
    )
    for ours, theirs in imports:
        mine, base = paired(python + [ours], python + [theirs], args.runs, env)
        rows[ours] = {"seconds": mine, "baseline": theirs, "baseline_seconds": base, "above_baseline_s": mine - base}
    inside = []
    for _ in range(args.runs):
        shutil.rmtree(cache, ignore_errors=True)
        out = subprocess.run(python + [FIRST_DECISION], check=True, capture_output=True, text=True, env=env).stdout
        inside.append(float(out.strip().splitlines()[-1]))
    rows["first routing decision (in process, cold caches)"] = {"seconds": statistics.median(inside)}
    route = [shutil.which("routoo") or "routoo", "route", PROMPT]
    cold = []
    for _ in range(args.runs):
        shutil.rmtree(cache, ignore_errors=True)
        cold.append(wall(route, env))
    warm = [wall(route, env) for _ in range(args.runs)]
    rows["routoo route, cold"] = {"seconds": statistics.median(cold)}
    rows["routoo route, warm"] = {"seconds": statistics.median(warm)}
    shutil.rmtree(cache, ignore_errors=True)

    print(f"{'':52s} {'median s':>9s} {'baseline s':>11s} {'above':>7s}")
    for name, row in rows.items():
        base = f"{row['baseline_seconds']:11.2f} {row['above_baseline_s']:+7.2f}" if "baseline" in row else ""
        print(f"{name:52s} {row['seconds']:9.2f} {base}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": args.runs, "cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
