"""Routing latency and throughput, and the LangChain integration's overhead per call.

Prompts are fresh (never embedded before, empty embedding cache), so every number includes
the MiniLM encoder pass. Writes benchmarks/results/routing_latency.json.
"""

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ["ROUTOO_CACHE_DIR"] = tempfile.mkdtemp()

from langchain_core.language_models import FakeListChatModel  # noqa: E402

from langchain_routoo import RoutooChatModel  # noqa: E402
from routoo_shared.router import Router  # noqa: E402

WORDS = "integral proof enzyme treaty torque market verdict neuron photon tariff lemma habitat".split()


def prompts(n: int, seed: int) -> list[str]:
    return [f"Question {seed}-{i}: explain the {WORDS[i % 12]} and the {WORDS[(i * 7 + seed) % 12]} in {i % 9 + 2} steps." for i in range(n)]


def p50_ms(call, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    router = Router.from_directory(pool_names="open")
    router.route("warm-up")  # loads the encoder once
    single = p50_ms(router.route, prompts(100, 1))
    batches = [prompts(64, 100 + k) for k in range(8)]
    start = time.perf_counter()
    for batch in batches:
        router.route_batch(batch)
    per_prompt_64 = (time.perf_counter() - start) * 1000 / (64 * len(batches))

    names = router.pool.names
    models = {n: FakeListChatModel(responses=["fine"] * 10_000) for n in names}
    routoo = RoutooChatModel(models=models, router=router)
    chosen = router.route(prompts(1, 999)[0]).model
    direct = p50_ms(lambda p: models[chosen].invoke(p), prompts(100, 2))
    routed = p50_ms(routoo.invoke, prompts(100, 3))
    result = {
        "route_p50_ms_batch1": round(single, 2),
        "route_ms_per_prompt_batch64": round(per_prompt_64, 2),
        "route_prompts_per_s_batch64": round(1000 / per_prompt_64, 1),
        "langchain_direct_invoke_p50_ms": round(direct, 2),
        "langchain_routoo_invoke_p50_ms": round(routed, 2),
        "langchain_overhead_p50_ms": round(routed - direct, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pool_size": len(names),
    }
    for key, value in result.items():
        print(f"{key:34s} {value}")
    out = Path(__file__).parent / "results" / "routing_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
