"""Routing latency of the LM-reader path against the MiniLM path, in the same process.

Prompts are real MMLU-Pro test questions made fresh by a numbered prefix (never read before,
empty caches), so every number includes the encoder pass: SmolLM2-135M-Instruct over at most
128 tokens for the reader path, MiniLM over at most 256 for the fast path. Both routers use the
open pool of 24 models. Writes benchmarks/results/reader_latency.json.

Each path uses the shipped predictor when it reads with that encoder, else a head trained for a
few epochs on the bundled vectors (its quality does not matter for timing; the head itself costs
well under a millisecond).
"""

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ["ROUTOO_CACHE_DIR"] = tempfile.mkdtemp()

import torch  # noqa: E402

from routoo_shared.data.formats import bundled, load_questions, split_of  # noqa: E402
from routoo_shared.evaluation.harness import make_encoder, representation_of, train_head, with_expected_output  # noqa: E402
from routoo_shared.predictors.predictor import TrainConfig  # noqa: E402
from routoo_shared.routing.router import Router  # noqa: E402


def fresh_prompts(n: int, offset: int) -> list[str]:
    test = load_questions(bundled("mmlu_pro"), split="test")
    return [f"Q{offset + i}. {q.prompt}" for i, q in enumerate(test[offset : offset + n])]


def timings(router: Router, single: list[str], batches: list[list[str]]) -> dict[str, float]:
    router.route("warm-up: load the encoder once")
    times = []
    for prompt in single:
        start = time.perf_counter()
        router.route(prompt)
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for batch in batches:
        router.route_batch(batch)
    per_prompt = (time.perf_counter() - start) * 1000 / sum(len(b) for b in batches)
    return {"p50_ms_batch1": round(statistics.median(times), 1), "ms_per_prompt_batch64": round(per_prompt, 1)}


def router_for(representation: str) -> Router:
    """The bundled router when it reads with ``representation``, else one with a quickly trained head."""
    bundled_router = Router.from_directory(pool_names="open")
    if representation_of(bundled_router.predictor.encoder) == representation:
        return bundled_router
    questions = load_questions(bundled("mmlu_pro"))
    train = [q for q in questions if split_of(q.id) == "train"][:1000]  # read by the LM: vectors bundled
    dev = [q for q in questions if split_of(q.id) == "dev"][:300]
    pool = with_expected_output(bundled_router.pool, train)
    config = TrainConfig(ensemble=1, epochs=3, temperature_by="log_loss")
    return Router(bundled_router.pool, train_head(pool, train, dev, config, make_encoder(representation)))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("ROUTOO_BENCH_THREADS", "2")))
    minilm, reader = router_for("minilm"), router_for("lm-reader")
    single, batches = fresh_prompts(30, 0), [fresh_prompts(64, 100 + 64 * k) for k in range(2)]
    result = {"threads": torch.get_num_threads(), "pool_size": len(minilm.pool)}
    for name, router in (("minilm", minilm), ("lm_reader", reader)):
        for key, value in timings(router, [f"{name} {p}" for p in single], [[f"{name} {p}" for p in b] for b in batches]).items():
            result[f"{name}_{key}"] = value
    result["reader_over_minilm_batch1"] = round(result["lm_reader_p50_ms_batch1"] / result["minilm_p50_ms_batch1"], 1)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for key, value in result.items():
        print(f"{key:34s} {value}")
    out = Path(__file__).parent / "results" / "reader_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
