"""Routing latency and throughput, the encoder paths against each other, and LangChain's overhead per call.

Prompts are fresh (never embedded before, empty embedding cache), so every number includes the
MiniLM encoder pass. Encoder paths, measured in this one process on the same prompts, interleaved
prompt by prompt so that load from other processes hits them alike:
- eager: eager PyTorch float32 (the path before TorchScript was the default),
- torchscript: the traced, frozen float32 model (the default),
- int8: eager with ``torch.ao.quantization.quantize_dynamic`` on the Linear layers (measured, not used).
Agreement with eager on the dev split's prompts (vectors recomputed, not read from the shipped
cache): cosine of the vectors, share of prompts routed to the same model, and dev AIQ.
Writes benchmarks/results/routing_latency.json.
"""

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["ROUTOO_CACHE_DIR"] = tempfile.mkdtemp()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402

from langchain_routoo import RoutooChatModel  # noqa: E402
from routoo_shared.data.formats import bundled, load_questions  # noqa: E402
from routoo_shared.predictors.encoder import EmbeddingCache, PromptEncoder  # noqa: E402
from routoo_shared.evaluation.harness import Evaluation, Point, aiq  # noqa: E402
from routoo_shared.routing.router import Router  # noqa: E402
from routoo_shared.routing.tokens import count_tokens_batch  # noqa: E402

WORDS = "integral proof enzyme treaty torque market verdict neuron photon tariff lemma habitat".split()
PATHS = ("eager", "torchscript", "int8")


def prompts(n: int, seed: int) -> list[str]:
    return [f"Question {seed}-{i}: explain the {WORDS[i % 12]} and the {WORDS[(i * 7 + seed) % 12]} in {i % 9 + 2} steps." for i in range(n)]


def p50_ms(call, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def encoder(path: str) -> PromptEncoder:
    """An encoder of the given path with an empty cache (the shipped dataset vectors are not read)."""
    made = PromptEncoder(torchscript=path == "torchscript")
    made.cache = EmbeddingCache("benchmark-empty", Path(tempfile.mkdtemp()))
    made._load()
    if path == "int8":
        made._model = torch.ao.quantization.quantize_dynamic(made._model, {torch.nn.Linear}, dtype=torch.qint8)
    return made


def routers(base: Router) -> dict[str, Router]:
    out = {}
    for path in PATHS:
        predictor = Router.from_directory().predictor
        predictor.encoder = encoder(path)
        out[path] = Router(base.pool, predictor)
    return out


def paired_latency(by_path: dict[str, Router]) -> dict[str, dict[str, float]]:
    """Per path: p50 ms at batch 1 and ms per prompt at batch 64, interleaved with the other paths."""
    single = {path: [] for path in by_path}
    for prompt in prompts(200, 1):
        for path, router in by_path.items():
            start = time.perf_counter()
            router.route(f"{prompt} ({path})")  # a text no path has seen
            single[path].append((time.perf_counter() - start) * 1000)
    batch = {path: [] for path in by_path}
    for k in range(6):
        for path, router in by_path.items():
            texts = [f"{p} ({path})" for p in prompts(64, 100 + k)]
            start = time.perf_counter()
            router.route_batch(texts)
            batch[path].append((time.perf_counter() - start) * 1000 / 64)
    eager = np.array(single["eager"])
    return {
        path: {
            "route_p50_ms_batch1": round(statistics.median(single[path]), 2),
            "paired_ratio_to_eager_batch1": round(float(np.median(np.array(single[path]) / eager)), 3),
            "route_ms_per_prompt_batch64": round(statistics.median(batch[path]), 2),
        }
        for path in by_path
    }


def agreement(by_path: dict[str, Router], n_dev: int) -> dict[str, dict[str, float]]:
    """Each path against eager on dev prompts: vector cosine, same routed model, dev AIQ."""
    train = load_questions(bundled("mmlu_pro"), split="train")
    dev = load_questions(bundled("mmlu_pro"), split="dev")[:n_dev]
    pool = by_path["eager"].pool
    evaluation = Evaluation(pool, train, dev, dev, predictor=by_path["eager"].predictor)
    texts = [q.prompt for q in evaluation.test]
    tokens = np.array(count_tokens_batch(texts))
    singles = evaluation.real_cost.mean(0)
    cheapest = int(evaluation.expected_cost.mean(0).argmin())
    start = Point(cost_per_query=float(singles[cheapest]), accuracy=float(evaluation.correct[:, cheapest].mean()))
    vectors, quality, out = {}, {}, {}
    for path, router in by_path.items():
        vectors[path] = router.predictor.encoder.encode(texts)
        quality[path] = router.predictor.predict(texts, pool.names)
    for path in by_path:
        curve = [p for p, _ in evaluation.budget_curve(quality[path])]
        routed = {}
        for tradeoff in (0.0, 0.3):
            constraints = by_path[path].constraints.merged(quality_cost_tradeoff=tradeoff)
            chosen = {p: by_path[p].selector.select(quality[p], tokens, constraints).chosen for p in (path, "eager")}
            routed[tradeoff] = float(np.mean(chosen[path] == chosen["eager"]))
        out[path] = {
            "min_cosine_to_eager": round(float((vectors[path] * vectors["eager"]).sum(1).min()), 6),
            "same_model_as_eager_tradeoff_0": round(routed[0.0], 4),
            "same_model_as_eager_tradeoff_0.3": round(routed[0.3], 4),
            "dev_aiq": round(aiq(curve + [start], float(singles.min()), float(singles.max())), 4),
        }
    return out


def main() -> None:
    n_dev = int(sys.argv[1]) if len(sys.argv) > 1 else 1072
    router = Router.from_directory(pool_names="open")
    by_path = routers(router)
    for each in by_path.values():
        each.route("warm-up")
    latency = paired_latency(by_path)
    agree = agreement(by_path, n_dev)

    names = router.pool.names
    models = {n: FakeListChatModel(responses=["fine"] * 10_000) for n in names}
    routoo = RoutooChatModel(models=models, router=by_path["torchscript"])
    chosen = router.route(prompts(1, 999)[0]).model
    direct = p50_ms(lambda p: models[chosen].invoke(p), prompts(100, 2))
    routed = p50_ms(routoo.invoke, prompts(100, 3))
    default = latency["torchscript"]
    result = {
        "route_p50_ms_batch1": default["route_p50_ms_batch1"],
        "route_ms_per_prompt_batch64": default["route_ms_per_prompt_batch64"],
        "route_prompts_per_s_batch64": round(1000 / default["route_ms_per_prompt_batch64"], 1),
        "langchain_direct_invoke_p50_ms": round(direct, 2),
        "langchain_routoo_invoke_p50_ms": round(routed, 2),
        "langchain_overhead_p50_ms": round(routed - direct, 2),
        "encoder_paths": {path: {**latency[path], **agree[path]} for path in PATHS},
        "dev_prompts_for_agreement": n_dev,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pool_size": len(names),
    }
    print(f"{'encoder path':12s} {'p50 ms b1':>9s} {'ratio':>6s} {'ms/prompt b64':>13s} {'min cos':>8s} "
          f"{'same@0':>7s} {'same@0.3':>8s} {'dev AIQ':>8s}")
    for path, row in result["encoder_paths"].items():
        print(f"{path:12s} {row['route_p50_ms_batch1']:9.2f} {row['paired_ratio_to_eager_batch1']:6.3f} "
              f"{row['route_ms_per_prompt_batch64']:13.2f} {row['min_cosine_to_eager']:8.4f} "
              f"{row['same_model_as_eager_tradeoff_0']:7.3f} {row['same_model_as_eager_tradeoff_0.3']:8.3f} {row['dev_aiq']:8.4f}")
    for key, value in result.items():
        if key != "encoder_paths":
            print(f"{key:34s} {value}")
    out = Path(__file__).parent / "results" / "routing_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
