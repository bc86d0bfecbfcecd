"""RoutooChatModel: a LangChain chat model that routes every call to one model of a pool.

One routed call is one RoutooChatModel run to everything that watches it: that run streams the
answer's tokens and carries the routing record. The chosen model runs as its child (tracers show the
chosen model's work under its own name) tagged ``nostream``, so LangGraph's message stream does not
emit the tokens twice. The child run alone reports the provider's token usage, so usage callbacks and
tracers count it once, under the provider's model name; the message the caller receives carries it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.exceptions import OutputParserException
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableLambda, ensure_config
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.context import _configure_hooks
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, model_validator

from routoo_shared.routing.conversations import Conversation
from routoo_shared.routing.messages import has_image
from routoo_shared.routing.pool import ModelPool, ModelSpec, fields_from_profile
from routoo_shared.routing.cascade import AnswerEvidence
from routoo_shared.routing.routed_calls import CALL_SETTINGS, SETTINGS, FirstAnswer, RoutedCall, RoutedCalls
from routoo_shared.routing.usage import Usage, read_usage
from routoo_shared.routing.tokens import token_ids

TAG_NOSTREAM = "nostream"  # langgraph.constants.TAG_NOSTREAM: LangGraph's message stream skips these runs
TOOL_OPTIONS = "tool_options"  # bind_tools' options, replayed on the chosen model's own bind_tools
TOOL_OBJECTS = "tool_objects"  # the tools as given to bind_tools, for the chosen model's own
STRUCTURED = "structured_output"  # a StructuredOutput request, answered by the chosen model's own method
NOT_IDENTITY = {"callbacks", "callback_manager", "cache", "rate_limiter", "verbose", "tags", "metadata",
                "custom_get_token_ids", "profile"}
# The run that a stream() or invoke() of ours opened, for _stream, which LangChain calls without it.
_PARENT_RUN: ContextVar[tuple[UUID, RunnableConfig] | None] = ContextVar("routoo_parent_run", default=None)
_OPEN_ASYNC_STREAMS: dict[UUID, AsyncIterator] = {}  # by our run id: routed streams in flight


class StructuredOutput:
    """A structured-output request bound to a call; its repr (schema and options) keys the LLM cache."""

    def __init__(self, schema: dict | type, options: dict[str, Any]):
        self.schema = schema
        self.options = options

    def __repr__(self) -> str:
        return f"StructuredOutput({json.dumps(convert_to_openai_tool(self.schema), sort_keys=True)}, {self.options!r})"


class BoundTools:
    """The tools as the caller gave them to ``bind_tools``, for the chosen model's own ``bind_tools``
    (which converts them its own way: ChatOpenAI makes them strict beside a ``response_format``). Its
    repr only counts them: the converted schemas bound beside it key the LLM cache."""

    def __init__(self, tools: Sequence[Any]):
        self.tools = list(tools)

    def __repr__(self) -> str:
        return f"BoundTools({len(self.tools)})"


class RoutooChatModel(BaseChatModel, RoutedCalls):
    """Routes each call to the pool model with the best predicted quality under the cost settings.

    ``models`` maps pool names to any LangChain chat models; ``router`` holds the pool's specs
    (prices, latency, capabilities) and the trained predictor. Spec fields the user left unset are
    filled from each chat model's LangChain profile (context window, output limit, tool calling,
    structured output, image input). Every routing setting can be overridden per call:
    ``model.bind(quality_cost_tradeoff=0.2)``, ``invoke(..., min_quality=0.7)``, configurable fields;
    ``model="name"`` forces one pool model; ``timeout_s=...`` bounds each attempt.
    """

    models: dict[str, BaseChatModel]
    max_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None

    @model_validator(mode="after")
    def _pool_matches_models(self) -> "RoutooChatModel":
        self.check_pool(set(self.models))
        pool = profiled_pool(self.router.pool, self.models)
        if pool != self.router.pool:
            self.router = self.router.with_pool(pool)
        if self.profile is None:  # read by v1 middleware (summarization triggers, structured-output strategies)
            names = self.eligible_models()
            self.profile = pool_profile([pool[n] for n in names], [self.models[n] for n in names])
        return self

    def pool_model(self, name: str) -> BaseChatModel:
        return self.models[name]

    # ----- LangChain identity
    @property
    def _llm_type(self) -> str:
        return "routoo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """The pool and the settings, as tracers show them (computed on every call: kept cheap)."""
        settings = self.model_dump(include={*SETTINGS, "max_fallbacks", "sticky", "timeout_s", "max_tokens", "stop"})
        return {"pool": self.router.pool.names, "settings": settings}

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        """The LLM-cache key (LangChain asks for it only when a cache is on): LangChain's own (settings,
        call arguments, tools), plus each pool model's own settings and the router's specs and predictor
        weights, as digests, so a persistent cache never serves one configuration's answer to another."""
        identity = {"pool": {name: _identity(model) for name, model in self.models.items()},
                    "router": self.router.fingerprint()}
        return f"{super()._get_llm_string(stop=stop, **kwargs)}---{json.dumps(identity, sort_keys=True)}"

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

    # ----- the Runnable entry points: our run's id is known before it starts, so the chosen
    # model's run nests under it even in _stream; the caller's message names the model that answered
    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
               **kwargs: Any) -> AIMessage:
        config, parent = _with_run_id(config)
        token = _PARENT_RUN.set(parent)
        try:
            return _for_caller(super().invoke(input, config, stop=stop, **kwargs))
        finally:
            _PARENT_RUN.reset(token)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        config, parent = _with_run_id(config)
        token = _PARENT_RUN.set(parent)
        try:
            return _for_caller(await super().ainvoke(input, config, stop=stop, **kwargs))
        except AttributeError as error:
            raise _cancellation(error) from error
        finally:
            _PARENT_RUN.reset(token)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        config, parent = _with_run_id(config)
        chunks = super().stream(input, config, stop=stop, **kwargs)
        try:
            while True:
                token = _PARENT_RUN.set(parent)
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                finally:
                    _PARENT_RUN.reset(token)
                yield _for_caller(chunk)
        finally:
            chunks.close()

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        config, parent = _with_run_id(config)
        chunks = super().astream(input, config, stop=stop, **kwargs)
        try:
            while True:
                token = _PARENT_RUN.set(parent)
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                finally:
                    _PARENT_RUN.reset(token)
                yield _for_caller(chunk)
        finally:
            await chunks.aclose()
            # LangChain's astream leaves our _astream to the garbage collector when it is closed early;
            # close the routed stream now, so its budget hold settles before this call returns.
            routed = _OPEN_ASYNC_STREAMS.pop(parent[0], None)
            if routed is not None and not routed.ag_running:
                await routed.aclose()

    # ----- routing
    def _requirements(self, messages: list[BaseMessage], kwargs: dict[str, Any], streaming: bool,
                      stop: list[str] | None,
                      run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> dict[str, Any]:
        """``route_call``'s arguments besides the messages: output bounds, the tool schemas the chosen
        model will be sent (a structured-output schema counts as one), capability flags, and what names
        the call's conversation."""
        tools = list(kwargs.get("tools") or [])
        if STRUCTURED in kwargs:
            tools.append(convert_to_openai_tool(kwargs[STRUCTURED].schema))
        return {
            "conversation": _conversation(messages, run_manager, set(self.models)),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "tools": tools or None,
            "asked": partial(self._asked_tokens, kwargs, stop),
            "requires_tools": bool(kwargs.get("tools")),
            "requires_structured_output": STRUCTURED in kwargs or "response_format" in kwargs.get(TOOL_OPTIONS, {}),
            "requires_vision": has_image(messages),
            "prefer_streaming": streaming,
        }

    def _asked_tokens(self, request: dict[str, Any], stop: list[str] | None, name: str) -> int | None:
        """Output tokens pool model ``name`` will really ask its provider for: what its own class reports
        to LangSmith for this request (``ls_max_tokens``: its own keyword and defaults), None when unknown."""
        options = {k: v for k, v in request.items() if k not in ("tools", TOOL_OBJECTS, TOOL_OPTIONS, STRUCTURED)}
        return self.models[name]._get_ls_params(stop=stop, **options).get("ls_max_tokens")

    def _request(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        request = dict(kwargs)
        if self.max_tokens is not None:
            request.setdefault("max_tokens", self.max_tokens)
        return request

    def _runnable(self, name: str, request: dict[str, Any], streaming: bool = False) -> Runnable:
        """The chosen model with the caller's tools and their options (``tool_choice``, ``strict``,
        ``response_format``, ...) bound by its own bind_tools, after routing; options alone are bound
        too (``create_agent``'s ProviderStrategy binds a ``response_format`` with no tools). A stream
        asks for its usage where the model can (``stream_usage``, e.g. OpenAI's ``include_usage``) and
        the caller left it unset, so the budget is charged what the provider bills."""
        model, request = self._model(name), dict(request)
        if streaming and "stream_usage" in type(model).model_fields and getattr(model, "stream_usage") is None:
            request.setdefault("stream_usage", True)
        tools, given, options = request.pop("tools", None), request.pop(TOOL_OBJECTS, None), request.pop(TOOL_OPTIONS, {})
        runnable = model.bind_tools(given.tools if given is not None else tools, **options) if tools or options else model
        return runnable.bind(**request) if request else runnable

    def _model(self, name: str) -> BaseChatModel:
        """The pool model; under a global LLM cache, a copy (made now, so it has the model's current
        settings) that reads none: the routed call is cached once, here, under a key that holds every
        model's settings (a model's own key may not)."""
        model = self.models[name]
        if model.cache is not None or get_llm_cache() is None:
            return model
        return model.model_copy(update={"cache": False})

    def _answer(self, name: str, messages: list[BaseMessage], stop: list[str] | None, request: dict[str, Any],
                config: RunnableConfig) -> BaseMessage:
        structured = request.get(STRUCTURED)
        if structured is None:
            return self._runnable(name, request).invoke(messages, config, stop=stop)
        return _structured_message(self._structured_runnable(name, structured).invoke(messages, config))

    async def _aanswer(self, name: str, messages: list[BaseMessage], stop: list[str] | None, request: dict[str, Any],
                       config: RunnableConfig) -> BaseMessage:
        structured = request.get(STRUCTURED)
        try:
            if structured is None:
                return await self._runnable(name, request).ainvoke(messages, config, stop=stop)
            return _structured_message(await self._structured_runnable(name, structured).ainvoke(messages, config))
        except AttributeError as error:
            raise _cancellation(error) from error

    def _structured_runnable(self, name: str, structured: StructuredOutput) -> Runnable:
        return self._model(name).with_structured_output(structured.schema, include_raw=True, **structured.options)

    # ----- generation
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        request = self._request(kwargs)
        call, request = self.route_call(messages, request,
                                        **self._requirements(messages, request, False, stop or self.stop, run_manager))
        config, stop = _child_config(run_manager), stop or self.stop
        message = self.invoke_routed(call, lambda name: self._answer(name, messages, stop, request, config),
                                     _usage, _has_content, _evidence if _plain(request) else None)
        return ChatResult(generations=[ChatGeneration(message=_routed_message(message, call))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        request = self._request(kwargs)
        call, request = await self.aroute_call(messages, request,
                                               **self._requirements(messages, request, False, stop or self.stop, run_manager))
        config, stop = _child_config(run_manager, asynchronous=True), stop or self.stop
        message = await self.ainvoke_routed(call, lambda name: self._aanswer(name, messages, stop, request, config),
                                            _usage, _has_content, _evidence if _plain(request) else None)
        return ChatResult(generations=[ChatGeneration(message=_routed_message(message, call))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        request = self._request(kwargs)
        call, request = self.route_call(messages, request,
                                        **self._requirements(messages, request, True, stop or self.stop, run_manager))
        config, stop = _child_config(run_manager, tokens=False), stop or self.stop
        if STRUCTURED in request:  # a structured answer arrives whole
            message = self.invoke_routed(call, lambda name: self._answer(name, messages, stop, request, config),
                                         _usage, _has_content)
            yield ChatGenerationChunk(message=_as_chunk(_routed_message(message, call)))
            return
        first = FirstAnswer(lambda name: self._answer(name, messages, stop, request, config), _usage, _has_content,
                            _evidence, _as_chunk) if _plain(request) else None
        pairs = self.stream_routed(call, lambda name: self._runnable(name, request, True).stream(messages, config, stop=stop),
                                   _chunks_usage, _has_content, first)
        yield from _routed_chunks(call, pairs)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(kwargs)
        call, request = await self.aroute_call(messages, request,
                                               **self._requirements(messages, request, True, stop or self.stop, run_manager))
        config, stop = _child_config(run_manager, asynchronous=True, tokens=False), stop or self.stop
        if STRUCTURED in request:
            message = await self.ainvoke_routed(call, lambda name: self._aanswer(name, messages, stop, request, config),
                                                _usage, _has_content)
            yield ChatGenerationChunk(message=_as_chunk(_routed_message(message, call)))
            return
        first = FirstAnswer(lambda name: self._aanswer(name, messages, stop, request, config), _usage, _has_content,
                            _evidence, _as_chunk) if _plain(request) else None
        pairs = self.astream_routed(call, lambda name: self._runnable(name, request, True).astream(messages, config, stop=stop),
                                    _chunks_usage, _has_content, first)
        parent = _PARENT_RUN.get()
        if parent is not None:
            _OPEN_ASYNC_STREAMS[parent[0]] = pairs
        try:
            routed = _RoutedChunks(call)
            async for _, chunk in pairs:
                yield routed.chunk(chunk)
            yield routed.last()
        finally:
            await pairs.aclose()  # settles the hold now, also when this generator is closed early
            if parent is not None:
                _OPEN_ASYNC_STREAMS.pop(parent[0], None)

    # ----- tools and structured output: routed calls like any other
    def bind(self, **kwargs: Any) -> "RoutedBinding":
        return RoutedBinding(bound=self, kwargs=kwargs, config={})

    def configurable_fields(self, **kwargs: Any) -> "RoutedConfigurableFields":
        super().configurable_fields(**kwargs)  # validates the field names
        return RoutedConfigurableFields(default=self, fields=kwargs)

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | Any], *,
                   tool_choice: str | dict | bool | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools converted to OpenAI-style schemas now (``strict`` honoured); ``tool_choice`` and every other
        option are replayed on the chosen model's own ``bind_tools``. Only tool-capable models are eligible."""
        return self.bind(**self.tool_kwargs(tools, tool_choice=tool_choice, **kwargs))

    def with_structured_output(self, schema: dict | type, *, include_raw: bool = False, **kwargs: Any
                               ) -> Runnable[LanguageModelInput, dict | BaseModel]:
        """A routed call among structured-output-capable models that uses the chosen model's own
        ``with_structured_output(schema, **kwargs)``; settings, budget, callbacks, cache and fallback
        apply as to any call. The parsed value is validated into ``schema`` when it is a pydantic class."""
        return self.structured(self, schema, include_raw, kwargs)

    def tool_kwargs(self, tools: Sequence[Any], tool_choice: Any = None, **options: Any) -> dict[str, Any]:
        """``bind_tools``' arguments as call kwargs: the tools' OpenAI-style schemas (the cache key and
        the prompt's size), the tools as given, and the options for the chosen model's own bind_tools.
        Routing settings and ``max_tokens`` among the options (``create_agent`` passes its middleware's
        ``model_settings`` here) are taken out and routed as ``.bind(...)`` would: never sent to a provider."""
        if tools and not any(spec.supports_tools for spec in self.router.pool.models):
            raise ValueError("no model in the pool supports tools (ModelSpec.supports_tools)")
        routed = {key: options.pop(key) for key in (*CALL_SETTINGS, "max_tokens") if key in options}
        converted = [convert_to_openai_tool(tool, strict=options.get("strict")) for tool in tools]
        options = {k: v for k, v in {"tool_choice": tool_choice, **options}.items() if v is not None}
        bound = {"tools": converted, TOOL_OBJECTS: BoundTools(tools), **routed}
        return {**bound, TOOL_OPTIONS: options} if options else bound

    def structured(self, runnable: Runnable, schema: dict | type, include_raw: bool, options: dict[str, Any]) -> Runnable:
        """``runnable`` (this model, bound or configurable) asked for ``schema``, then parsed."""
        if not any(spec.supports_structured_output for spec in self.router.pool.models):
            raise ValueError("no model in the pool supports structured output (ModelSpec.supports_structured_output)")
        trace = {"kwargs": {"method": options.get("method", "routed")}, "schema": convert_to_openai_tool(schema)}
        bound = runnable.bind(**{STRUCTURED: StructuredOutput(schema, options), "ls_structured_output_format": trace})
        return bound | RunnableLambda(partial(_parsed, schema, include_raw), name="RoutooStructuredOutputParser")


class RoutedBinding(RunnableBinding):
    """``RoutooChatModel.bind(...)``: keeps its arguments through ``bind_tools`` and ``with_structured_output``
    (a plain ``RunnableBinding`` forwards those to the model and drops them)."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> "RoutedBinding":
        return self.bind(**self.bound.tool_kwargs(tools, tool_choice=tool_choice, **kwargs))

    def with_structured_output(self, schema: dict | type, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        return self.bound.structured(self, schema, include_raw, kwargs)


class RoutedConfigurableFields(RunnableConfigurableFields):
    """``RoutooChatModel.configurable_fields(...)``: ``bind_tools`` and ``with_structured_output`` stay
    configurable (LangChain's own forwards them to the default model: langchain-ai/langchain#23167)."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        return self.bind(**self.default.tool_kwargs(tools, tool_choice=tool_choice, **kwargs))

    def with_structured_output(self, schema: dict | type, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        return self.default.structured(self, schema, include_raw, kwargs)


def profiled_pool(pool: ModelPool, models: dict[str, BaseChatModel]) -> ModelPool:
    """The pool with each spec's unset fields filled from its chat model's LangChain profile
    (``pool.fields_from_profile``: context window, output limit, tools, structured output, images)."""
    specs = []
    for spec in pool.models:
        known = fields_from_profile(getattr(models[spec.name], "profile", None) or {})
        update = {k: v for k, v in known.items() if k not in spec.model_fields_set}
        specs.append(spec.model_copy(update=update) if update else spec)
    return pool if all(a is b for a, b in zip(specs, pool.models)) else ModelPool(models=specs)


def pool_profile(specs: Sequence[ModelSpec], models: Sequence[BaseChatModel]) -> dict[str, Any]:
    """What every one of these pool models can take, as a LangChain model profile: the smallest context
    window and output limit and the capabilities all specs declare (images only when every spec says),
    and each other yes/no entry of the models' own profiles when every one of them states it."""
    profile: dict[str, Any] = {
        "max_input_tokens": min(spec.context_window for spec in specs),
        "max_output_tokens": min(spec.max_output_tokens for spec in specs),
        "tool_calling": all(spec.supports_tools for spec in specs),
        "structured_output": all(spec.supports_structured_output for spec in specs),
    }
    if all(spec.supports_vision is not None for spec in specs):
        profile["image_inputs"] = all(spec.supports_vision for spec in specs)
    own = [getattr(model, "profile", None) or {} for model in models]
    for key in sorted(set().union(*own) - set(profile)):
        values = [entries.get(key) for entries in own]
        if all(isinstance(value, bool) for value in values):
            profile[key] = all(values)
    return profile


def _identity(model: BaseChatModel) -> str:
    """A digest of what makes a chat model answer as it does: LangChain's own cache identity (``dumps``)
    for a serialisable model, else its fields."""
    if model.is_lc_serializable():
        text = dumps(model)
    else:
        fields = model.model_dump(exclude=NOT_IDENTITY)
        text = json.dumps(fields, sort_keys=True, default=lambda value: f"<{type(value).__qualname__}>")
    return hashlib.sha256(f"{type(model).__qualname__}:{text}".encode()).hexdigest()[:16]


def _conversation(messages: list[BaseMessage], run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
                  pool: set[str]) -> Conversation:
    """What names this call's conversation for sticky routing: LangGraph's ``thread_id`` (in the run
    config's ``configurable``, which LangGraph copies into every run's metadata), and the pool model
    whose routing record is on the last assistant turn of the history (it survives checkpoints)."""
    parent = _PARENT_RUN.get()
    config = parent[1] if parent is not None else {}
    metadata = run_manager.metadata if run_manager is not None else config.get("metadata") or {}
    thread_id = (config.get("configurable") or {}).get("thread_id") or metadata.get("thread_id")
    last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
    answered_by = (last.response_metadata.get("routoo") or {}).get("answered_by") if last is not None else None
    return Conversation(thread_id=None if thread_id is None else str(thread_id),
                        last_answered_by=answered_by if answered_by in pool else None)


def _cancellation(error: AttributeError) -> BaseException:
    """langchain-core's ``agenerate`` turns a ``CancelledError`` into ``AttributeError: 'CancelledError'
    object has no attribute 'generations'`` (langchain-ai/langchain#38469): give the cancellation back."""
    return asyncio.CancelledError() if "'CancelledError'" in str(error) else error


def _with_run_id(config: RunnableConfig | None) -> tuple[RunnableConfig, tuple[UUID, RunnableConfig]]:
    config = ensure_config(config)
    run_id = config.get("run_id") or uuid4()
    config = {**config, "run_id": run_id}
    return config, (run_id, config)


def _child_config(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
                  asynchronous: bool = False, tokens: bool = True) -> RunnableConfig:
    """Callbacks for the chosen model's run: a child of ours (``ParentRunManager.get_child`` builds the
    same; LLM run managers have none), tagged ``nostream``. Without ``tokens`` (our run streams them
    itself), token handlers see every event of that run but its tokens (``_WithoutTokens``)."""
    manager_class = AsyncCallbackManager if asynchronous else CallbackManager
    if run_manager is not None:
        manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
        manager.set_handlers(run_manager.inheritable_handlers)
        manager.add_tags(run_manager.inheritable_tags)
        manager.add_metadata(run_manager.inheritable_metadata)
    elif (parent := _PARENT_RUN.get()) is not None:
        run_id, config = parent
        manager = manager_class.configure(config.get("callbacks"), inheritable_tags=config.get("tags"),
                                          inheritable_metadata=config.get("metadata"))
        manager.parent_run_id = run_id
    else:
        manager = manager_class.configure()
    manager.add_tags([TAG_NOSTREAM])
    if not tokens:
        hooked = {id(var.get()) for var, *_ in _configure_hooks}  # re-added by the child's own configure
        for handlers in (manager.handlers, manager.inheritable_handlers):
            handlers[:] = [_WithoutTokens(h) if _hears_tokens(h) and id(h) not in hooked else h for h in handlers]
    return {"callbacks": manager}


def _hears_tokens(handler: BaseCallbackHandler) -> bool:
    """A handler that does something with new tokens (tracers record them per run: they keep them)."""
    defaults = (BaseCallbackHandler.on_llm_new_token, AsyncCallbackHandler.on_llm_new_token)
    return type(handler).on_llm_new_token not in defaults and not isinstance(handler, BaseTracer)


class _WithoutTokens:
    """A caller's handler as the chosen model's run sees it while our own run streams the answer: every
    event but ``on_llm_new_token``, so it hears each token once, from our run."""

    def __init__(self, handler: BaseCallbackHandler):
        self.handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        return None


def _usage(message: BaseMessage) -> Usage | None:
    """The whole usage record of ``usage_metadata`` (totals and their input and output token details)."""
    return read_usage(getattr(message, "usage_metadata", None) or None, message.type)


def _chunks_usage(chunks: Sequence[BaseMessage]) -> Usage | None:
    """A stream's usage: the sum of its chunks' (LangChain adds chunk usage the same way)."""
    reported = [usage for chunk in chunks if (usage := _usage(chunk)) is not None]
    return sum(reported[1:], reported[0]) if reported else None


def _plain(request: dict[str, Any]) -> bool:
    """A text answer (no tools, no structured output): what a cascade's first model may give."""
    return not request.get("tools") and STRUCTURED not in request and TOOL_OPTIONS not in request


def _evidence(message: BaseMessage) -> AnswerEvidence:
    """What a cascade reads off a first answer: its length, whether it finished, its log-probabilities
    (the ``logprobs`` OpenAI-style providers return when asked)."""
    usage = _usage(message)
    metadata = message.response_metadata
    logprobs = [token["logprob"] for token in (metadata.get("logprobs") or {}).get("content") or []]
    return AnswerEvidence.read(message.text, output_tokens=usage.output_tokens if usage else None,
                               finished=metadata.get("finish_reason") not in ("length", "max_tokens"),
                               logprobs=logprobs or None)


def _has_content(message: BaseMessage) -> bool:
    return bool(message.content or getattr(message, "tool_calls", None) or getattr(message, "tool_call_chunks", None)
                or message.additional_kwargs.get("parsed") is not None)


def _routed_message(message: BaseMessage, call: RoutedCall) -> AIMessage:
    """A copy of the answer as our run reports it: the routing record, the provider's usage, and no
    ``model_name`` (the provider's own id goes to the record; the caller's copy names the pool model,
    ``_for_caller``): usage trackers keyed by model name, like ``get_usage_metadata_callback``, then
    count the call once, from the chosen model's own run."""
    metadata = dict(message.response_metadata)
    metadata["routoo"] = {**call.record(), "usage": getattr(message, "usage_metadata", None),
                          "provider_model_name": metadata.pop("model_name", None), "cost_usd": call.cost_usd}
    if not isinstance(message, AIMessage):
        message = AIMessage(content=message.content, additional_kwargs=message.additional_kwargs)
    return message.model_copy(update={"response_metadata": metadata})


class _RoutedChunks:
    """Copies of the chosen model's chunks (the provider's objects stay untouched), with its usage as it
    sent it: the first carries the routing record; the provider's own model id and the cost go to a
    last chunk's record, so an aggregated stream names one model (``_for_caller``)."""

    def __init__(self, call: RoutedCall):
        self.call = call
        self.usage: dict | None = None
        self.provider_model_name: str | None = None
        self.first = True

    def chunk(self, chunk: BaseMessage) -> ChatGenerationChunk:
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            self.usage = usage if self.usage is None else add_usage(self.usage, usage)
        metadata = dict(chunk.response_metadata)
        self.provider_model_name = metadata.pop("model_name", None) or self.provider_model_name
        if self.first:
            metadata["routoo"] = self.call.record()
            self.first = False
        copy = _as_chunk(chunk).model_copy(update={"response_metadata": metadata})
        return ChatGenerationChunk(message=copy)

    def last(self) -> ChatGenerationChunk:
        record = {"usage": self.usage, "provider_model_name": self.provider_model_name, "cost_usd": self.call.cost_usd}
        return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"routoo": record}))


def _routed_chunks(call: RoutedCall, pairs: Iterator[tuple[str, BaseMessage]]) -> Iterator[ChatGenerationChunk]:
    routed = _RoutedChunks(call)
    for _, chunk in pairs:
        yield routed.chunk(chunk)
    yield routed.last()


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    if isinstance(message, AIMessageChunk):
        return message
    fields = message.model_dump(exclude={"type", "tool_calls", "invalid_tool_calls"})
    tool_chunks = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                   for i, c in enumerate(getattr(message, "tool_calls", None) or [])]
    return AIMessageChunk(**{**fields, "tool_call_chunks": tool_chunks})


def _for_caller(message: BaseMessage) -> BaseMessage:
    """The caller's copy of a routed message (or of a stream's first chunk): ``model_name`` names the
    pool model that answered."""
    answered_by = (message.response_metadata.get("routoo") or {}).get("answered_by")
    if answered_by is None:
        return message
    return message.model_copy(update={"response_metadata": {**message.response_metadata, "model_name": answered_by}})


def _structured_message(result: Any) -> AIMessage:
    """The chosen model's ``{"raw", "parsed", "parsing_error"}`` (or a bare parsed value, from models that
    ignore ``include_raw``) as one message: the raw answer with the parsed value in ``additional_kwargs``."""
    if isinstance(result, dict) and "raw" in result and "parsed" in result:
        raw, parsed, error = result["raw"], result["parsed"], result.get("parsing_error")
    else:
        raw, parsed, error = AIMessage(content=""), result, None
    extra = {"parsed": parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed}
    if error is not None:
        extra["parsing_error"] = f"{type(error).__name__}: {error}"
    return raw.model_copy(update={"additional_kwargs": {**raw.additional_kwargs, **extra}})


def _parsed(schema: dict | type, include_raw: bool, message: AIMessage) -> Any:
    """The structured value of a routed answer (validated into ``schema`` when it is a pydantic class)."""
    parsed, error = message.additional_kwargs.get("parsed"), message.additional_kwargs.get("parsing_error")
    if parsed is not None and isinstance(schema, type) and issubclass(schema, BaseModel):
        parsed = schema.model_validate(parsed)
    if include_raw:
        return {"raw": message, "parsed": parsed, "parsing_error": error}
    if error is not None:
        raise OutputParserException(error, llm_output=str(message.content))
    return parsed
