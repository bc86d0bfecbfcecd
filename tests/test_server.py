"""``routoo serve``: the OpenAI-compatible server as its clients use it.

The real ``openai`` SDK, LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAILike`` talk to the app,
through httpx's ASGI transport (fast) or a real uvicorn server on a free loopback port; upstream
models are real ``ChatOpenAI`` objects served by the in-process fake endpoint. A scripted slow model
stands in where a test is about Routoo's own timing (timeouts, a client leaving mid-stream).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_routoo import RoutooChatModel
from routoo_shared.server.app import create_app
from routoo_shared.server.config import KeyEntry, ServerConfig
from routoo_shared.server.keys import KeyState, RateLimitedError, add_key, default_budget, digest
from tests.conftest import TRIO, trio_router
from tests.fake_openai import USAGE, FakeOpenAI

CHEAP, MID, STRONG = TRIO
SECRET, OTHER = "rt-test-secret", "rt-other-secret"
PARIS = {"name": "Paris", "population": 2100000}
ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class City(BaseModel):
    name: str
    population: int


def capable_router():
    router = trio_router()
    for spec in router.pool.models:
        spec.supports_tools = spec.supports_structured_output = True
    return router


def upstreams(**fakes: FakeOpenAI) -> dict[str, ChatOpenAI]:
    """A real ChatOpenAI per pool model, each on its own fake endpoint (default: a healthy one)."""
    return {name: ChatOpenAI(model=name, api_key="sk-upstream", base_url="http://upstream.invalid/v1", max_retries=0,
                             stream_usage=True, **fakes.get(name, FakeOpenAI(structured=PARIS)).clients()) for name in TRIO}


def make_app(models=None, router=None, keys=None, **config):
    keys = keys if keys is not None else [{"name": "team", "sha256": digest(SECRET), "budget_usd": 10.0},
                                         {"name": "other", "sha256": digest(OTHER), "budget_usd": 10.0,
                                          "allowed_models": [CHEAP], "allowed_presets": ["routoo/cheap"],
                                          "requests_per_minute": 3}]
    config = ServerConfig.from_data({"pool": "local", "keys": keys,
                                     "presets": {"cheap": {"quality_cost_tradeoff": 5.0}}, **config})
    return create_app(config, chat_models=models or upstreams(), router=router or capable_router())


def sdk(app, key: str = SECRET) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url="http://routoo.test/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))


def raw(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://routoo.test",
                             headers={"authorization": f"Bearer {SECRET}"})


def budget(app, name: str = "team"):
    return next(s for s in app.state.service.keyring.states.values() if s.name == name).budget()


@pytest.fixture(scope="module")
def app():
    return make_app()


# ----- the openai SDK through the ASGI transport
async def test_completion_names_the_model_that_answered_and_carries_the_decision(app):
    response = await sdk(app).chat.completions.with_raw_response.create(model="routoo", messages=QUESTION)
    completion = response.parse()
    assert completion.model in TRIO and completion.choices[0].message.content == "Paris is the capital of France."
    assert response.headers["x-routoo-model"] == completion.model and response.headers["x-routoo-fallbacks"] == "0"
    record = completion.model_extra["routoo"]
    assert record["answered_by"] == completion.model and record["candidates"] and record["reason"]
    spec = app.state.service.chat.router.pool[completion.model]
    cost = spec.cost(USAGE["prompt_tokens"], USAGE["completion_tokens"])
    assert float(response.headers["x-routoo-cost-usd"]) == pytest.approx(cost) and record["cost_usd"] == pytest.approx(cost)
    assert completion.usage.prompt_tokens == USAGE["prompt_tokens"]


async def test_stream_carries_the_record_and_usage_on_its_last_chunk(app):
    stream = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital of France."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.usage.total_tokens == USAGE["total_tokens"] and last.model_extra["routoo"]["answered_by"] == last.model
    spec = app.state.service.chat.router.pool[last.model]
    assert last.model_extra["routoo"]["cost_usd"] == pytest.approx(spec.cost(USAGE["prompt_tokens"], USAGE["completion_tokens"]))
    assert all(c.model == last.model for c in chunks) and budget(app).reserved_usd == 0


async def test_model_field_picks_default_preset_or_pinned_model(app):
    client = sdk(app)
    default = await client.chat.completions.create(model="routoo", messages=QUESTION)
    cheap = await client.chat.completions.create(model="routoo/cheap", messages=QUESTION)
    pinned = await client.chat.completions.create(model=MID, messages=QUESTION)
    assert default.model == STRONG and cheap.model == CHEAP and pinned.model == MID
    capped = await client.chat.completions.create(model="routoo", messages=QUESTION,
                                                  extra_body={"routoo": {"allowed_models": [CHEAP, MID]}})
    assert capped.model in (CHEAP, MID)


async def test_tools_tool_choice_and_parallel_calls_reach_the_chosen_model():
    fake = FakeOpenAI(parallel=True)
    app = make_app(upstreams(**{STRONG: fake}))
    tools = [{"type": "function", "function": {"name": name, "description": "a tool",
                                               "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
             for name in ("add", "mul")]
    completion = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, tools=tools,
                                                        tool_choice="auto", parallel_tool_calls=True)
    calls = completion.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["add", "mul"] and json.loads(calls[0].function.arguments) == {"a": 1, "b": 2}
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = fake.requests[-1]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is True and len(sent["tools"]) == 2
    stream = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, tools=tools, stream=True)
    deltas = [c.choices[0].delta.tool_calls for c in [c async for c in stream] if c.choices and c.choices[0].delta.tool_calls]
    assert {d[0].function.name for d in deltas} == {"add", "mul"}
    follow_up = QUESTION + [completion.choices[0].message.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": calls[0].id, "content": "3"}]
    answer = await sdk(app).chat.completions.create(model="routoo", messages=follow_up, tools=tools)
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert fake.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "3"}


async def test_structured_output_with_a_json_schema():
    fake = FakeOpenAI(structured={"name": "Paris", "population": 2100000})
    app = make_app(upstreams(**{STRONG: fake}))
    completion = await sdk(app).chat.completions.parse(model="routoo", messages=QUESTION, response_format=City)
    assert completion.choices[0].message.parsed == City(name="Paris", population=2100000)
    assert fake.requests[-1]["response_format"]["type"] == "json_schema"
    stream = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, stream=True, response_format={
        "type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema()}})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"name": "Paris", "population": 2100000}


async def test_options_pass_through_to_the_upstream():
    fake = FakeOpenAI()
    app = make_app(upstreams(**{STRONG: fake}))
    await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, temperature=0.2, top_p=0.9, stop=["\n"],
                                           max_completion_tokens=32, user="alice")
    sent = fake.requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["stop"]) == (0.2, 0.9, ["\n"])
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 32
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    await sdk(app).chat.completions.create(model="routoo", messages=image)
    assert fake.requests[-1]["messages"][0]["content"][1]["type"] == "image_url"


async def test_a_failing_model_falls_back_and_is_counted(app):
    app = make_app(upstreams(**{STRONG: FakeOpenAI(status=500)}))
    response = await sdk(app).chat.completions.with_raw_response.create(model="routoo", messages=QUESTION)
    assert response.parse().model != STRONG and response.headers["x-routoo-fallbacks"] == "1"
    metrics = (await raw(app).get("/metrics")).text
    assert f'routoo_fallbacks_total{{kind="provider",model="{STRONG}"}} 1.0' in metrics


@pytest.mark.skipif("session_id" not in RoutooChatModel.model_fields, reason="the engine has no session_id setting yet")
async def test_a_session_keeps_its_model_for_one_key_only():
    app = make_app(keys=[{"name": "team", "sha256": digest(SECRET)}, {"name": "other", "sha256": digest(OTHER)}])
    first = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, extra_headers={"x-session-id": "s1"})
    kept = await sdk(app).chat.completions.create(model="routoo/cheap", messages=QUESTION, extra_headers={"x-session-id": "s1"})
    by_user = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, user="alice")
    by_user_cheap = await sdk(app).chat.completions.create(model="routoo/cheap", messages=QUESTION, user="alice")
    elsewhere = await sdk(app, OTHER).chat.completions.create(model="routoo/cheap", messages=QUESTION, extra_headers={"x-session-id": "s1"})
    assert first.model == kept.model == by_user.model == by_user_cheap.model == STRONG and kept.model_extra["routoo"]["sticky"]
    assert elsewhere.model == CHEAP


# ----- errors, OpenAI-shaped
async def test_keys_are_required_and_checked(app):
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(app, "rt-unknown").chat.completions.create(model="routoo", messages=QUESTION)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://routoo.test") as client:
        response = await client.post("/v1/chat/completions", json={"model": "routoo", "messages": QUESTION})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, field", [
    ({"model": "routoo", "messages": QUESTION, "temprature": 0.5}, "temprature"),
    ({"model": "routoo", "messages": QUESTION, "routoo": {"quality_cost_tradeof": 1}}, "routoo.quality_cost_tradeof"),
    ({"model": "routoo", "messages": QUESTION, "routoo": {"min_quality": 2}}, "routoo.min_quality"),
    ({"model": "routoo", "messages": QUESTION, "max_tokens": -1}, "max_tokens"),
    ({"model": "routoo", "messages": QUESTION, "n": 2}, "n"),
    ({"model": "routoo", "messages": [{"role": "user", "content": [{"type": "text", "txt": "hi"}]}]}, "messages.0.content.0.txt"),
    ({"model": "routoo", "messages": QUESTION, "routoo": {"allowed_models": ["gpt-9"]}}, "routoo.allowed_models"),
])
async def test_bad_fields_are_400_naming_the_field(app, body, field):
    response = await raw(app).post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text


async def test_bad_json_and_non_finite_numbers_are_400(app):
    response = await raw(app).post("/v1/chat/completions", content=b'{"model": "routoo", "messages": [')
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    body = b'{"model": "routoo", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    response = await raw(app).post("/v1/chat/completions", content=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"


async def test_a_body_over_the_limit_is_413():
    app = make_app(max_body_bytes=1000)
    response = await raw(app).post("/v1/chat/completions", json={"model": "routoo", "messages": [{"role": "user", "content": "x" * 2000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


async def test_models_presets_and_rates_a_key_may_not_use(app):
    client = sdk(make_app(), OTHER)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model=STRONG, messages=QUESTION)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="routoo", messages=QUESTION)
    assert (await client.chat.completions.create(model="routoo/cheap", messages=QUESTION)).model == CHEAP
    with pytest.raises(openai.RateLimitError) as caught:  # 3 requests a minute, refused ones included
        await client.chat.completions.create(model=CHEAP, messages=QUESTION)
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.NotFoundError):
        await sdk(app).chat.completions.create(model="gpt-9", messages=QUESTION)


async def test_an_exhausted_budget_is_429_budget_exceeded():
    app = make_app(keys=[{"name": "team", "sha256": digest(SECRET), "budget_usd": 1e-9}])
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk(app).chat.completions.create(model="routoo", messages=QUESTION)
    error = caught.value.body
    assert caught.value.status_code == 429 and error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
    assert error["message"]


async def test_every_upstream_failing_is_502_with_each_kind():
    app = make_app(upstreams(**{name: FakeOpenAI(status=503) for name in TRIO}))
    response = await raw(app).post("/v1/chat/completions", json={"model": "routoo", "messages": QUESTION})
    error = response.json()["error"]
    assert response.status_code == 502 and error["type"] == "upstream_error"
    assert [a["kind"] for a in error["attempts"]] == ["provider"] * 3 and budget(app).reserved_usd == 0


class SlowModel(BaseChatModel):
    """Answers after ``delay_s``, or streams one word every ``delay_s`` (Routoo's own timing under test)."""

    delay_s: float = 5.0
    words: int = 50

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        await asyncio.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="late"))])

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs) -> AsyncIterator[ChatGenerationChunk]:
        for i in range(self.words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"word{i} "))
            await asyncio.sleep(self.delay_s)


async def test_every_upstream_timing_out_is_504():
    app = make_app({name: SlowModel() for name in TRIO})
    response = await raw(app).post("/v1/chat/completions", json={"model": "routoo", "messages": QUESTION,
                                                                 "routoo": {"timeout_s": 0.05, "max_fallbacks": 1}})
    error = response.json()["error"]
    assert response.status_code == 504 and [a["kind"] for a in error["attempts"]] == ["timeout"] * 2
    assert budget(app).reserved_usd == 0


async def test_models_health_and_metrics(app):
    client = raw(app)
    await client.post("/v1/chat/completions", json={"model": "routoo", "messages": QUESTION})
    listed = [m.id for m in (await sdk(app).models.list()).data]
    assert listed == ["routoo", "routoo/cheap", *TRIO]
    assert [m.id for m in (await sdk(app, OTHER).models.list()).data] == ["routoo/cheap", CHEAP]
    assert (await client.get("/health")).json()["status"] == "ok"
    metrics = (await client.get("/metrics")).text
    for line in ('routoo_calls_total{model="', 'routoo_spent_usd_total{model="', 'routoo_routing_seconds_count ',
                 'routoo_upstream_seconds_count ', 'routoo_key_budget_remaining_usd{key="team"} ',
                 'routoo_model_cooldown_seconds{model="', 'routoo_requests_total{key="team",status="200"} '):
        assert line in metrics, line


async def test_secrets_never_reach_logs_or_records(app, caplog):
    caplog.set_level(logging.DEBUG)
    response = await raw(app).post("/v1/chat/completions", json={"model": "routoo", "messages": QUESTION})
    await raw(app).get("/metrics")
    assert SECRET not in caplog.text and SECRET not in response.text and digest(SECRET) not in response.text


def test_keys_add_stores_a_digest_and_returns_the_secret_once(tmp_path):
    config = tmp_path / "routoo.yaml"
    config.write_text("pool: local\npresets:\n  cheap: {quality_cost_tradeoff: 0.8}\n")
    secret = add_key(config, "team-a", budget_usd=50, renew="daily", requests_per_minute=60)
    assert secret not in config.read_text() and digest(secret) in config.read_text()
    loaded = ServerConfig.load(config)
    assert loaded.keys[0].budget_usd == 50 and loaded.presets["cheap"].quality_cost_tradeoff == 0.8
    with pytest.raises(ValueError, match="repeated"):
        add_key(config, "team-a", budget_usd=1)
    with pytest.raises(ValueError, match="budget_usd"):
        add_key(config, "team-b", budget_usd=float("nan"))


def test_a_daily_budget_renews_at_utc_midnight_and_the_rate_window_slides():
    now = [datetime.datetime(2026, 12, 4, 23, 59, tzinfo=datetime.timezone.utc).timestamp()]
    entry = KeyEntry(name="team", sha256=digest(SECRET), budget_usd=1.0, renew="daily", requests_per_minute=2)
    state = KeyState(entry, default_budget, clock=lambda: now[0])
    today = state.budget()
    hold = today.reserve("m", 0.4)
    assert state.budget() is today and today.remaining_usd == pytest.approx(0.6)
    state.admit(), state.admit()
    with pytest.raises(RateLimitedError):
        state.admit()
    now[0] += 61  # past midnight, and past the minute
    tomorrow = state.budget()
    assert tomorrow is not today and tomorrow.remaining_usd == 1.0
    today.settle(hold, 0.3)  # a call in flight across midnight settles on the day it started
    assert today.spent_usd == 0.3 and tomorrow.spent_usd == 0
    state.admit()


# ----- a real server on a loopback port
class LiveServer:
    def __init__(self, app):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def live(app):
    with LiveServer(app) as server:
        yield server


def test_sync_sdk_langchain_and_llama_index_clients(live):
    client = openai.OpenAI(api_key=SECRET, base_url=live.url, max_retries=0)
    assert client.chat.completions.create(model="routoo", messages=QUESTION).model == STRONG
    words = [c.choices[0].delta.content for c in client.chat.completions.create(model="routoo", messages=QUESTION, stream=True)
             if c.choices and c.choices[0].delta.content]
    assert "".join(words) == "Paris is the capital of France."

    chat = ChatOpenAI(model="routoo/cheap", api_key=SECRET, base_url=live.url, max_retries=0, stream_usage=True)
    reply = chat.invoke("What is the capital of France?")
    assert reply.response_metadata["model_name"] == CHEAP and reply.usage_metadata["total_tokens"] == USAGE["total_tokens"]
    assert "".join(c.content for c in chat.stream("What is the capital of France?")) == "Paris is the capital of France."
    called = chat.bind_tools([City]).invoke("Make a city")
    assert called.tool_calls[0]["name"] == "City"
    assert chat.with_structured_output(City).invoke("Describe Paris") == City(**PARIS)

    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="routoo", api_base=live.url, api_key=SECRET, is_chat_model=True, is_function_calling_model=True,
                     context_window=8192, max_retries=0)
    assert llm.chat([ChatMessage(role="user", content="Capital of France?")]).message.content == "Paris is the capital of France."
    assert "".join(r.delta for r in llm.stream_chat([ChatMessage(role="user", content="Capital?")])) == "Paris is the capital of France."


async def test_a_client_leaving_mid_stream_releases_the_hold():
    app = make_app({name: SlowModel(delay_s=0.2) for name in TRIO})
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {SECRET}"}) as client:
            async with client.stream("POST", "/chat/completions", json={"model": "routoo", "messages": QUESTION, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break
                assert budget(app).reserved_usd > 0
        deadline = time.monotonic() + 10
        while budget(app).reserved_usd > 0:  # the server notices the closed socket, cancels and settles
            assert time.monotonic() < deadline, "the hold of an abandoned stream was not released"
            await asyncio.sleep(0.05)
        assert budget(app).spent_usd > 0  # the words already sent are charged


async def test_json_object_mode_goes_to_a_structured_output_model():
    fake = FakeOpenAI(structured={"ok": True})
    router = capable_router()
    for spec in router.pool.models:
        spec.supports_structured_output = spec.name == MID
    app = make_app(upstreams(**{MID: fake}), router=router)
    completion = await sdk(app).chat.completions.create(model="routoo", messages=QUESTION, response_format={"type": "json_object"})
    assert completion.model == MID and json.loads(completion.choices[0].message.content) == {"ok": True}
    assert fake.requests[-1]["response_format"] == {"type": "json_object"}


# ----- the command line and the README
def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routoo_shared.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_cli_adds_keys_and_refuses_an_open_server_off_loopback(tmp_path):
    config = tmp_path / "routoo.yaml"
    added = cli("keys", "add", "team-a", "--config", str(config), "--budget-usd", "50", "--rpm", "60")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("rt-") and secret not in config.read_text() and digest(secret) in config.read_text()
    refused = cli("serve", "--pool", "local", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0 with no API keys" in refused.stderr


@pytest.mark.slow
def test_serving_readme_examples_run_as_written(tmp_path):
    """`routoo serve --pool local`, then the README's curl and openai blocks (on a free port instead of 8000)."""
    from tests.test_readme import blocks

    (serve, curl), python, config = [c for lang, _, c in blocks("serving") if lang == "bash"], \
        next(c for lang, _, c in blocks("serving") if lang == "python"), next(c for lang, _, c in blocks("serving") if lang == "yaml")
    (tmp_path / "routoo.yaml").write_text(config)
    loaded = ServerConfig.load(tmp_path / "routoo.yaml")
    assert [m.spec.name for m in loaded.pool][-1] == "llama-3.1-8b-vllm" and set(loaded.presets) == {"cheap", "best"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert serve.strip() == "routoo serve --pool local"
    server = subprocess.Popen([sys.executable, "-m", "routoo_shared.cli", "serve", "--pool", "local", "--port", str(port)],
                              env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, "routoo serve --pool local did not start"
                time.sleep(1)
        answer = json.loads(subprocess.run(curl.replace("8000", str(port)), shell=True, capture_output=True, text=True,
                                           timeout=300, check=True).stdout)
        assert answer["model"] in ("smollm2-135m-instruct", "gemma-3-270m") and answer["choices"][0]["message"]["content"]
        (tmp_path / "client.py").write_text(python.replace("8000", str(port)))
        printed = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert lines[0].split()[0] in ("smollm2-135m-instruct", "gemma-3-270m") and "predicted quality" in lines[2]
        assert "total_tokens" in printed.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_pool_model_that_cannot_be_built_is_named(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = ServerConfig.from_data({"pool": [{"name": "gpt-4o-mini", "provider": "openai", "prior_like": CHEAP}]})
    with pytest.raises(ValueError, match="pool model 'gpt-4o-mini': cannot build its chat model"):
        create_app(config)
    unset = ServerConfig.from_data({"pool": [{"name": "mine", "price_in_per_mtok": 1, "price_out_per_mtok": 1, "context_window": 8192,
                                              "prior_like": CHEAP, "openai_compatible": {"base_url": "http://127.0.0.1:9/v1",
                                                                                         "api_key_env": "ROUTOO_TEST_UNSET"}}]})
    with pytest.raises(ValueError, match="ROUTOO_TEST_UNSET is not set"):
        create_app(unset)
