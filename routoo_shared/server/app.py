"""The OpenAI-compatible routing server: FastAPI routes over one ``RoutooChatModel``.

``create_app(config)`` builds everything from a ``ServerConfig`` (tests and workers pass their own
chat models or budget factory). A request is parsed (``openai_format``), its key authenticated and
admitted (``keys``), turned into LangChain messages and per-call settings, and run through the same
``RoutooChatModel`` the integrations use: one routing path, one budget guarantee, the same fallback,
timeouts and cooldowns. The answer goes back in OpenAI's shapes with the decision attached: the
``model`` that answered, ``x-routoo-*`` headers and the routing record under ``routoo``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk

from langchain_routoo import RoutooChatModel
from routoo_shared.routing.budget import BudgetExhaustedError
from routoo_shared.routing.fallback import AllModelsFailedError
from routoo_shared.routing.router import Router
from routoo_shared.routing.selector import InfeasibleRoutingError
from routoo_shared.server.config import RoutingSettings, ServerConfig
from routoo_shared.server.keys import (
    AuthenticationError,
    BudgetFactory,
    Keyring,
    KeyState,
    RateLimitedError,
    default_budget,
    shared_budgets,
)
from routoo_shared.server.metrics import CONTENT_TYPE, ServerMetrics
from routoo_shared.server.openai_format import (
    ChatCompletionRequest,
    ChunkWriter,
    RequestError,
    completion,
    finish_reason,
    parse_request,
    usage_of,
)

DEFAULT_MODEL = "routoo"
WORKER_CONFIG, WORKER_STORE = "ROUTOO_SERVE_CONFIG", "ROUTOO_SERVE_STORE"  # serve -> worker_app, in each worker
CHAT_MODEL_FIELDS = ("max_fallbacks",)  # settings that are RoutooChatModel fields, not per-call keywords


class APIError(Exception):
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, type: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.type, self.code, self.param = status, type, code, param
        self.headers, self.extra = headers or {}, extra

    def response(self) -> JSONResponse:
        error = {"message": str(self), "type": self.type, "param": self.param, "code": self.code, **self.extra}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def call_error(error: Exception) -> APIError:
    """What the client sees for a routed call that failed: 429 budget, 400 bad input or nothing eligible,
    502 every upstream failed (each attempt's kind listed), 504 every upstream timed out, else 500."""
    if isinstance(error, (APIError, RequestError)):
        return error if isinstance(error, APIError) else APIError(400, str(error), "invalid_request_error", error.code, error.param)
    if isinstance(error, BudgetExhaustedError):
        return APIError(429, str(error), "budget_exceeded", "budget_exceeded")
    if isinstance(error, InfeasibleRoutingError):
        return APIError(400, str(error), "invalid_request_error", "infeasible_routing", param=f"routoo.{error.constraint}")
    if isinstance(error, AllModelsFailedError):
        attempts = [{"model": a.model, "kind": a.kind, "error": a.error} for a in error.attempts]
        if all(a.kind in ("timeout", "budget") for a in error.attempts):
            return APIError(504, str(error), "upstream_timeout", "upstream_timeout", attempts=attempts)
        return APIError(502, str(error), "upstream_error", "all_models_failed", attempts=attempts)
    if isinstance(error, ValueError):  # e.g. messages with nothing to route on
        return APIError(400, str(error), "invalid_request_error", "invalid_request")
    return APIError(500, f"{type(error).__name__}: {error}", "server_error", "internal_error")


class ClosingStreamingResponse(StreamingResponse):
    """Closes its stream on every exit, a client that went away included, so the routed call's budget
    hold settles then (Starlette leaves an unfinished generator to the garbage collector)."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


class RoutingService:
    """The pool, the router, the keys and the metrics; ``complete`` serves one chat completion."""

    def __init__(self, config: ServerConfig, chat_models: dict[str, BaseChatModel] | None = None,
                 router: Router | None = None, make_budget: BudgetFactory = default_budget, store: str | None = None):
        self.config = config
        chat_models = chat_models or config.chat_models()  # before the predictor loads: a missing key fails fast
        defaults = config.settings.model_dump(exclude_none=True)
        model_fields = {k: defaults.pop(k) for k in CHAT_MODEL_FIELDS if k in defaults}
        if store is not None:  # every worker keeps a conversation on one model
            from routoo_shared.stores.redis_store import RedisConversationStore

            model_fields["conversations"] = RedisConversationStore(store)
        self.chat = RoutooChatModel(models=chat_models, router=router or config.router(), sticky=config.sticky,
                                    store=store, **model_fields)
        self.defaults = defaults
        self.health = self.chat.health  # made now, so every per-request copy shares it
        window = None
        if store is not None:  # every worker counts each key's requests in one window
            from routoo_shared.stores.redis_store import RedisRequestWindow

            window = RedisRequestWindow(store)
        self.keyring = Keyring(config.keys, make_budget, window)
        self.metrics = ServerMetrics(self.keyring, self.health, self.pool_names)
        self._check_names()

    @property
    def pool_names(self) -> list[str]:
        return self.chat.router.pool.names

    def _check_names(self) -> None:
        """Presets and keys may only name pool models and presets that exist."""
        for where, settings in [("settings", self.config.settings), *((f"presets.{n}", s) for n, s in self.config.presets.items())]:
            self._known_models(settings, where)
        for key in self.config.keys:
            unknown = sorted(set(key.allowed_models or []) - set(self.pool_names))
            presets = sorted(set(key.allowed_presets or []) - set(self.model_ids()))
            if unknown or presets:
                raise ValueError(f"key {key.name!r} allows unknown model(s) {unknown} or preset(s) {presets}")

    def _known_models(self, settings: RoutingSettings, where: str) -> None:
        for field in ("allowed_models", "denied_models"):
            unknown = sorted(set(getattr(settings, field) or []) - set(self.pool_names))
            if unknown:
                raise RequestError(f"{where}.{field} names unknown model(s) {unknown}; the pool has {self.pool_names}",
                                   f"{where}.{field}", "model_not_found")

    def model_ids(self) -> list[str]:
        return [DEFAULT_MODEL, *(f"{DEFAULT_MODEL}/{name}" for name in self.config.presets)]

    def visible_models(self, key: KeyState | None) -> list[str]:
        """The ``model`` values this key may send."""
        presets = key.entry.allowed_presets if key is not None else None
        models = key.entry.allowed_models if key is not None else None
        return ([i for i in self.model_ids() if presets is None or i in presets]
                + [m for m in self.pool_names if models is None or m in models])

    # ----- one request
    def settings_for(self, request: ChatCompletionRequest, key: KeyState | None) -> dict[str, Any]:
        """Per-call keywords for ``RoutooChatModel``: default settings < preset < the request's ``routoo``,
        a pinned model, the key's model list; 404 for an unknown model, 403 for one the key may not use."""
        model = request.model
        preset = model.partition("/")[2] if model.startswith(f"{DEFAULT_MODEL}/") else None
        settings = dict(self.defaults)
        if model == DEFAULT_MODEL or preset is not None:
            if preset is not None and preset not in self.config.presets:
                raise APIError(404, f"unknown preset {preset!r}; the config has {sorted(self.config.presets)}",
                               "invalid_request_error", "model_not_found", "model")
            if key is not None and key.entry.allowed_presets is not None and model not in key.entry.allowed_presets:
                raise APIError(403, f"this key may not use {model!r}", "permission_error", "model_not_allowed", "model")
            if preset is not None:
                settings.update(self.config.presets[preset].model_dump(exclude_none=True))
        elif model in self.pool_names:
            if key is not None and key.entry.allowed_models is not None and model not in key.entry.allowed_models:
                raise APIError(403, f"this key may not use {model!r}", "permission_error", "model_not_allowed", "model")
            settings["model"] = model
        else:
            raise APIError(404, f"unknown model {model!r}; use one of {self.visible_models(key)}",
                           "invalid_request_error", "model_not_found", "model")
        if request.routoo is not None:
            self._known_models(request.routoo, "routoo")
            settings.update(request.routoo.model_dump(exclude_none=True))
        allowed_by_key = key.entry.allowed_models if key is not None else None
        if allowed_by_key is not None:
            allowed = [m for m in settings.get("allowed_models") or self.pool_names if m in allowed_by_key]
            if not allowed:
                raise APIError(403, "this key may use none of the requested models", "permission_error", "model_not_allowed",
                               "routoo.allowed_models")
            settings["allowed_models"] = allowed
        return settings

    def runnable(self, request: ChatCompletionRequest, key: KeyState | None, session: str | None):
        """The routed call for ``request``: this key's budget, the settings and options bound, tools bound
        with the router's own ``bind_tools``, a JSON schema with ``with_structured_output``."""
        settings = self.settings_for(request, key)
        copy = {k: settings.pop(k) for k in CHAT_MODEL_FIELDS if k in settings}
        chat = self.chat.model_copy(update={"budget": key.budget() if key is not None else None, **copy})
        options = {**settings, **request.call_options()}
        if session is not None and "session_id" in RoutooChatModel.model_fields:  # sticky per conversation
            options["session_id"] = f"{key.name if key is not None else ''}:{session}"  # one key's ids never meet another's
        response_format = request.response_format
        if response_format is not None and response_format.type == "json_object":
            options.update(response_format={"type": "json_object"}, requires_structured_output=True)
        runnable = chat.bind(**options)
        if request.tools:
            runnable = runnable.bind_tools([t.model_dump(exclude_none=True) for t in request.tools], **request.tool_options())
        if response_format is not None and response_format.type == "json_schema":
            schema = response_format.json_schema
            definition = {**schema.schema_, "title": schema.name, **({"description": schema.description} if schema.description else {})}
            runnable = runnable.with_structured_output(definition, include_raw=True, method="json_schema",
                                                       **({"strict": schema.strict} if schema.strict is not None else {}))
        return runnable

    async def complete(self, request: ChatCompletionRequest, key: KeyState | None, session: str | None) -> Response:
        runnable = self.runnable(request, key, session)
        timer = self.metrics.timer()
        config = {"callbacks": [timer], "run_name": "routoo-server"}
        messages = request.messages_for_langchain()
        structured = request.response_format is not None and request.response_format.type == "json_schema"
        if request.stream and not structured:
            return await self._stream(runnable.astream(messages, config), request)
        try:
            result = await runnable.ainvoke(messages, config)
        except Exception as error:
            raise self._failed(error) from error
        message = result["raw"] if structured else result
        record = message.response_metadata["routoo"]
        self.metrics.answered(record["answered_by"], record["cost_usd"], record["attempts"])
        headers = self._headers(record, record["cost_usd"])
        body = completion(message, record["answered_by"], record, structured)
        if request.stream:  # a structured answer arrives whole: one content chunk
            writer = ChunkWriter(record["answered_by"], request.include_usage)
            events = [writer.whole(body["choices"][0]["message"]["content"]),
                      *writer.end("stop", body.get("usage"), body["routoo"]), "data: [DONE]\n\n"]
            return ClosingStreamingResponse(_events(events), media_type="text/event-stream", headers=headers)
        return JSONResponse(body, headers=headers)

    async def _stream(self, chunks: AsyncIterator[AIMessageChunk], request: ChatCompletionRequest) -> Response:
        """An SSE stream; the first chunk is awaited here, so routing and budget errors are HTTP errors."""
        try:
            first = await anext(chunks)
        except BaseException as error:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
            if isinstance(error, Exception):
                raise self._failed(error) from error
            raise
        record = first.response_metadata["routoo"]
        answered_by = record["answered_by"]
        writer = ChunkWriter(answered_by, request.include_usage)

        async def events() -> AsyncIterator[str]:
            total = first
            try:
                if (event := writer.delta(first)) is not None:
                    yield event
                async for chunk in chunks:
                    total = total + chunk
                    if (event := writer.delta(chunk)) is not None:
                        yield event
            except Exception as error:  # too late for a status code: an error event, as OpenAI sends
                yield f"data: {json.dumps({'error': {'message': str(error), 'type': 'upstream_error', 'code': 'stream_broken'}})}\n\n"
                return
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()
            final = {**record, **total.response_metadata["routoo"]}  # the last chunk adds usage and cost
            self.metrics.answered(answered_by, final["cost_usd"], record["attempts"])
            for event in writer.end(finish_reason(total), usage_of(total), final):
                yield event
            yield "data: [DONE]\n\n"

        headers = self._headers(record, None)
        return ClosingStreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _failed(self, error: Exception) -> APIError:
        if isinstance(error, AllModelsFailedError):
            self.metrics.failed(a.model_dump() for a in error.attempts)
        return call_error(error)

    @staticmethod
    def _headers(record: dict, cost: float | None) -> dict[str, str]:
        fallbacks = sum(1 for a in record["attempts"] if a["error"] and a["kind"] not in ("budget", "cooldown"))
        headers = {"x-routoo-model": record["answered_by"], "x-routoo-fallbacks": str(fallbacks)}
        if cost is not None:
            headers["x-routoo-cost-usd"] = f"{cost:.10f}"
        return headers


async def _events(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


async def read_body(request: Request, limit: int) -> Any:
    """The JSON body, read no further than ``limit`` bytes: 413 past it, 400 for bad JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body over {limit} bytes", "invalid_request_error", "request_too_large")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise APIError(413, f"request body over {limit} bytes", "invalid_request_error", "request_too_large")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise APIError(400, f"the body is not valid JSON: {error}", "invalid_request_error", "invalid_json") from None


def create_app(config: ServerConfig, chat_models: dict[str, BaseChatModel] | None = None, router: Router | None = None,
               make_budget: BudgetFactory = default_budget, store: str | None = None) -> FastAPI:
    """The server for ``config``. ``chat_models`` and ``router`` replace the ones the config builds (tests,
    or a worker that has them already); ``make_budget`` makes every key's budget. With ``store``
    (``redis://host:port/db``) the keys' budgets and request windows and the models' cooldowns live in
    Redis, shared by every worker and host serving the same config."""
    if store is not None and make_budget is default_budget:
        make_budget = shared_budgets(store)
    service = RoutingService(config, chat_models, router, make_budget, store)
    app = FastAPI(title="Routoo", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return call_error(error).response()

    def authenticate(request: Request) -> KeyState | None:
        try:
            return service.keyring.authenticate(request.headers.get("authorization"))
        except AuthenticationError as error:
            raise APIError(401, str(error), "invalid_request_error", "invalid_api_key") from None

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        key = authenticate(request)
        name = key.name if key is not None else "-"
        try:
            if key is not None:
                try:
                    key.admit()
                except RateLimitedError as error:
                    raise APIError(429, str(error), "requests", "rate_limit_exceeded",
                                   headers={"retry-after": f"{max(error.retry_after_s, 0):.0f}"}) from None
            parsed = parse_request(await read_body(request, config.max_body_bytes))
            session = request.headers.get("x-session-id") or parsed.user
            response = await service.complete(parsed, key, session)
        except (APIError, RequestError) as error:
            status = error.status if isinstance(error, APIError) else 400
            service.metrics.requests.labels(name, str(status)).inc()
            raise
        service.metrics.requests.labels(name, str(response.status_code)).inc()
        return response

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        key = authenticate(request)
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "routoo"}
                                           for model in service.visible_models(key)]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": {m: {"cooldown_s": service.health.cooling_s(m)} for m in service.pool_names}}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    return app


def check_bind(host: str, config: ServerConfig) -> None:
    """``ValueError`` for an address other than loopback when no key is configured (an open server)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not config.keys:
        raise ValueError(f"refusing to serve on {host} with no API keys in the config: add one with "
                         f"'routoo keys add NAME --budget-usd 50', or bind 127.0.0.1")


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          store: str | None = None) -> None:
    """Run the server with uvicorn until interrupted: ``workers`` processes, which need a shared ``store``
    (``redis://host:port/db``) to serve as one; ``ValueError`` for several workers without one."""
    import uvicorn

    check_bind(host, config)
    if workers > 1 and store is None:
        raise ValueError(
            f"--workers {workers} needs --store redis://host:port/db: with the in-process store every worker "
            f"keeps its own budgets and cooldowns, so each key could spend its budget {workers} times over"
        )
    if store is not None:
        from routoo_shared.stores.redis_store import connect

        try:
            connect(store).ping()
        except Exception as error:  # any client error: the store is named, the server does not start
            raise ValueError(f"--store {store} did not answer: {error}") from None
    if workers == 1:
        uvicorn.run(create_app(config, store=store), host=host, port=port, log_level="info")
        return
    os.environ[WORKER_CONFIG], os.environ[WORKER_STORE] = config.model_dump_json(), store
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, host=host, port=port, log_level="info")


def worker_app() -> FastAPI:
    """One worker of ``routoo serve --workers N`` (uvicorn's app factory): the config and store ``serve``
    left in the environment."""
    return create_app(ServerConfig.model_validate_json(os.environ[WORKER_CONFIG]), store=os.environ[WORKER_STORE])
