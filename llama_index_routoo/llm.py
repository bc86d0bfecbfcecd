"""RoutooLLM: a LlamaIndex LLM that routes every call to one LLM of a pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from pydantic import ConfigDict, model_validator

from routoo_shared.budget import Reservation
from routoo_shared.fallback import EmptyResponseError, FallbackAttempts
from routoo_shared.routed_calls import RoutedCalls
from routoo_shared.router import RoutingDecision

TOOLS_KEY = "routoo_tools"  # tools travel neutral until the chosen LLM formats them


class RoutooLLM(FunctionCallingLLM, RoutedCalls):
    """Routes each call to the pool LLM with the best predicted quality under the cost settings.

    ``llms`` maps pool names to any LlamaIndex LLMs; ``router`` holds their specs and the predictor.
    Settings are the same as ``RoutooChatModel``'s and can be passed per call as keyword arguments.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llms: dict[str, LLM]

    @model_validator(mode="after")
    def _pool_matches_llms(self) -> "RoutooLLM":
        self.check_pool(set(self.llms))
        return self

    @classmethod
    def class_name(cls) -> str:
        return "RoutooLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Pool-wide conservative values: what every eligible model can take."""
        specs = [self.router.pool[name] for name in self._eligible_names()]
        return LLMMetadata(
            context_window=min(spec.context_window for spec in specs),
            num_output=min(self.llms[spec.name].metadata.num_output for spec in specs),
            is_chat_model=True,
            is_function_calling_model=any(spec.supports_tools for spec in specs),
            model_name="routoo",
        )

    def _eligible_names(self) -> list[str]:
        names = self.allowed_models or self.router.pool.names
        return [n for n in names if n not in (self.denied_models or [])]

    # ----- one routed call, any kind
    def _plan(self, payload: Any, kwargs: dict[str, Any]) -> tuple[RoutingDecision, dict[str, Any]]:
        return self.route_call(payload, kwargs, requires_tools=bool(kwargs.get(TOOLS_KEY)))

    def _request(self, name: str, kind: str, payload: Any, call: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The chosen LLM's method and kwargs; tools are formatted by that LLM, after routing."""
        llm, call = self.llms[name], dict(call)
        tools = call.pop(TOOLS_KEY, None)
        options = call.pop("tool_options", {})
        if tools:
            prepared = llm._prepare_chat_with_tools(tools, chat_history=list(payload), **options)
            return getattr(llm, kind), {**call, **prepared}
        argument = "messages" if "chat" in kind else "prompt"
        return getattr(llm, kind), {argument: payload, **call}

    def _finish(self, response: Any, decision: RoutingDecision, attempts: FallbackAttempts) -> Any:
        record = self.decision_record(decision, attempts)
        response.additional_kwargs = {**(response.additional_kwargs or {}), "routoo": record, "model_name": attempts.answered_by}
        if response.raw is None or isinstance(response.raw, dict):
            response.raw = {**(response.raw or {}), "routoo": record}
        return response

    def _settle_response(self, reservation: Reservation | None, name: str, response: Any) -> None:
        usage = (response.additional_kwargs or {}) if response is not None else {}
        self.settle(reservation, name, usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def _call(self, kind: str, payload: Any, kwargs: dict[str, Any]) -> Any:
        decision, call = self._plan(payload, kwargs)

        def invoke(name: str) -> Any:
            method, arguments = self._request(name, kind, payload, call)
            return _checked(method(**arguments))

        response, attempts, reservation = self.call_with_fallback(decision, invoke)
        self._settle_response(reservation, attempts.answered_by, response)
        return self._finish(response, decision, attempts)

    async def _acall(self, kind: str, payload: Any, kwargs: dict[str, Any]) -> Any:
        decision, call = self._plan(payload, kwargs)

        async def invoke(name: str) -> Any:
            method, arguments = self._request(name, "a" + kind, payload, call)
            return _checked(await method(**arguments))

        response, attempts, reservation = await self.acall_with_fallback(decision, invoke)
        self._settle_response(reservation, attempts.answered_by, response)
        return self._finish(response, decision, attempts)

    def _stream(self, kind: str, payload: Any, kwargs: dict[str, Any]) -> Iterator[Any]:
        decision, call = self._plan(payload, kwargs)

        def open_stream(name: str) -> tuple[Any, Iterator[Any]]:
            # a model may fail before its first chunk: then the next one streams instead
            method, arguments = self._request(name, "stream_" + kind, payload, call)
            stream = iter(method(**arguments))
            return next(stream), stream

        (first, stream), attempts, reservation = self.call_with_fallback(decision, open_stream)
        return self._annotated_stream(first, stream, decision, attempts, reservation)

    def _annotated_stream(self, first, stream, decision, attempts, reservation) -> Iterator[Any]:
        last = self._finish(first, decision, attempts)
        try:
            yield last
            for last in stream:
                yield last
        finally:
            self._settle_response(reservation, attempts.answered_by, last)

    async def _astream(self, kind: str, payload: Any, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        decision, call = self._plan(payload, kwargs)

        async def open_stream(name: str) -> tuple[Any, AsyncIterator[Any]]:
            method, arguments = self._request(name, "astream_" + kind, payload, call)
            stream = await method(**arguments)
            return await anext(stream), stream

        (first, stream), attempts, reservation = await self.acall_with_fallback(decision, open_stream)
        return self._aannotated_stream(first, stream, decision, attempts, reservation)

    async def _aannotated_stream(self, first, stream, decision, attempts, reservation) -> AsyncIterator[Any]:
        last = self._finish(first, decision, attempts)
        try:
            yield last
            async for last in stream:
                yield last
        finally:
            self._settle_response(reservation, attempts.answered_by, last)

    # ----- the LLM interface
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._call("chat", messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._acall("chat", messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream("chat", messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return await self._astream("chat", messages, kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._call("complete", prompt, {**kwargs, "formatted": formatted})

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self._acall("complete", prompt, {**kwargs, "formatted": formatted})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream("complete", prompt, {**kwargs, "formatted": formatted})

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self._astream("complete", prompt, {**kwargs, "formatted": formatted})

    # ----- tools: routed to tool-capable LLMs, formatted and parsed by the one that answers
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
        options = {"allow_parallel_tool_calls": allow_parallel_tool_calls, "tool_required": tool_required, "verbose": verbose}
        return {"messages": messages, TOOLS_KEY: list(tools), "tool_options": options, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        answered_by = (response.additional_kwargs or {}).get("model_name")
        if answered_by not in self.llms:
            raise ValueError("this response was not produced by RoutooLLM (no routoo record)")
        llm = self.llms[answered_by]
        return llm.get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)


def _checked(response: Any) -> Any:
    """Refuse an answer with neither text nor tool calls, so the next LLM is tried."""
    message = getattr(response, "message", None)
    text = response.text if message is None else message.content
    tool_calls = message is not None and (message.additional_kwargs.get("tool_calls") or any(
        getattr(block, "block_type", None) == "tool_call" for block in message.blocks
    ))
    if not text and not tool_calls:
        raise EmptyResponseError("the LLM returned an empty response")
    return response
