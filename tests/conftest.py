"""Shared fixtures: the bundled predictor's router, the local-LLM router, and a tool-capable fake."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from routoo_shared.local_llm import local_router
from routoo_shared.router import Router

# Three bundled-predictor models: cheap, mid, strong. Only the strong one is marked tool-capable.
TRIO = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"]


@lru_cache(maxsize=1)
def cached_local_router() -> Router:
    return local_router()


@lru_cache(maxsize=1)
def _bundled_trio() -> Router:
    return Router.from_directory(pool_names=TRIO)


def trio_router(**settings) -> Router:
    bundled = _bundled_trio()
    pool = bundled.pool.model_copy(deep=True)
    for spec in pool.models:
        spec.supports_tools = spec.supports_structured_output = spec.name == TRIO[-1]
    return Router(pool, bundled.predictor, bundled.constraints.merged(**settings))


class ScriptedChatModel(BaseChatModel):
    """A stand-in provider model for tests of Routoo's own logic (fallback, tools, budget).

    It answers with a fixed text, calls the first bound tool when tools are bound, raises
    ``error`` when set, and reports usage like a real provider.
    """

    name: str = "scripted"
    reply: str = "scripted answer"
    error: str | None = None
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        self.calls += 1
        if self.error:
            raise ConnectionError(self.error)
        tools = kwargs.get("tools")
        tool_calls = (
            [{"name": tools[0]["function"]["name"], "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}]
            if tools
            else []
        )
        message = AIMessage(
            content="" if tool_calls else self.reply,
            tool_calls=tool_calls,
            usage_metadata={"input_tokens": 10, "output_tokens": 20, "total_tokens": 30},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture(scope="session")
def local_router_fixture() -> Router:
    return cached_local_router()
