"""Routing latency and throughput of the prompt-encoder paths, measured in one process, and LangChain's overhead.

Paths, on the same fresh prompts (never embedded before), interleaved prompt by prompt so that load
from other processes hits them alike; every path runs the predictor head in numpy:
- static: the static encoder distilled from MiniLM (``StaticEncoder``) and the bundled general
  predictor (the default; no torch in the process),
- onnx: MiniLM exported to ONNX at start (``torch.onnx.export``, measurement only) run by ONNX
  Runtime, with the MiniLM predictor bundled for mmlu_pro,
- torchscript: MiniLM traced and frozen with TorchScript (the previous default), same predictor.
The pool is mmlu_pro's 24 open-weight models. A fresh process's first decision (import, load,
route one prompt) is timed in a subprocess, which also checks that routing loaded no torch.
How each path routes is in the README's per-dataset tables (``routoo evaluate --representations
static,minilm``). Writes benchmarks/results/routing_latency.json.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["ROUTOO_CACHE_DIR"] = tempfile.mkdtemp()

import numpy as np  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402

from langchain_routoo import RoutooChatModel  # noqa: E402
from routoo_shared.datasets import BUNDLED_DIR  # noqa: E402
from routoo_shared.predictors.encoder import EmbeddingCache, PromptEncoder, minilm_dir  # noqa: E402
from routoo_shared.routing.router import Router  # noqa: E402

WORDS = "integral proof enzyme treaty torque market verdict neuron photon tariff lemma habitat".split()
MINILM_PREDICTOR = BUNDLED_DIR / "predictors" / "mmlu_pro"
FIRST_DECISION = (
    "import sys, time; start = time.perf_counter()\n"
    "from routoo_shared.router import Router\n"
    "Router.from_directory(pool_names='open').route('What is the derivative of x^3?')\n"
    "print(time.perf_counter() - start, 'torch' in sys.modules)\n"
)


def prompts(n: int, seed: int) -> list[str]:
    return [f"Question {seed}-{i}: explain the {WORDS[i % 12]} and the {WORDS[(i * 7 + seed) % 12]} in {i % 9 + 2} steps." for i in range(n)]


def p50_ms(call, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


class OnnxMiniLM:
    """MiniLM under ONNX Runtime: the same mean-pooled, normalised vectors as ``PromptEncoder``."""

    kind, dim, max_length = "minilm", 384, 256

    def __init__(self):
        import onnxruntime
        import torch
        from transformers import AutoModel, AutoTokenizer

        from routoo_shared.predictors.encoder import MeanPooled

        self.tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        model = MeanPooled(AutoModel.from_pretrained(minilm_dir())).eval()
        example = self.tokenizer(["an example prompt", "a longer example prompt to pad"], padding=True, return_tensors="pt")
        path = Path(tempfile.mkdtemp()) / "minilm.onnx"
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "vector": {0: "batch"}}
        torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["vector"], dynamic_axes=axes)
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.name = "all-MiniLM-L6-v2-256"

    def encode(self, texts, progress=False, persist=False):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}
        return self.session.run(None, feeds)[0]


def path_routers(pool_names: list[str]) -> dict[str, Router]:
    static = Router.from_directory(pool_names="open")
    minilm = Router.from_directory(MINILM_PREDICTOR, pool_names=pool_names)
    torchscript = PromptEncoder()
    torchscript.cache = EmbeddingCache("benchmark-empty", Path(tempfile.mkdtemp()))  # no shipped vectors
    onnx = Router(minilm.pool, Router.from_directory(MINILM_PREDICTOR).predictor)
    onnx.predictor.encoder = OnnxMiniLM()
    minilm.predictor.encoder = torchscript
    return {"static": static, "onnx": onnx, "torchscript": minilm}


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
    reference = np.array(single["torchscript"])
    return {
        path: {
            "route_p50_ms_batch1": round(statistics.median(single[path]), 3),
            "paired_ratio_to_torchscript_batch1": round(float(np.median(np.array(single[path]) / reference)), 3),
            "route_ms_per_prompt_batch64": round(statistics.median(batch[path]), 3),
        }
        for path in by_path
    }


def first_decision(runs: int = 3) -> dict[str, float | bool]:
    """A fresh process's import + load + first route, seconds (median of ``runs``), and whether torch loaded."""
    times, torch_loaded = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", FIRST_DECISION], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        torch_loaded |= out[1] == "True"
    return {"first_decision_s": round(statistics.median(times), 3), "torch_loaded_to_route": torch_loaded}


def main() -> None:
    fresh = first_decision()
    default = Router.from_directory(pool_names="open")
    by_path = path_routers(default.pool.names)
    for each in by_path.values():
        each.route("warm-up")
    latency = paired_latency(by_path)

    names = default.pool.names
    models = {n: FakeListChatModel(responses=["fine"] * 10_000) for n in names}
    routoo = RoutooChatModel(models=models, router=by_path["static"])
    chosen = default.route(prompts(1, 999)[0]).model
    direct = p50_ms(lambda p: models[chosen].invoke(p), prompts(100, 2))
    routed = p50_ms(routoo.invoke, prompts(100, 3))
    result = {
        "route_p50_ms_batch1": latency["static"]["route_p50_ms_batch1"],
        "route_ms_per_prompt_batch64": latency["static"]["route_ms_per_prompt_batch64"],
        "route_prompts_per_s_batch64": round(1000 / latency["static"]["route_ms_per_prompt_batch64"], 1),
        **fresh,
        "langchain_direct_invoke_p50_ms": round(direct, 2),
        "langchain_routoo_invoke_p50_ms": round(routed, 2),
        "langchain_overhead_p50_ms": round(routed - direct, 2),
        "encoder_paths": latency,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pool_size": len(names),
    }
    print(f"{'encoder path':12s} {'p50 ms b1':>9s} {'ratio':>6s} {'ms/prompt b64':>13s}")
    for path, row in latency.items():
        print(f"{path:12s} {row['route_p50_ms_batch1']:9.3f} {row['paired_ratio_to_torchscript_batch1']:6.3f} "
              f"{row['route_ms_per_prompt_batch64']:13.3f}")
    for key, value in result.items():
        if key != "encoder_paths":
            print(f"{key:34s} {value}")
    out = Path(__file__).parent / "results" / "routing_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
