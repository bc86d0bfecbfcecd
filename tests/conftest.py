"""Shared fixtures: the bundled predictor's router, the local-LLM router, a tool-capable fake, and real
redis-servers on free loopback ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from routoo_shared.local.llm import local_router
from routoo_shared.routing.router import Router
from tests.redis_server import RedisServer

USAGE = {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
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
    """A stand-in provider model for tests of Routoo's own logic (fallback, tools, budget, callbacks).

    Like a provider's class: it answers with a fixed text (streamed word by word, usage and its own
    model id on the last chunk), calls the first bound tool with ``tool_args`` when tools are bound
    and the last message is not a tool result, raises ``error`` when set, and reports usage.
    """

    name: str = "scripted"
    reply: str = "scripted answer"
    error: str | None = None
    tool_args: dict = {"a": 1, "b": 2}
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"name": self.name}

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _message(self, messages, kwargs) -> AIMessage:
        self.calls += 1
        if self.error:
            raise ConnectionError(self.error)
        tools = kwargs.get("tools")
        tool_calls = []
        if tools and messages[-1].type != "tool":
            tool_calls = [{"name": tools[0]["function"]["name"], "args": dict(self.tool_args), "id": "call_1", "type": "tool_call"}]
        return AIMessage(content="" if tool_calls else self.reply, tool_calls=tool_calls, usage_metadata=USAGE,
                         response_metadata={"model_name": f"{self.name}-served"})

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._message(messages, kwargs))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs: Any):
        message = self._message(messages, kwargs)
        if message.tool_calls:
            call = message.tool_calls[0]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[
                {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": 0}]))
        else:
            for i, word in enumerate(message.content.split(" ")):
                yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=USAGE,
                                                         response_metadata={"model_name": f"{self.name}-served"}))


@pytest.fixture(scope="session")
def local_router_fixture() -> Router:
    return cached_local_router()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session (each test names its own keys)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may pause."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
