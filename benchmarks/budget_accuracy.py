"""What a shared RoutooBudget charges against what the providers bill, for real workloads.

Both integrations run tool-heavy agents, prompt-cached calls, reasoning models and timed-out attempts
through the real provider classes (LangChain ``ChatOpenAI``; LlamaIndex ``OpenAI``, ``Anthropic`` and
``GoogleGenAI``) against the in-process endpoints of ``tests/fake_providers.py``, which bill as those
providers do. Per workload: the provider's bill (genai-prices' price of every usage the endpoints
reported), the budget's total and what it counted, the overshoot in calls (bill over total, in the
priciest call's cost; goal: at most 1), and the prompt-measure error (Routoo's measured prompt against
the billed prompt tokens, OpenAI-style payloads; goal: within 2%). Prints a table and writes
``benchmarks/results/budget_accuracy.json``.

    python benchmarks/budget_accuracy.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402
import httpx  # noqa: E402
import httpx2  # noqa: E402
from genai_prices import extract_usage  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from llama_index.llms.anthropic import Anthropic  # noqa: E402
from llama_index.llms.google_genai import GoogleGenAI  # noqa: E402

from langchain_routoo import RoutooChatModel  # noqa: E402
from llama_index_routoo import RoutooLLM  # noqa: E402
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget  # noqa: E402
from routoo_shared.routing.pool import ModelPool, ModelSpec  # noqa: E402
from routoo_shared.routing.router import Router  # noqa: E402
from tests.exit_paths import join_abandoned_attempts  # noqa: E402
from tests.fake_providers import AnthropicMessages, Gemini, OpenAIChat, chat_openai, llama_openai, png  # noqa: E402

PRIOR = "Meta-Llama-3_1-70B-Instruct"
CALLS = 40


def router(*names: tuple[str, str]) -> Router:
    base = Router.from_directory(pool_names=[PRIOR])
    specs = [ModelSpec(name=name, provider=provider, prior_like=PRIOR, supports_tools=True) for name, provider in names]
    return Router(ModelPool(models=specs), base.predictor)


def tool_schema(i: int) -> dict:
    properties = {f"arg_{j}": {"type": "string", "description": "a filter value for the inventory query"} for j in range(6)}
    return {"type": "function", "function": {"name": f"tool_{i}", "description": "Looks up inventory records. " * 12,
                                             "parameters": {"type": "object", "properties": properties}}}


def openai_price(model: str):
    return lambda usage: float(extract_usage({"model": model, "usage": usage}, provider_id="openai", api_flavor="chat")
                               .calc_price().total_price)


async def burst(call, calls: int = CALLS) -> tuple[int, int]:
    results = await asyncio.gather(*(call(i) for i in range(calls)), return_exceptions=True)
    refused = sum(isinstance(r, BudgetExhaustedError) for r in results)
    errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BudgetExhaustedError)]
    if errors:
        raise errors[0]
    return len(results) - refused, refused


def row(workload: str, integration: str, budget: RoutooBudget, bills: list[float], answered: int, refused: int) -> dict:
    bill = sum(bills)
    largest = max(bills) if bills else 0.0
    return {"workload": workload, "integration": integration, "budget_usd": budget.total_usd, "provider_bill_usd": bill,
            "budget_counted_usd": budget.spent_usd, "counted_over_bill": budget.spent_usd / bill if bill else None,
            "overshoot_calls": max(0.0, bill - budget.total_usd) / largest if largest else 0.0,
            "answered": answered, "refused": refused, "left_held_usd": budget.reserved_usd}


# ----- workloads
def tool_heavy_agents(integration: str) -> dict:
    """40 concurrent calls offering 30 tools (~10k prompt tokens of schemas) on gpt-4o, 0.05 USD."""
    endpoint, budget = OpenAIChat(output_tokens=20, delay_s=0.2, tool_call=True), RoutooBudget(total_usd=0.05)
    pool = router(("gpt-4o", "openai"))
    if integration == "langchain":
        model = RoutooChatModel(models={"gpt-4o": chat_openai("gpt-4o", endpoint)}, router=pool, budget=budget, max_tokens=32)
        agent = model.bind_tools([tool_schema(i) for i in range(30)])
        call = lambda i: agent.ainvoke(f"Find item {i}")  # noqa: E731
    else:
        llm = RoutooLLM(llms={"gpt-4o": llama_openai("gpt-4o", endpoint)}, router=pool, budget=budget)
        tools = [FunctionTool.from_defaults(lambda sku: sku, name=f"tool_{i}", description="Looks up inventory records. " * 12)
                 for i in range(30)]
        call = lambda i: llm.achat_with_tools(tools, user_msg=f"Find item {i}", max_tokens=32)  # noqa: E731
    answered, refused = asyncio.run(burst(call))
    return row("tool-heavy agent (30 tools)", integration, budget, [openai_price("gpt-4o")(u) for u in endpoint.billed],
               answered, refused)


def cached_prompts(integration: str) -> dict:
    """Prompt-cached calls: OpenAI cached tokens (LangChain), Anthropic cache reads and writes (LlamaIndex)."""
    if integration == "langchain":
        endpoint, budget = OpenAIChat(cached_tokens=9000, output_tokens=100, delay_s=0.05), RoutooBudget(total_usd=0.02)
        model = RoutooChatModel(models={"gpt-4o-mini": chat_openai("gpt-4o-mini", endpoint)},
                                router=router(("gpt-4o-mini", "openai")), budget=budget, max_tokens=200)
        contract = "The contract's clause text, cached by the provider. " * 900
        answered, refused = asyncio.run(burst(lambda i: model.ainvoke(f"{contract}\nQuestion {i}: summarise clause 4.")))
        return row("cached prompts (OpenAI cache reads)", integration, budget,
                   [openai_price("gpt-4o-mini")(u) for u in endpoint.billed], answered, refused)
    endpoint, budget = AnthropicMessages(cache_read=50_000, output_tokens=100), RoutooBudget(total_usd=0.10)
    llm = Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", max_retries=0, max_tokens=200)
    llm._client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0, http_client=httpx.Client(transport=endpoint.transport()))
    routoo = RoutooLLM(llms={"claude-sonnet-4-5": llm}, router=router(("claude-sonnet-4-5", "anthropic")), budget=budget)
    answered = refused = 0
    for n in range(CALLS):
        endpoint.cache_write, endpoint.cache_read = (50_000, 0) if n == 0 else (0, 50_000)
        try:
            routoo.chat([ChatMessage(role="system", content="<contract, cached>"), ChatMessage(role="user", content="Clause 4?")])
            answered += 1
        except BudgetExhaustedError:
            refused += 1
    price = lambda u: float(extract_usage({"model": "claude-sonnet-4-5", "usage": u}, provider_id="anthropic")  # noqa: E731
                            .calc_price().total_price)
    return row("cached prompts (Anthropic cache reads/writes)", integration, budget, [price(u) for u in endpoint.billed],
               answered, refused)


def reasoning_models(integration: str) -> dict:
    """Streamed reasoning models: o4-mini's hidden reasoning tokens (LangChain astream), Gemini thinking (LlamaIndex)."""
    if integration == "langchain":
        endpoint, budget = OpenAIChat(output_tokens=2000, reasoning_tokens=1990, delay_s=0.05), RoutooBudget(total_usd=0.05)
        model = RoutooChatModel(models={"o4-mini": chat_openai("o4-mini", endpoint)}, router=router(("o4-mini", "openai")),
                                budget=budget, max_tokens=2000)

        async def stream(i: int):
            return [chunk async for chunk in model.astream(f"Think hard about puzzle {i}.")]

        answered, refused = asyncio.run(burst(stream))
        return row("reasoning model, streamed (o4-mini)", integration, budget,
                   [openai_price("o4-mini")(u) for u in endpoint.billed], answered, refused)
    endpoint, budget = Gemini(thoughts_tokens=2000, output_tokens=50, delay_s=0.05), RoutooBudget(total_usd=0.05)
    llm = GoogleGenAI(model="gemini-2.5-flash", api_key="test-key", max_tokens=4096, context_window=1_000_000, http_options={
        "httpx_async_client": httpx2.AsyncClient(transport=endpoint.async_transport())})
    routoo = RoutooLLM(llms={"gemini-2.5-flash": llm}, router=router(("gemini-2.5-flash", "google")), budget=budget)

    async def stream(i: int):
        return [chunk async for chunk in await routoo.astream_chat([ChatMessage(role="user", content=f"Puzzle {i}?")])]

    answered, refused = asyncio.run(burst(stream))
    price = lambda u: float(extract_usage({"modelVersion": "gemini-2.5-flash", "usageMetadata": u}, provider_id="google")  # noqa: E731
                            .calc_price().total_price)
    return row("reasoning model, streamed (Gemini thinking)", integration, budget, [price(u) for u in endpoint.billed],
               answered, refused)


def timeouts(integration: str) -> dict:
    """Sync calls whose first model passes timeout_s and is billed in full anyway (4,000 output tokens)."""
    slow, fast = OpenAIChat(output_tokens=4000, delay_s=0.6), OpenAIChat(output_tokens=4000)
    pool, budget = router(("gpt-4o", "openai"), ("gpt-4o-mini", "openai")), RoutooBudget(total_usd=0.30)
    first = pool.route("Write an essay on relativity.").model
    endpoints = {first: slow, next(n for n in pool.pool.names if n != first): fast}
    if integration == "langchain":
        model = RoutooChatModel(models={n: chat_openai(n, e) for n, e in endpoints.items()}, router=pool, budget=budget,
                                timeout_s=0.2, max_tokens=4000)
        call = lambda: model.invoke("Write an essay on relativity.")  # noqa: E731
    else:
        model = RoutooLLM(llms={n: llama_openai(n, e) for n, e in endpoints.items()}, router=pool, budget=budget, timeout_s=0.2)
        call = lambda: model.complete("Write an essay on relativity.", max_tokens=4000)  # noqa: E731
    answered = refused = 0
    for _ in range(10):
        try:
            call()
            answered += 1
        except BudgetExhaustedError:
            refused += 1
    join_abandoned_attempts()
    bills = [openai_price(name)(u) for name, e in endpoints.items() for u in e.billed]
    return row("timed-out sync attempts", integration, budget, bills, answered, refused)


# ----- the prompt measure against the billed prompt tokens
def payloads() -> dict[str, list]:
    """Recorded conversation shapes, as LangChain messages (LlamaIndex builds the same from them)."""
    history = [HumanMessage("Find SKU A1 in the eu warehouse."),
               AIMessage("", tool_calls=[{"name": "tool_0", "args": {"arg_0": "A1", "arg_1": "eu"}, "id": "call_1"}]),
               ToolMessage("A1: 3 in stock, aisle 4, shelf 2. " * 20, tool_call_id="call_1"),
               HumanMessage("And SKU B2?")]
    image = HumanMessage(content=[{"type": "text", "text": "What is in this picture?"},
                                  {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png(1024, 768)}"}}])
    return {"single question": [HumanMessage("What is the capital of France?")],
            "multi-turn": [HumanMessage("Hi"), AIMessage("Hello! How can I help?"), HumanMessage("Explain RAG. " * 30)],
            "tool calls and results in history": history,
            "image (1024x768)": [image]}


def prompt_measure(integration: str) -> list[dict]:
    rows = []
    for tools in (0, 30):
        for label, messages in payloads().items():
            endpoint = OpenAIChat(output_tokens=5)
            pool = router(("gpt-4o", "openai"))
            if integration == "langchain":
                model = RoutooChatModel(models={"gpt-4o": chat_openai("gpt-4o", endpoint)}, router=pool)
                bound = model.bind_tools([tool_schema(i) for i in range(tools)]) if tools else model
                measured = bound.invoke(messages).response_metadata["routoo"]["input_tokens"]
            else:
                from llama_index.core.base.llms.types import ImageBlock, TextBlock

                llm = RoutooLLM(llms={"gpt-4o": llama_openai("gpt-4o", endpoint)}, router=pool)
                chat = []
                for message in messages:
                    if isinstance(message.content, list):
                        url = message.content[1]["image_url"]["url"]
                        chat.append(ChatMessage(role="user", blocks=[TextBlock(text=message.content[0]["text"]),
                                                                      ImageBlock(url=url)]))
                    elif isinstance(message, ToolMessage):
                        chat.append(ChatMessage(role="tool", content=message.content,
                                                additional_kwargs={"tool_call_id": message.tool_call_id}))
                    elif isinstance(message, AIMessage) and message.tool_calls:
                        calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
                                 for c in message.tool_calls]
                        chat.append(ChatMessage(role="assistant", content=None, additional_kwargs={"tool_calls": calls}))
                    else:
                        chat.append(ChatMessage(role="user" if isinstance(message, HumanMessage) else "assistant",
                                                content=message.content))
                if tools:
                    functions = [FunctionTool.from_defaults(lambda sku: sku, name=f"tool_{i}",
                                                            description="Looks up inventory records. " * 12) for i in range(tools)]
                    answer = llm.chat_with_tools(functions, chat_history=chat[:-1], user_msg=chat[-1])
                else:
                    answer = llm.chat(chat)
                measured = answer.additional_kwargs["routoo"]["input_tokens"]
            billed = endpoint.billed[-1]["prompt_tokens"]
            rows.append({"integration": integration, "payload": label + (f" + {tools} tools" if tools else ""),
                         "measured": measured, "billed": billed, "error": (measured - billed) / billed})
    return rows


def main() -> None:
    started = time.time()
    workloads = [w(i) for w in (tool_heavy_agents, cached_prompts, reasoning_models, timeouts) for i in ("langchain", "llama_index")]
    measures = [r for i in ("langchain", "llama_index") for r in prompt_measure(i)]
    print("| workload | integration | budget | provider bill | budget counted | counted / bill | overshoot (calls) | answered / refused |")
    print("|---|---|---|---|---|---|---|---|")
    for w in workloads:
        print(f"| {w['workload']} | {w['integration']} | {w['budget_usd']:.2f} | {w['provider_bill_usd']:.4f} | "
              f"{w['budget_counted_usd']:.4f} | {w['counted_over_bill']:.3f} | {w['overshoot_calls']:.2f} | "
              f"{w['answered']} / {w['refused']} |")
    print("\n| payload (gpt-4o, OpenAI's counting rule) | integration | measured | billed | error |")
    print("|---|---|---|---|---|")
    for m in measures:
        print(f"| {m['payload']} | {m['integration']} | {m['measured']:,} | {m['billed']:,} | {m['error']:+.1%} |")
    out = ROOT / "benchmarks" / "results" / "budget_accuracy.json"
    out.write_text(json.dumps({"workloads": workloads, "prompt_measure": measures, "seconds": time.time() - started}, indent=1))
    print(f"\nwrote {out.relative_to(ROOT)} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
