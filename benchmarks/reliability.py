"""Reliability under load, faults and bad input, for both integrations.

For RoutooChatModel (LangChain) and RoutooLLM (LlamaIndex), over the bundled predictor's three-model
pool with stand-in provider models that misbehave on purpose, this prints and writes JSON:
- load: 1,000 concurrent async calls on a shared budget whose real usage is ~10x the estimate
  (answered, refused with BudgetExhaustedError, spending against the total, holds left);
- faults: 100 calls (half sync, half async) while the best model fails, hangs, is rate limited,
  breaks mid-stream or streams nothing (answered, how often the faulty model was tried, holds left);
- the event loop: the longest stall of a heartbeat during a gather of 64 calls;
- bad inputs: values that must be refused with a named error where they enter;
- lost: leaked holds and requests that got neither an answer nor a named error.

    python benchmarks/reliability.py [--json benchmarks/results/reliability.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.custom import CustomLLM  # noqa: E402

from langchain_routoo import RoutooChatModel  # noqa: E402
from llama_index_routoo.llm import RoutooLLM  # noqa: E402
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget  # noqa: E402
from routoo_shared.routing.router import Router  # noqa: E402

POOL = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"]
FAULTS = ("fails", "hangs", "rate_limited", "breaks_mid_stream", "streams_nothing")
OUTPUT_TOKENS = 3000  # what every stand-in reports; the routing estimate is ~100-270


class RateLimited(Exception):
    status_code = 429
    retry_after = 30.0


class Behaviour:
    """What a stand-in model does on each call; ``calls`` counts them."""

    def __init__(self, fault: str | None = None):
        self.fault = fault
        self.calls = 0

    def text(self) -> str:
        self.calls += 1
        if self.fault == "fails":
            raise ConnectionError("connection reset by peer")
        if self.fault == "rate_limited":
            raise RateLimited("rate limit reached")
        if self.fault == "hangs":
            time.sleep(3)
        return "" if self.fault == "streams_nothing" else "a routed answer"

    async def atext(self) -> str:
        if self.fault == "hangs":
            self.calls += 1
            await asyncio.sleep(3)
            return "late"
        return self.text()

    def pieces(self) -> list[str]:
        text = self.text()
        if self.fault == "breaks_mid_stream":
            return ["a routed", RuntimeError("stream broke")]
        return text.split(" ") if text else []


# ----- stand-in provider models, one class per framework
class LangChainModel(BaseChatModel):
    behaviour: Behaviour

    model_config = {"arbitrary_types_allowed": True}

    @property
    def _llm_type(self) -> str:
        return "bench"

    @staticmethod
    def _message(text: str) -> AIMessage:
        usage = {"input_tokens": 12, "output_tokens": OUTPUT_TOKENS, "total_tokens": 12 + OUTPUT_TOKENS}
        return AIMessage(content=text, usage_metadata=usage)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=self._message(self.behaviour.text()))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=self._message(await self.behaviour.atext()))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        for piece in self.behaviour.pieces():
            if isinstance(piece, Exception):
                raise piece
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece + " "))


class LlamaIndexLLM(CustomLLM):
    behaviour: Behaviour

    model_config = {"arbitrary_types_allowed": True}

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=256)

    @staticmethod
    def _usage() -> dict:
        return {"prompt_tokens": 12, "completion_tokens": OUTPUT_TOKENS}

    @llm_completion_callback()
    def complete(self, prompt, formatted=False, **kwargs):
        return CompletionResponse(text=self.behaviour.text(), additional_kwargs=self._usage())

    @llm_completion_callback()
    async def acomplete(self, prompt, formatted=False, **kwargs):
        return CompletionResponse(text=await self.behaviour.atext(), additional_kwargs=self._usage())

    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        def pieces():
            text = ""
            for piece in self.behaviour.pieces():
                if isinstance(piece, Exception):
                    raise piece
                text += piece + " "
                yield CompletionResponse(text=text, delta=piece + " ")

        return pieces()

    @llm_chat_callback()
    def chat(self, messages, **kwargs):
        text = self.behaviour.text()
        return ChatResponse(message=ChatMessage(role="assistant", content=text), additional_kwargs=self._usage())


class Integration:
    """One framework's routed model over stand-ins: sync, async and streamed calls."""

    def __init__(self, framework: str, router: Router, behaviours: dict[str, Behaviour], **settings):
        self.framework = framework
        if framework == "langchain":
            models = {name: LangChainModel(behaviour=b) for name, b in behaviours.items()}
            self.model = RoutooChatModel(models=models, router=router, **settings)
        else:
            llms = {name: LlamaIndexLLM(behaviour=b) for name, b in behaviours.items()}
            self.model = RoutooLLM(llms=llms, router=router, **settings)

    def call(self, prompt: str) -> str:
        if self.framework == "langchain":
            return self.model.invoke(prompt).text
        return self.model.complete(prompt).text

    async def acall(self, prompt: str) -> str:
        if self.framework == "langchain":
            return (await self.model.ainvoke(prompt)).text
        return (await self.model.acomplete(prompt)).text

    def stream(self, prompt: str) -> str:
        if self.framework == "langchain":
            return "".join(chunk.text for chunk in self.model.stream(prompt))
        return "".join(response.delta or "" for response in self.model.stream_complete(prompt))


def _bucket(results: list) -> dict[str, int]:
    """answered: non-empty text; raised: an exception reached the caller; lost: silently empty (or none)."""
    answered = sum(isinstance(r, str) and bool(r.strip()) for r in results)
    raised = sum(isinstance(r, BaseException) for r in results)
    return {"answered": answered, "raised": raised, "lost": len(results) - answered - raised}


def _outcome(call, prompt: str):
    try:
        return call(prompt)
    except Exception as error:  # noqa: BLE001 - reported as raised
        return error


def load(framework: str, router: Router, calls: int = 1000) -> dict:
    budget = RoutooBudget(total_usd=0.05)
    integration = Integration(framework, router, {name: Behaviour() for name in POOL}, budget=budget)

    async def burst():
        return await asyncio.gather(*(integration.acall(f"question {i}: what is {i} + {i}?") for i in range(calls)),
                                    return_exceptions=True)

    start = time.perf_counter()
    results = asyncio.run(burst())
    one_call = max(router.pool[name].cost(12, OUTPUT_TOKENS) for name in POOL)
    return {
        "concurrent_calls": calls, **_bucket(results),
        "refused_budget": sum(isinstance(r, BudgetExhaustedError) for r in results),
        "budget_usd": budget.total_usd, "spent_usd": budget.spent_usd, "largest_call_usd": one_call,
        "overshoot_usd": max(budget.spent_usd - budget.total_usd, 0.0),
        "overshoot_within_one_call": budget.spent_usd <= budget.total_usd + one_call,
        "held_after_usd": budget.reserved_usd, "seconds": time.perf_counter() - start,
    }


def fault(framework: str, router: Router, kind: str, calls: int = 100) -> dict:
    best = router.route("question 0").model
    behaviours = {name: Behaviour(kind if name == best else None) for name in POOL}
    budget = RoutooBudget(total_usd=10.0)
    integration = Integration(framework, router, behaviours, budget=budget, timeout_s=0.2)
    streamed = kind in ("breaks_mid_stream", "streams_nothing")
    sync = integration.stream if streamed else integration.call
    results = [_outcome(sync, f"question {i}") for i in range(calls // 2)]

    async def rest():
        if streamed:
            return [_outcome(integration.stream, f"question {i}") for i in range(calls // 2, calls)]
        return await asyncio.gather(*(integration.acall(f"question {i}") for i in range(calls // 2, calls)),
                                    return_exceptions=True)

    results += asyncio.run(rest())
    return {"fault": kind, "calls": calls, **_bucket(results), "faulty_model_tried": behaviours[best].calls,
            "held_after_usd": budget.reserved_usd}


def loop_stall(framework: str, router: Router, calls: int = 64) -> dict:
    integration = Integration(framework, router, {name: Behaviour() for name in POOL})

    async def run():
        await integration.acall("warm-up")
        worst, running = 0.0, True

        async def heartbeat():
            nonlocal worst
            while running:
                tick = time.perf_counter()
                await asyncio.sleep(0.001)
                worst = max(worst, time.perf_counter() - tick - 0.001)

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.01)
        await asyncio.gather(*(integration.acall(f"question {i}: explain topic {i}") for i in range(calls)))
        running = False
        await beat
        return worst

    return {"concurrent_calls": calls, "longest_stall_ms": asyncio.run(run()) * 1000}


def bad_inputs(router: Router) -> dict:
    from routoo_shared.routing.pool import ModelSpec
    from routoo_shared.routing.selector import Constraints

    def model(**settings):
        return RoutooChatModel(models={n: LangChainModel(behaviour=Behaviour()) for n in POOL}, router=router, **settings)

    tries = {
        "budget total NaN": lambda: RoutooBudget(total_usd=math.nan),
        "budget total -1": lambda: RoutooBudget(total_usd=-1.0),
        "price +inf": lambda: ModelSpec(name="m", price_in_per_mtok=math.inf, price_out_per_mtok=1.0),
        "context window 0": lambda: ModelSpec(name="m", price_in_per_mtok=1.0, price_out_per_mtok=1.0, context_window=0),
        "latency NaN": lambda: ModelSpec(name="m", price_in_per_mtok=1.0, price_out_per_mtok=1.0, ttft_s=math.nan),
        "trade-off NaN": lambda: Constraints(quality_cost_tradeoff=math.nan),
        "min quality 2": lambda: Constraints(min_quality=2.0),
        "timeout -1": lambda: model(timeout_s=-1.0),
        "per-call timeout NaN": lambda: model().invoke("hi", timeout_s=math.nan),
        "unknown forced model": lambda: model().invoke("hi", model="gpt-17"),
        "empty prompt": lambda: model().invoke("   "),
        "unknown routing setting": lambda: router.route("hi", cheapest=True),
    }
    refused = {}
    for name, attempt in tries.items():
        try:
            attempt()
            refused[name] = "ACCEPTED"
        except (ValueError, TypeError, KeyError) as error:
            refused[name] = type(error).__name__
    return {"tried": len(tries), "refused": sum(v != "ACCEPTED" for v in refused.values()), "errors": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "reliability.json")
    parser.add_argument("--frameworks", default="langchain,llama_index", help="comma-separated")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    router = Router.from_directory(pool_names=POOL)
    router.route("warm-up")
    report: dict = {"bad_inputs": bad_inputs(router)}
    for framework in frameworks:
        report[framework] = {
            "load": load(framework, router),
            "faults": [fault(framework, router, kind) for kind in FAULTS],
            "event_loop": loop_stall(framework, router),
        }
    report["lost"] = {
        "leaked_hold_usd": sum(r["load"]["held_after_usd"] + sum(f["held_after_usd"] for f in r["faults"])
                               for r in (report[f] for f in frameworks)),
        "unanswered_requests": sum(r["load"]["lost"] + sum(f["lost"] for f in r["faults"])
                                   for r in (report[f] for f in frameworks)),
    }
    for framework in frameworks:
        section = report[framework]
        load_row = section["load"]
        print(f"\n{framework}: {load_row['concurrent_calls']} concurrent calls on a {load_row['budget_usd']:.4f} USD budget "
              f"(real usage ~10x the estimate): answered {load_row['answered']}, refused {load_row['refused_budget']}, "
              f"lost {load_row['lost']}; spent {load_row['spent_usd']:.6f} USD, overshoot {load_row['overshoot_usd']:.6f} "
              f"(one call <= {load_row['largest_call_usd']:.6f}), holds left {load_row['held_after_usd']:.2g}, "
              f"{load_row['seconds']:.1f} s")
        print(f"  {'fault of the best model':24s} {'answered':>8s} {'raised':>6s} {'lost':>5s} {'faulty tried':>12s} {'held':>6s}")
        for row in section["faults"]:
            print(f"  {row['fault']:24s} {row['answered']:8d} {row['raised']:6d} {row['lost']:5d} "
                  f"{row['faulty_model_tried']:12d} {row['held_after_usd']:6.2g}")
        print(f"  event loop: longest stall {section['event_loop']['longest_stall_ms']:.1f} ms during a gather of "
              f"{section['event_loop']['concurrent_calls']} calls")
    bad = report["bad_inputs"]
    print(f"\nbad inputs refused with a named error: {bad['refused']}/{bad['tried']}")
    print(f"lost: leaked holds {report['lost']['leaked_hold_usd']:.2g} USD, unanswered requests "
          f"{report['lost']['unanswered_requests']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
