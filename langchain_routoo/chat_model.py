"""RoutooChatModel: a LangChain chat model that routes every call to one model of a pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import ConfigDict, model_validator

from routoo_shared.budget import Reservation
from routoo_shared.fallback import EmptyResponseError, FallbackAttempts
from routoo_shared.routed_calls import RoutedCalls
from routoo_shared.router import RoutingDecision
from routoo_shared.tokens import token_ids


class RoutooChatModel(BaseChatModel, RoutedCalls):
    """Routes each call to the pool model with the best predicted quality under the cost settings.

    ``models`` maps pool names to any LangChain chat models; ``router`` holds the pool's specs
    (prices, latency, capabilities) and the trained predictor. Every routing setting can be
    overridden per call: ``model.bind(quality_cost_tradeoff=0.2)`` or ``invoke(..., min_quality=0.7)``;
    ``model="name"`` forces one pool model.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    models: dict[str, BaseChatModel]
    max_tokens: int | None = None
    stop: list[str] | None = None

    @model_validator(mode="after")
    def _pool_matches_models(self) -> "RoutooChatModel":
        self.check_pool(set(self.models))
        return self

    # ----- LangChain identity
    @property
    def _llm_type(self) -> str:
        return "routoo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"pool": self.router.pool.names, **self.routing_constraints().model_dump(exclude_defaults=True)}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="routoo", ls_model_type="chat", ls_model_name=kwargs.get("model", "routoo"))
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        if kwargs.get("max_tokens", self.max_tokens) is not None:
            params["ls_max_tokens"] = kwargs.get("max_tokens", self.max_tokens)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """tiktoken ids, offline (LangChain's default needs the network and silently returns [])."""
        return token_ids(text)

    # ----- routing
    def _route(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[RoutingDecision, dict[str, Any]]:
        decision, call = self.route_call(messages, kwargs, requires_tools=bool(kwargs.get("tools")))
        if self.max_tokens is not None:
            call.setdefault("max_tokens", self.max_tokens)
        return decision, call

    def _delegate(self, name: str, call: dict[str, Any]) -> Runnable:
        """The chosen model with the caller's tools bound now, after routing."""
        model: Runnable = self.models[name]
        tools = call.pop("tools", None)
        if tools:
            model = self.models[name].bind_tools(tools, tool_choice=call.pop("tool_choice", None))
        return model.bind(**call) if call else model

    def _settle_message(self, reservation: Reservation | None, name: str, message: BaseMessage | None) -> None:
        usage = getattr(message, "usage_metadata", None) or {}
        self.settle(reservation, name, usage.get("input_tokens"), usage.get("output_tokens"))

    def _metadata(self, decision: RoutingDecision, attempts: FallbackAttempts) -> dict[str, Any]:
        return {"routoo": self.decision_record(decision, attempts), "model_name": attempts.answered_by}

    # ----- generation
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision, call = self._route(messages, kwargs)
        config, stop = _child_config(run_manager), stop or self.stop
        message, attempts, reservation = self.call_with_fallback(
            decision, lambda name: _checked(self._delegate(name, dict(call)).invoke(messages, config, stop=stop))
        )
        self._settle_message(reservation, attempts.answered_by, message)
        return _result(message, self._metadata(decision, attempts))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision, call = self._route(messages, kwargs)
        config, stop = _child_config(run_manager), stop or self.stop

        async def invoke(name: str) -> BaseMessage:
            return _checked(await self._delegate(name, dict(call)).ainvoke(messages, config, stop=stop))

        message, attempts, reservation = await self.acall_with_fallback(decision, invoke)
        self._settle_message(reservation, attempts.answered_by, message)
        return _result(message, self._metadata(decision, attempts))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        decision, call = self._route(messages, kwargs)
        config, stop = _child_config(run_manager), stop or self.stop

        def open_stream(name: str) -> tuple[BaseMessage, Iterator[BaseMessage]]:
            # a model may fail before its first chunk: then the next one streams instead
            stream = self._delegate(name, dict(call)).stream(messages, config, stop=stop)
            return _first_chunk(stream), stream

        (first, stream), attempts, reservation = self.call_with_fallback(decision, open_stream)
        total = None
        try:
            for index, chunk in enumerate(_chain(first, stream)):
                chunk = self._annotated(chunk, index, decision, attempts)
                total = chunk if total is None else total + chunk
                generation = ChatGenerationChunk(message=chunk)
                if run_manager:
                    run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
        finally:  # also when the caller stops early or the stream breaks: pay for what was used
            self._settle_message(reservation, attempts.answered_by, total)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        decision, call = self._route(messages, kwargs)
        config, stop = _child_config(run_manager), stop or self.stop

        async def open_stream(name: str) -> tuple[BaseMessage, AsyncIterator[BaseMessage]]:
            stream = self._delegate(name, dict(call)).astream(messages, config, stop=stop)
            try:
                return await anext(stream), stream
            except StopAsyncIteration as end:
                raise EmptyResponseError("the model's stream ended before any chunk") from end

        (first, stream), attempts, reservation = await self.acall_with_fallback(decision, open_stream)
        total, index, chunk = None, 0, first
        try:
            while chunk is not None:
                chunk = self._annotated(chunk, index, decision, attempts)
                total = chunk if total is None else total + chunk
                generation = ChatGenerationChunk(message=chunk)
                if run_manager:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
                index, chunk = index + 1, await anext(stream, None)
        finally:
            self._settle_message(reservation, attempts.answered_by, total)

    def _annotated(self, chunk: BaseMessage, index: int, decision: RoutingDecision, attempts: FallbackAttempts) -> AIMessageChunk:
        """A message chunk; the first one carries the routing decision."""
        if not isinstance(chunk, AIMessageChunk):
            chunk = AIMessageChunk(content=chunk.content, response_metadata=dict(chunk.response_metadata))
        if index == 0:
            chunk.response_metadata.update(self._metadata(decision, attempts))
        return chunk

    # ----- tools and structured output, bound after routing
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | Any],
        *,
        tool_choice: str | dict | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Keep the tools as given; only tool-capable models are eligible, and the chosen one binds them."""
        if not any(spec.supports_tools for spec in self.router.pool.models):
            raise ValueError("no model in the pool supports tools (ModelSpec.supports_tools)")
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=list(tools), **kwargs)

    def with_structured_output(
        self, schema: dict | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict | Any]:
        """Route among structured-output-capable models, then use the chosen model's own implementation."""
        if not any(spec.supports_structured_output for spec in self.router.pool.models):
            raise ValueError("no model in the pool supports structured output (ModelSpec.supports_structured_output)")

        def decide(value: LanguageModelInput) -> tuple[list[BaseMessage], RoutingDecision]:
            messages = self._convert_input(value).to_messages()
            return messages, self.route_call(messages, {}, requires_structured_output=True)[0]

        def structured(name: str) -> Runnable:
            return self.models[name].with_structured_output(schema, include_raw=include_raw, **kwargs)

        def run(value: LanguageModelInput, config: RunnableConfig) -> Any:
            messages, decision = decide(value)
            return self.call_with_fallback(decision, lambda name: structured(name).invoke(messages, config))[0]

        async def arun(value: LanguageModelInput, config: RunnableConfig) -> Any:
            messages, decision = decide(value)
            return (await self.acall_with_fallback(decision, lambda name: structured(name).ainvoke(messages, config)))[0]

        return RunnableLambda(run, afunc=arun, name="RoutooStructuredOutput")


def _child_config(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> dict[str, Any]:
    """Callbacks for the chosen model's run, nested under the router's run (LLM run managers
    have no ``get_child``; this is what ``ParentRunManager.get_child`` builds)."""
    if run_manager is None:
        return {}
    async_run = isinstance(run_manager, AsyncCallbackManagerForLLMRun)
    manager = (AsyncCallbackManager if async_run else CallbackManager)(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return {"callbacks": manager}


def _checked(message: BaseMessage) -> BaseMessage:
    """Refuse an answer with neither text nor tool calls, so the next model is tried."""
    if not message.content and not getattr(message, "tool_calls", None):
        raise EmptyResponseError("the model returned an empty message")
    return message


def _result(message: BaseMessage, metadata: dict[str, Any]) -> ChatResult:
    message.response_metadata = {**message.response_metadata, **metadata}
    return ChatResult(generations=[ChatGeneration(message=message)])


def _first_chunk(stream: Iterator[BaseMessage]) -> BaseMessage:
    try:
        return next(stream)
    except StopIteration as stop:
        raise EmptyResponseError("the model's stream ended before any chunk") from stop


def _chain(first: BaseMessage, rest: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
    yield first
    yield from rest
