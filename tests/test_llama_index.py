"""RoutooLLM: real local LLMs and embedding for integration, scripted LLMs for Routoo's own logic."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import FunctionTool

from llama_index_routoo import LocalGGUFLLM, MiniLMEmbedding, RoutooLLM
from routoo_shared.fallback import AllModelsFailedError
from tests.conftest import TRIO, trio_router


class ScriptedLLM(FunctionCallingLLM):
    """A stand-in provider LLM for Routoo's own logic: fixed answer, optional error, one tool call."""

    reply: str = "scripted answer"
    error: str | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=64, is_chat_model=True, is_function_calling_model=True)

    def _answer(self, tools: list | None = None) -> ChatMessage:
        if self.error:
            raise ConnectionError(self.error)
        calls = [{"id": "c1", "name": tools[0].metadata.name, "args": {"a": 1, "b": 2}}] if tools else []
        return ChatMessage(role="assistant", content="" if calls else self.reply, additional_kwargs={"tool_calls": calls})

    @llm_chat_callback()
    def chat(self, messages, **kwargs: Any) -> ChatResponse:
        if messages and messages[-1].role == "tool":  # after a tool ran, report its result
            return ChatResponse(message=ChatMessage(role="assistant", content=f"The result is {messages[-1].content}"))
        return ChatResponse(message=self._answer(kwargs.get("tools")))

    @llm_chat_callback()
    async def achat(self, messages, **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages, **kwargs: Any):
        message = self._answer()

        def gen():
            yield ChatResponse(message=message, delta=message.content)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages, **kwargs: Any):
        message = self._answer()

        async def gen():
            yield ChatResponse(message=message, delta=message.content)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer().content)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.complete(prompt)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError

    def _prepare_chat_with_tools(self, tools, user_msg=None, chat_history=None, **kwargs: Any) -> dict:
        return {"messages": list(chat_history or []), "tools": list(tools)}

    def get_tool_calls_from_response(self, response, error_on_no_tool_call=True, **kwargs) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"]) for c in calls]


def scripted_routoo(**settings) -> RoutooLLM:
    return RoutooLLM(llms={n: ScriptedLLM(reply=f"answer from {n}") for n in TRIO}, router=trio_router(), **settings)


@pytest.fixture(scope="module")
def local_routoo(local_router_fixture) -> RoutooLLM:
    llms = {name: LocalGGUFLLM(model=name, max_tokens=12) for name in local_router_fixture.pool.names}
    return RoutooLLM(llms=llms, router=local_router_fixture)


# ----- real local models
@pytest.mark.slow
def test_complete_chat_and_streams_with_real_local_models(local_routoo):
    completion = local_routoo.complete("The capital of France is")
    assert completion.text.strip() and completion.raw["routoo"]["model"] in local_routoo.llms
    chat = local_routoo.chat([ChatMessage(role="user", content="Say hello.")])
    assert chat.message.content.strip()
    assert chat.additional_kwargs["model_name"] == chat.raw["routoo"]["answered_by"]
    pieces = list(local_routoo.stream_chat([ChatMessage(role="user", content="Count to three.")]))
    assert "routoo" in pieces[0].additional_kwargs and pieces[-1].message.content.strip()
    assert "".join(p.delta or "" for p in local_routoo.stream_complete("Two plus two is")).strip()


@pytest.mark.slow
async def test_async_calls_with_real_local_models(local_routoo):
    chat = await local_routoo.achat([ChatMessage(role="user", content="Name a colour.")])
    assert chat.message.content.strip()
    completion = await local_routoo.acomplete("One, two,")
    assert completion.text.strip()
    stream = await local_routoo.astream_chat([ChatMessage(role="user", content="Name an animal.")])
    pieces = [p async for p in stream]
    assert pieces and "routoo" in pieces[0].additional_kwargs


@pytest.mark.slow
def test_query_engine_over_local_documents(local_routoo):
    Settings.llm, Settings.embed_model = local_routoo, MiniLMEmbedding()
    try:
        documents = [
            Document(text="Routoo routes each prompt to the cheapest model that will answer it well."),
            Document(text="The Eiffel Tower is in Paris and was finished in 1889."),
            Document(text="Photosynthesis turns light, water and carbon dioxide into sugar."),
        ]
        engine = VectorStoreIndex.from_documents(documents).as_query_engine(similarity_top_k=1)
        response = engine.query("When was the Eiffel Tower finished?")
        assert "Eiffel" in response.source_nodes[0].node.get_content()
        assert str(response).strip()
    finally:
        Settings.llm = Settings.embed_model = None


@pytest.mark.slow
def test_fallback_after_a_raising_llm_reaches_a_real_model(local_router_fixture):
    decision = local_router_fixture.route("What is the capital of France?")
    llms = {name: LocalGGUFLLM(model=name, max_tokens=8) for name in local_router_fixture.pool.names}
    llms[decision.model] = ScriptedLLM(error="rate limited (429)")
    response = RoutooLLM(llms=llms, router=local_router_fixture).complete("What is the capital of France?")
    attempts = response.raw["routoo"]["attempts"]
    assert attempts[0]["model"] == decision.model and "rate limited" in attempts[0]["error"]
    assert response.additional_kwargs["model_name"] != decision.model and response.text


# ----- Routoo's own logic
def test_metadata_is_pool_wide_and_conservative():
    routoo = scripted_routoo()
    assert routoo.metadata.context_window == min(s.context_window for s in routoo.router.pool.models)
    assert routoo.metadata.is_function_calling_model
    assert not scripted_routoo(denied_models=[TRIO[-1]]).metadata.is_function_calling_model


def test_tool_calls_go_only_to_tool_capable_llms():
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    routoo = scripted_routoo(quality_cost_tradeoff=50.0)
    assert routoo.complete("hi").additional_kwargs["model_name"] == TRIO[0]
    response = routoo.chat_with_tools([FunctionTool.from_defaults(add)], user_msg="What is 1 + 2?")
    assert response.additional_kwargs["model_name"] == TRIO[-1]
    calls = routoo.get_tool_calls_from_response(response)
    assert calls[0].tool_name == "add" and calls[0].tool_kwargs == {"a": 1, "b": 2}
    assert routoo.predict_and_call([FunctionTool.from_defaults(add)], user_msg="1 + 2?").response == "3"


async def test_function_agent_calls_a_tool_through_routoo():
    from llama_index.core.agent.workflow import FunctionAgent

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = FunctionAgent(tools=[add], llm=scripted_routoo(), streaming=False)
    result = await agent.run("What is 1 + 2?")
    assert "The result is 3" in str(result)


def test_fallback_and_bad_input():
    routoo = scripted_routoo()
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.llms[order[0]].error = "connection reset"
    routoo.llms[order[1]].reply = ""  # an empty answer counts as a failure
    response = routoo.complete("hello")
    assert [a["model"] for a in response.raw["routoo"]["attempts"]] == order
    assert response.text == f"answer from {order[2]}"
    for llm in routoo.llms.values():
        llm.error = "down"
    with pytest.raises(AllModelsFailedError):
        routoo.chat([ChatMessage(role="user", content="hello")])
    with pytest.raises(ValueError, match="empty prompt"):
        scripted_routoo().complete("   ")
    with pytest.raises(ValueError, match="at least one message"):
        scripted_routoo().chat([])
    with pytest.raises(KeyError, match="unknown model"):
        scripted_routoo().complete("hi", model="gpt-17")
