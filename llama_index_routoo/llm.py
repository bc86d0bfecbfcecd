"""RoutooLLM: a LlamaIndex LLM that routes every call to one LLM of a pool.

The engine (``routoo_shared.routing.routed_calls``) routes, holds and settles the budget, times attempts out
and falls back; this module only translates LlamaIndex calls and responses. Two kinds of call:

- message calls (``chat``, ``complete``, their async and stream forms, and tool calls, which LlamaIndex
  sends through ``chat``): the chosen LLM's same method. Every response and every streamed chunk
  carries ``additional_kwargs["model_name"]`` (the pool name of the LLM that answered) and
  ``additional_kwargs["routoo"]`` (the routing record). Tools are formatted by the chosen LLM's own
  ``_prepare_chat_with_tools`` and read by the answering LLM's ``get_tool_calls_from_response``.
- template calls (``predict``, ``stream``, ``structured_predict`` and their async and stream forms,
  so also ``as_structured_llm``): the chosen LLM's same method, so it formats the prompt
  (``completion_to_prompt``, system prompt) and produces structured output its own way. Their usage is
  what that LLM's calls reported to LlamaIndex's instrumentation; their record is in ``RoutedCallEvent``.

Streams are lazy: routing and the budget hold happen on the first iteration, so a stream that is never
iterated costs and holds nothing. Observability: the pool LLM that answers reports each call to
LlamaIndex's callbacks and instrumentation (once, under its own name, with its usage); RoutooLLM adds no
LLM events of its own and shares its callback manager with the pool LLMs. ``RoutedCallEvent`` (one per
answered call) carries the routing record.
"""

from __future__ import annotations

import contextvars
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
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
from llama_index.core.bridge.pydantic import SerializeAsAny
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher, root_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection, default_completion_to_prompt
from llama_index.core.program.function_program import get_function_tool
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.schema import BaseComponent
from llama_index.core.types import PydanticProgramMode
from pydantic import ConfigDict, model_validator

from routoo_shared.routing.conversations import Conversation, reply_digest
from routoo_shared.routing.messages import has_image
from routoo_shared.routing.pool import ModelPool
from routoo_shared.routing.cascade import AnswerEvidence
from routoo_shared.routing.routed_calls import FirstAnswer, RoutedCall, RoutedCalls
from routoo_shared.routing.usage import Usage, lookup, read_usage

TOOLS_KEY = "routoo_tools"  # tools travel as given until the chosen LLM formats them
Result = TypeVar("Result")
dispatcher = get_dispatcher(__name__)

# LLM fields that shape prompts or throttle calls: each pool LLM applies its own, so RoutooLLM takes none.
POOL_LLM_SETTINGS = {
    "system_prompt": None,
    "messages_to_prompt": generic_messages_to_prompt,
    "completion_to_prompt": default_completion_to_prompt,
    "output_parser": None,
    "query_wrapper_prompt": None,
    "pydantic_program_mode": PydanticProgramMode.DEFAULT,
    "rate_limiter": None,
}


class RoutedCallEvent(BaseEvent):
    """One per answered routed call: the record that ``additional_kwargs["routoo"]`` also carries
    (the decision, ``answered_by``, every attempt, the reason)."""

    record: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "RoutedCallEvent"


class RoutooLLM(FunctionCallingLLM, RoutedCalls):
    """Routes each call to the pool LLM with the best predicted quality under the cost settings.

    ``llms`` maps pool names to any LlamaIndex LLMs; ``router`` holds their specs and the predictor.
    Settings are the same as ``RoutooChatModel``'s and can be passed per call as keyword arguments
    (``quality_cost_tradeoff=...``, ``timeout_s=...``, ``model="name"``; in ``llm_kwargs`` for
    structured calls). Prompt formatting (system prompt, ``completion_to_prompt``, output parser) and
    rate limits belong to the pool LLMs: setting them on RoutooLLM raises ``ValueError``. Pickles into a
    working copy (for worker processes) unless it holds a ``budget``, which is one process's.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llms: dict[str, SerializeAsAny[LLM]]

    @model_validator(mode="after")
    def _check_settings(self) -> "RoutooLLM":
        self.check_pool(set(self.llms))
        own = sorted(name for name, default in POOL_LLM_SETTINGS.items() if getattr(self, name) != default)
        if own:
            raise ValueError(f"set {own} on the pool LLMs: each one formats its own prompts and limits its own rate")
        pool = pool_from_metadata(self.router.pool, self.llms)
        if pool is not self.router.pool:
            self.router = self.router.with_pool(pool)
        return self

    def _pool_llm(self, name: str) -> LLM:
        """Pool LLM ``name`` for one call, reporting to this RoutooLLM's callback handlers as well as to
        its own: the LLM itself when it already reports to all of them, else a shallow copy (sharing its
        clients) with both, so the user's object, which other RoutooLLMs may share, is never written to."""
        llm, ours = self.llms[name], self.callback_manager.handlers
        own = llm.callback_manager.handlers
        if all(handler in own for handler in ours):
            return llm
        manager = CallbackManager(handlers=[*ours, *(handler for handler in own if handler not in ours)])
        return llm.model_copy(update={"callback_manager": manager})

    @classmethod
    def class_name(cls) -> str:
        return "RoutooLLM"

    def pool_model(self, name: str) -> LLM:
        return self.llms[name]

    # ----- pickling: a working copy; the original is never touched
    def __getstate__(self) -> dict[str, Any]:
        """LlamaIndex's pickling (``BaseComponent`` drops what does not pickle) applied to a copy, so the
        original keeps every attribute; ``TypeError`` when routing itself would be lost."""
        if self.budget is not None:
            pickle.dumps(self.budget)  # raises TypeError naming why
        copy = self.model_copy(update={"llms": {name: llm.model_copy() for name, llm in self.llms.items()}})
        state = BaseComponent.__getstate__(copy)
        lost = sorted((set(RoutedCalls.model_fields) | {"llms"}) - set(state["__dict__"]))
        if lost:
            raise TypeError(f"RoutooLLM cannot be pickled: {lost} do not pickle")
        return state

    # ----- what LlamaIndex reads to size prompts and pick code paths
    @property
    def metadata(self) -> LLMMetadata:
        """What every eligible pool LLM can take: the smallest context window (of the specs, which
        ``pool_from_metadata`` narrowed to each LLM's own, in the plain tokens PromptHelper counts:
        ``ModelSpec.packable_window``) and the smallest known ``num_output`` (-1 when
        none is known); a chat model when every eligible LLM is one (else LlamaIndex sends prompts
        through ``complete``, which each LLM formats its own way); function calling when an eligible LLM
        supports tools."""
        names = self.eligible_models()
        if not names:
            raise ValueError("no pool LLM is eligible under the router's and RoutooLLM's allowed/denied models")
        specs = [self.router.pool[name] for name in names]
        own = [self.llms[name].metadata for name in names]
        return LLMMetadata(
            context_window=min(spec.packable_window() for spec in specs),
            num_output=min((m.num_output for m in own if m.num_output > 0), default=-1),
            is_chat_model=all(m.is_chat_model for m in own),
            is_function_calling_model=any(s.supports_tools and m.is_function_calling_model for s, m in zip(specs, own)),
            model_name="routoo",
        )

    def _needs(self, payload: Any, **needs: bool) -> dict[str, bool]:
        """Capability flags for a call: the given ones, and vision for images."""
        return {name: True for name, value in {**needs, "requires_vision": has_image(payload)}.items() if value}

    # ----- message calls
    def _message_call(
        self, payload: Any, kwargs: dict[str, Any], streaming: bool
    ) -> tuple[dict[str, Any], dict[str, Any], Callable[[str, str, dict[str, Any]], Any]]:
        """(kwargs for ``route_call``, its other arguments, send(name, method, call kwargs)).

        The other arguments: the output bounds, the tool schemas measured in the prompt, the capability
        flags and the conversation (for sticky routing); ``send`` passes each LLM the keywords its class reads (``provider_call``)."""
        kwargs = dict(kwargs)
        tools = kwargs.pop(TOOLS_KEY, None)
        routing = self._routing(payload, kwargs, [_tool_schema(tool) for tool in tools or ()], streaming,
                                requires_streaming=streaming, requires_tools=tools is not None)
        routing["conversation"] = _conversation(payload)

        def send(name: str, method: str, call: dict[str, Any]) -> Any:
            llm = self._pool_llm(name)
            call, _ = provider_call(llm, call, streaming and "stream" in method)
            if tools is None:
                return getattr(llm, method)(payload, **call)
            prepared = llm._prepare_chat_with_tools_compat(tools, chat_history=list(payload), **call)
            return getattr(llm, method)(**prepared)

        return kwargs, routing, send

    def _routing(self, payload: Any, kwargs: dict[str, Any], tools: list[dict[str, Any]], streaming: bool,
                 **needs: bool) -> dict[str, Any]:
        """``route_call``'s arguments besides the messages and kwargs: the call's ``max_tokens``, what
        each pool LLM's class will really ask for (``provider_call``), the tool schemas, the flags."""
        asked = lambda name: provider_call(self.llms[name], kwargs, streaming)[1]  # noqa: E731
        return {"max_tokens": kwargs.get("max_tokens"), "asked": asked, "tools": tools or None, **self._needs(payload, **needs)}

    def _call(self, method: str, payload: Any, kwargs: dict[str, Any]) -> Any:
        kwargs, routing, send = self._message_call(payload, kwargs, streaming=False)
        call, rest = self.route_call(payload, kwargs, **routing)
        evidence = _evidence_reader(_reported_usage) if not routing.get("requires_tools") else None
        response = self.invoke_routed(
            call, lambda name: _named(send(name, method, rest), name), _reported_usage, _has_content, evidence
        )
        _answered(call, response)
        return _annotated(response, self._record(call))

    async def _acall(self, method: str, payload: Any, kwargs: dict[str, Any]) -> Any:
        kwargs, routing, send = self._message_call(payload, kwargs, streaming=False)
        call, rest = await self.aroute_call(payload, kwargs, **routing)

        async def invoke(name: str) -> Any:
            return _named(await send(name, method, rest), name)

        evidence = _evidence_reader(_reported_usage) if not routing.get("requires_tools") else None
        response = await self.ainvoke_routed(call, invoke, _reported_usage, _has_content, evidence)
        _answered(call, response)
        return _annotated(response, self._record(call))

    def _stream(self, method: str, payload: Any, kwargs: dict[str, Any]) -> Iterator[Any]:
        """Routed on the first iteration; every chunk names the LLM that answered."""
        kwargs, routing, send = self._message_call(payload, kwargs, streaming=True)
        call, rest = self.route_call(payload, kwargs, **routing)
        first = self._first_answer_reader(routing, lambda name: _named(send(name, _whole(method), rest), name))
        record = chunk = None
        for name, chunk in self.stream_routed(
            call, lambda name: send(name, method, rest), _stream_usage, _has_content, first
        ):
            record = record or self._record(call)
            yield _annotated(_named(chunk, name), record)
        _answered(call, chunk)

    async def _astream(self, method: str, payload: Any, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        kwargs, routing, send = self._message_call(payload, kwargs, streaming=True)
        call, rest = await self.aroute_call(payload, kwargs, **routing)

        async def whole(name: str) -> Any:
            return _named(await send(name, _whole(method), rest), name)

        first = self._first_answer_reader(routing, whole)
        record = chunk = None
        async for name, chunk in self.astream_routed(
            call, lambda name: send(name, method, rest), _stream_usage, _has_content, first
        ):
            record = record or self._record(call)
            yield _annotated(_named(chunk, name), record)
        _answered(call, chunk)

    @staticmethod
    def _first_answer_reader(routing: dict[str, Any], invoke: Callable[[str], Any]) -> FirstAnswer | None:
        """How a stream's cascade calls its first LLM whole (text calls only): the answer becomes one chunk."""
        if routing.get("requires_tools"):
            return None
        return FirstAnswer(invoke, _reported_usage, _has_content, _evidence_reader(_reported_usage), _as_whole_chunk)

    def _record(self, call: RoutedCall) -> dict[str, Any]:
        record = call.record()
        dispatcher.event(RoutedCallEvent(record=record))
        return record

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._call("chat", messages, kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._acall("achat", messages, kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream("stream_chat", messages, kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream("astream_chat", messages, kwargs)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._call("complete", prompt, {**kwargs, "formatted": formatted})

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self._acall("acomplete", prompt, {**kwargs, "formatted": formatted})

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream("stream_complete", prompt, {**kwargs, "formatted": formatted})

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return self._astream("astream_complete", prompt, {**kwargs, "formatted": formatted})

    # ----- tools: routed to tool-capable LLMs, formatted, validated and read by the one that answers
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
        """``chat`` kwargs that keep the tools and every option (``tool_choice``, ``strict``, provider
        keywords) for the chosen LLM's own ``_prepare_chat_with_tools``; routing settings are read first."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
        return {
            "messages": messages,
            TOOLS_KEY: list(tools),
            "verbose": verbose,
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            "tool_required": tool_required,
            **kwargs,
        }

    def _answering(self, response: ChatResponse) -> LLM:
        name = (response.additional_kwargs or {}).get("model_name")
        if name not in self.llms:
            raise ValueError("this response was not produced by RoutooLLM (no model_name of its pool)")
        return self.llms[name]

    def _validate_chat_with_tools_response(
        self, response: ChatResponse, tools: Sequence[Any], allow_parallel_tool_calls: bool = False, **kwargs: Any
    ) -> ChatResponse:
        """The answering LLM's own validation (e.g. one tool call unless parallel calls are allowed)."""
        return self._answering(response)._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The answering LLM's own reading of its response or of any of its streamed chunks."""
        return self._answering(response).get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    # ----- template calls: the chosen LLM formats, calls and parses its own way
    def _template_call(self, call: RoutedCall, run: Callable[[LLM], Result]) -> Result:
        def invoke(name: str) -> _Captured:
            with _capturing() as ends:
                return _Captured(run(self._pool_llm(name)), ends)

        captured = self.invoke_routed(call, invoke, _captured_usage, _Captured.has_value)
        self._record(call)
        return captured.value

    async def _atemplate_call(self, call: RoutedCall, run: Callable[[LLM], Awaitable[Result]]) -> Result:
        async def invoke(name: str) -> _Captured:
            with _capturing() as ends:
                return _Captured(await run(self._pool_llm(name)), ends)

        captured = await self.ainvoke_routed(call, invoke, _captured_usage, _Captured.has_value)
        self._record(call)
        return captured.value

    def _template_stream(self, call: RoutedCall, open_stream: Callable[[LLM], Iterator[Result]]) -> Iterator[Result]:
        def opened(name: str) -> Iterator[_Captured]:
            ends: list[BaseEvent] = []
            source = open_stream(self._pool_llm(name))
            try:
                while True:
                    with _capturing(ends):
                        try:
                            item = next(source)
                        except StopIteration:
                            return
                    yield _Captured(item, ends)
            finally:  # abandoned or cut off: the LLM's own stream ends too
                getattr(source, "close", lambda: None)()

        record = None
        for _, captured in self.stream_routed(call, opened, _captured_stream_usage, _Captured.has_value):
            record = record or self._record(call)
            yield captured.value

    async def _atemplate_stream(
        self, call: RoutedCall, open_stream: Callable[[LLM], Awaitable[AsyncIterator[Result]]]
    ) -> AsyncIterator[Result]:
        async def opened(name: str) -> AsyncIterator[_Captured]:
            ends: list[BaseEvent] = []
            with _capturing(ends):
                source = await open_stream(self._pool_llm(name))
            try:
                while True:
                    with _capturing(ends):
                        try:
                            item = await anext(source)
                        except StopAsyncIteration:
                            return
                    yield _Captured(item, ends)
            finally:
                await source.aclose()

        record = None
        async for _, captured in self.astream_routed(call, opened, _captured_stream_usage, _Captured.has_value):
            record = record or self._record(call)
            yield captured.value

    def _template_route(self, prompt: BasePromptTemplate, prompt_args: dict[str, Any], llm_kwargs: dict[str, Any] | None,
                        output_cls: type | None = None, **needs: bool):
        """(the messages the router reads, kwargs for ``route_call``, its other arguments); a structured
        call's output class counts in the prompt as the tool schema function-calling LLMs are sent."""
        messages, kwargs = prompt.format_messages(**prompt_args), dict(llm_kwargs or {})
        tools = [_tool_schema(get_function_tool(output_cls))] if output_cls is not None else []
        return messages, kwargs, self._routing(messages, kwargs, tools, needs.get("requires_streaming", False), **needs)

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """The chosen LLM's ``predict``: its own chat or completion path and prompt formatting."""
        messages, kwargs, routing = self._template_route(prompt, prompt_args, None)
        call, _ = self.route_call(messages, kwargs, **routing)
        return self._template_call(call, lambda llm: llm.predict(prompt, **prompt_args))

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        messages, kwargs, routing = self._template_route(prompt, prompt_args, None)
        call, _ = await self.aroute_call(messages, kwargs, **routing)
        return await self._atemplate_call(call, lambda llm: llm.apredict(prompt, **prompt_args))

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Iterator[str]:
        """The chosen LLM's ``stream`` (text deltas); routed on the first iteration."""
        messages, kwargs, routing = self._template_route(prompt, prompt_args, None, requires_streaming=True)
        call, _ = self.route_call(messages, kwargs, **routing)
        yield from self._template_stream(call, lambda llm: llm.stream(prompt, **prompt_args))

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> AsyncIterator[str]:
        messages, kwargs, routing = self._template_route(prompt, prompt_args, None, requires_streaming=True)

        async def deltas() -> AsyncIterator[str]:
            call, _ = await self.aroute_call(messages, kwargs, **routing)
            async for delta in self._atemplate_stream(call, lambda llm: llm.astream(prompt, **prompt_args)):
                yield delta

        return deltas()

    def structured_predict(
        self, output_cls: type, prompt: BasePromptTemplate, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> Any:
        """Routed among structured-output-capable LLMs (``ModelSpec.supports_structured_output``); the
        chosen LLM's own ``structured_predict`` (JSON schema, function calling or text parsing)."""
        messages, kwargs, routing = self._template_route(prompt, prompt_args, llm_kwargs, output_cls, requires_structured_output=True)
        call, rest = self.route_call(messages, kwargs, **routing)
        return self._template_call(
            call, lambda llm: llm.structured_predict(output_cls, prompt, llm_kwargs=provider_call(llm, rest, False)[0], **prompt_args)
        )

    async def astructured_predict(
        self, output_cls: type, prompt: BasePromptTemplate, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> Any:
        messages, kwargs, routing = self._template_route(prompt, prompt_args, llm_kwargs, output_cls, requires_structured_output=True)
        call, rest = await self.aroute_call(messages, kwargs, **routing)
        return await self._atemplate_call(
            call, lambda llm: llm.astructured_predict(output_cls, prompt, llm_kwargs=provider_call(llm, rest, False)[0], **prompt_args)
        )

    def stream_structured_predict(
        self, output_cls: type, prompt: BasePromptTemplate, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> Iterator[Any]:
        """Partial objects from the chosen LLM's own ``stream_structured_predict``; routed on the first iteration."""
        messages, kwargs, routing = self._template_route(
            prompt, prompt_args, llm_kwargs, output_cls, requires_structured_output=True, requires_streaming=True
        )
        call, rest = self.route_call(messages, kwargs, **routing)
        yield from self._template_stream(
            call, lambda llm: llm.stream_structured_predict(output_cls, prompt, llm_kwargs=provider_call(llm, rest, False)[0], **prompt_args)
        )

    async def astream_structured_predict(
        self, output_cls: type, prompt: BasePromptTemplate, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> AsyncIterator[Any]:
        messages, kwargs, routing = self._template_route(
            prompt, prompt_args, llm_kwargs, output_cls, requires_structured_output=True, requires_streaming=True
        )

        async def partials() -> AsyncIterator[Any]:
            call, rest = await self.aroute_call(messages, kwargs, **routing)
            stream = self._atemplate_stream(
                call,
                lambda llm: llm.astream_structured_predict(output_cls, prompt, llm_kwargs=provider_call(llm, rest, False)[0], **prompt_args),
            )
            async for partial in stream:
                yield partial

        return partials()


def pool_from_metadata(pool: ModelPool, llms: dict[str, LLM]) -> ModelPool:
    """The pool with each spec's context window and expected output length narrowed to its LLM's own (a
    spec may narrow them, never widen them), and tool calling, where the spec leaves it unset, from the
    LLM's metadata; the same pool when nothing changes. The router then never sends a prompt to an LLM
    that cannot take it, and expects no more output than the room LlamaIndex leaves for it. The spec's
    ``max_output_tokens`` stays: ``num_output`` is a prompt-packing reservation, not a limit most LLMs
    enforce, so it cannot bound the budget's worst case."""
    specs = []
    for spec in pool.models:
        own = llms[spec.name].metadata
        update: dict[str, Any] = {}
        if 0 < own.context_window < spec.context_window:
            update["context_window"] = own.context_window
        if 0 < own.num_output < spec.expected_output_tokens:
            update["expected_output_tokens"] = float(own.num_output)
        if "supports_tools" not in spec.model_fields_set and own.is_function_calling_model != spec.supports_tools:
            update["supports_tools"] = own.is_function_calling_model
        specs.append(spec.model_copy(update=update) if update else spec)
    return pool if all(a is b for a, b in zip(specs, pool.models)) else ModelPool(models=specs)


# ----- sticky conversations: LlamaIndex messages carry no routing record, so a conversation is found
# by a digest of its last assistant turn, which the store maps to the model that wrote it
def _reply(message: ChatMessage) -> str:
    ids = [_tool_call_id(call) for call in _message_tool_calls(message)]
    return reply_digest(message.content or "", [i for i in ids if i])


def _conversation(payload: Any) -> Conversation | None:
    """The conversation of a chat call, named by its last assistant turn (None for a prompt)."""
    if isinstance(payload, str):
        return None
    last = next((m for m in reversed(list(payload)) if m.role == MessageRole.ASSISTANT), None)
    return Conversation(last_reply=_reply(last)) if last is not None else Conversation()


def _answered(call: RoutedCall, response: Any) -> None:
    """Keep the answering model for the conversation this answer (a chat response or a stream's last
    chunk, which holds the whole message) continues."""
    message = getattr(response, "message", None)
    if message is not None:
        call.answered_with(_reply(message))


def _tool_call_id(tool_call: Any) -> str | None:
    """A tool call's id, from a ``ToolCallBlock``, an SDK object or a dict."""
    if isinstance(tool_call, dict):
        return tool_call.get("id") or tool_call.get("tool_call_id")
    return getattr(tool_call, "tool_call_id", None) or getattr(tool_call, "id", None)


# ----- responses: who answered, what it used, whether it said anything
def _named(response: Any, name: str) -> Any:
    response.additional_kwargs = {**(response.additional_kwargs or {}), "model_name": name}
    return response


def _annotated(response: Any, record: dict[str, Any]) -> Any:
    response.additional_kwargs["routoo"] = record
    return response


def _tool_calls(response: Any) -> list[Any]:
    message = getattr(response, "message", None)
    return [] if message is None else _message_tool_calls(message)


def _message_tool_calls(message: ChatMessage) -> list[Any]:
    blocks = [b for b in message.blocks if getattr(b, "block_type", None) == "tool_call"]
    return blocks or list(message.additional_kwargs.get("tool_calls") or [])


def _text(response: Any) -> str:
    message = getattr(response, "message", None)
    return (message.content if message is not None else response.text) or ""


def _whole(stream_method: str) -> str:
    """The non-streaming method of a stream method: ``astream_chat`` -> ``achat``, ``stream_complete`` -> ``complete``."""
    return stream_method.replace("stream_", "")


def _as_whole_chunk(response: Any) -> Any:
    """A whole answer as the one chunk of a stream: its text is the chunk's delta."""
    response.delta = _text(response)
    return response


def _evidence_reader(usage_of: Callable[[Any], Usage | None]) -> Callable[[Any], AnswerEvidence]:
    """What a cascade reads off a first answer: its text and the output tokens it used (when reported)."""

    def evidence(response: Any) -> AnswerEvidence:
        usage = usage_of(response)
        return AnswerEvidence.read(_text(response), output_tokens=usage.output_tokens if usage is not None else None)

    return evidence


def _has_content(response: Any) -> bool:
    """Text, a text delta, or a tool call: an answer (or a stream that has started answering)."""
    return bool(_text(response) or getattr(response, "delta", None) or _tool_calls(response))


def _reported_usage(response: Any) -> Usage | None:
    """The whole usage a LlamaIndex LLM's response (or stream chunk) carries, read by ``usage.read_usage``
    from its raw provider response first: ``raw.usage`` (OpenAI chat completions and their last stream
    chunk, Anthropic messages and their ``message_delta`` events, the Responses API),
    ``raw.response.usage`` (the Responses API's completed event), ``raw["usage_metadata"]`` (Gemini); then
    ``additional_kwargs["usage"]`` of the response or its message; then the ``prompt_tokens``/
    ``completion_tokens`` copies some LLMs keep in ``additional_kwargs``. None when nothing reports usage."""
    model = (response.additional_kwargs or {}).get("model_name", "a pool LLM")
    raw = response.raw
    message = getattr(response, "message", None)
    sources = (
        lookup(raw, "usage"), lookup(raw, "response", "usage"), lookup(raw, "usage_metadata"),
        lookup(response.additional_kwargs, "usage"), lookup(getattr(message, "additional_kwargs", None), "usage"),
        response.additional_kwargs,
    )
    for source in sources:
        usage = read_usage(source, model) if source else None
        if usage is not None:
            return usage
    return None


def _stream_usage(chunks: Sequence[Any]) -> Usage | None:
    """A stream's usage: that of the last chunk reporting one (OpenAI, Anthropic and the Responses API
    report it at the end; it covers the whole stream)."""
    for chunk in reversed(chunks):
        reported = _reported_usage(chunk)
        if reported is not None:
            return reported
    return None


def provider_call(llm: LLM, call: dict[str, Any], streaming: bool) -> tuple[dict[str, Any], int | None]:
    """The keyword arguments to send ``llm`` for a call, and the output tokens it will really ask its
    provider for (None: unknown, and then no per-call keyword shrinks the budget's hold).

    The framework's ``max_tokens`` is mapped to each class's own keyword and precedence: OpenAI's own
    ``max_tokens`` and ``additional_kwargs`` win over a per-call one; the Responses API and Anthropic take
    the per-call one first; GoogleGenAI reads only ``generation_config.max_output_tokens``. OpenAI streams
    ask for their usage (``stream_options.include_usage``) unless the caller set ``stream_options``.
    """
    call, kinds = dict(call), {cls.__name__ for cls in type(llm).__mro__}
    extra = getattr(llm, "additional_kwargs", None) or {}
    if "OpenAIResponses" in kinds:
        if "max_tokens" in call:
            call.setdefault("max_output_tokens", call.pop("max_tokens"))
        return call, _first(call.get("max_output_tokens"), extra.get("max_output_tokens"), llm.max_output_tokens)
    if "OpenAI" in kinds:
        if streaming and "stream_options" not in call and "stream_options" not in extra:
            call["stream_options"] = {"include_usage": True}
        sent = _first(extra.get("max_tokens"), llm.max_tokens, call.get("max_tokens"))
        return call, _first(extra.get("max_completion_tokens"), call.get("max_completion_tokens"), sent)
    if "Anthropic" in kinds:
        return call, _first(call.get("max_tokens"), extra.get("max_tokens"), llm.max_tokens)
    if "GoogleGenAI" in kinds:
        config = dict(call.pop("generation_config", None) or {})
        if "max_tokens" in call:
            config.setdefault("max_output_tokens", call.pop("max_tokens"))
        if config:
            call["generation_config"] = config
        own = getattr(llm, "_generation_config", None) or {}
        return call, _first(config.get("max_output_tokens"), own.get("max_output_tokens"))
    return call, None


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _tool_schema(tool: Any) -> dict[str, Any]:
    """A LlamaIndex tool (or a schema dict) as the OpenAI-style schema its prompt tokens are measured on."""
    return tool if isinstance(tool, dict) else tool.metadata.to_openai_tool(skip_length_check=True)


# ----- usage of template calls: what the chosen LLM's own calls reported to instrumentation
_CAPTURE: contextvars.ContextVar[list[BaseEvent] | None] = contextvars.ContextVar("routoo_capture", default=None)


class _EndEvents(BaseEventHandler):
    """Keeps the chat and completion end events of calls made inside ``_capturing``."""

    @classmethod
    def class_name(cls) -> str:
        return "RoutooEndEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        ends = _CAPTURE.get()
        if ends is not None and isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)) and event.response is not None:
            ends.append(event)


root_dispatcher.add_event_handler(_EndEvents())


@contextmanager
def _capturing(ends: list[BaseEvent] | None = None) -> Iterator[list[BaseEvent]]:
    ends = [] if ends is None else ends
    token = _CAPTURE.set(ends)
    try:
        yield ends
    finally:
        _CAPTURE.reset(token)


@dataclass
class _Captured:
    """A template call's result (or one streamed item) and the LLM end events seen while producing it."""

    value: Any
    ends: list[BaseEvent]

    def has_value(self) -> bool:
        return self.value is not None and self.value != ""


def _captured_usage(captured: _Captured) -> Usage | None:
    """Summed over the LLM calls the template call made; None when one of them reported none (the
    engine then keeps the hold: the worst case)."""
    usages = [_reported_usage(event.response) for event in captured.ends]
    if not usages or any(usage is None for usage in usages):
        return None
    return sum(usages[1:], usages[0])


def _captured_stream_usage(items: Sequence[_Captured]) -> Usage | None:
    return _captured_usage(items[-1]) if items else None  # every item of an attempt shares its events
