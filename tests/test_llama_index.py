"""RoutooLLM as LlamaIndex users run it: over real OpenAI LLM objects served by an in-process endpoint,
over the real local models, in agents, chat and query engines, synthesizers and ingestion pipelines;
scripted LLMs where a test is about Routoo's own logic (budget, timeouts, fallback, cancellation)."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, ImageBlock, LLMMetadata
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation import root_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent, LLMCompletionEndEvent
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.response_synthesizers import get_response_synthesizer
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI
from pydantic import BaseModel

from llama_index_routoo import LocalGGUFLLM, MiniLMEmbedding, RoutooBudget, RoutooLLM
from llama_index_routoo.llm import RoutedCallEvent
from routoo_shared.routing.fallback import AllModelsFailedError
from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router
from routoo_shared.routing.selector import Constraints
from tests.conftest import TRIO, trio_router
from tests.exit_paths import assert_burst_overshoots_by_at_most_one_call, join_abandoned_attempts, run_exit_paths
from tests.fake_openai import FakeOpenAI

REPLY = "Paris is the capital of France."


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Person(BaseModel):
    name: str
    age: int


def openai_llm(endpoint: FakeOpenAI) -> OpenAI:
    """LlamaIndex's OpenAI class on the in-process endpoint, asking for usage on streams too."""
    return OpenAI(
        model="gpt-4o-mini", api_key="sk-test", max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
        http_client=httpx.Client(transport=endpoint.transport()),
        async_http_client=httpx.AsyncClient(transport=endpoint.transport()),
    )


def openai_routoo(capable=TRIO, window: int | None = None, **settings) -> tuple[RoutooLLM, dict[str, FakeOpenAI]]:
    """RoutooLLM over three real OpenAI LLM objects, each served by its own endpoint; ``capable`` models
    support tools and structured output; ``window`` narrows every spec's context window."""
    router = trio_router()
    for spec in router.pool.models:
        spec.supports_tools = spec.supports_structured_output = spec.name in capable
        if window is not None:
            spec.context_window = window
    endpoints = {name: FakeOpenAI(tool_args={"a": 2, "b": 3}, structured={"name": "Ada", "age": 36}) for name in TRIO}
    llms = {name: openai_llm(endpoint) for name, endpoint in endpoints.items()}
    return RoutooLLM(llms=llms, router=router, **settings), endpoints


class Events(BaseEventHandler):
    """Instrumentation events seen while it is attached to the root dispatcher."""

    seen: list = []

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.seen.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.seen if isinstance(e, kind)]


@pytest.fixture
def events():
    handler = Events(seen=[])
    root_dispatcher.add_event_handler(handler)
    yield handler
    root_dispatcher.event_handlers.remove(handler)


def cost(router: Router, name: str, usage: tuple[int, int]) -> float:
    return router.pool[name].cost(*usage)


# ----- real OpenAI LLM objects over an in-process endpoint
async def test_every_call_kind_and_chunk_names_the_answering_llm_and_settles_its_usage(events):
    budget = RoutooBudget(total_usd=1.0)
    routoo, endpoints = openai_routoo(budget=budget)
    messages = [ChatMessage(role="user", content="What is the capital of France?")]
    responses = [routoo.chat(messages), routoo.complete("The capital of France is"), await routoo.achat(messages),
                 await routoo.acomplete("The capital of France is")]
    streams = [list(routoo.stream_chat(messages)), list(routoo.stream_complete("Count to three:")),
               [c async for c in await routoo.astream_chat(messages)],
               [c async for c in await routoo.astream_complete("Count to three:")]]
    for response in responses + [chunk for stream in streams for chunk in stream]:
        name = response.additional_kwargs["model_name"]
        assert name in TRIO and response.additional_kwargs["routoo"]["answered_by"] == name
    assert all(len(stream) > 3 for stream in streams) and streams[0][-1].message.content == REPLY
    answered = [r.additional_kwargs["model_name"] for r in responses] + [s[0].additional_kwargs["model_name"] for s in streams]
    assert budget.spent_usd == pytest.approx(sum(cost(routoo.router, name, (11, 7)) for name in answered))
    assert budget.reserved_usd == 0 and budget.calls == 8
    assert [e.record["answered_by"] for e in events.of(RoutedCallEvent)] == answered[:4] + answered[4:]


async def test_prompt_template_calls_run_on_the_chosen_llm_and_settle_its_usage():
    budget = RoutooBudget(total_usd=1.0)
    routoo, _ = openai_routoo(budget=budget)
    prompt = PromptTemplate("Name the capital of {country}.")
    assert routoo.predict(prompt, country="France") == REPLY
    assert await routoo.apredict(prompt, country="France") == REPLY
    assert "".join(routoo.stream(prompt, country="France")) == REPLY
    assert "".join([d async for d in await routoo.astream(prompt, country="France")]) == REPLY
    name = routoo.router.route(prompt.format_messages(country="France")).model
    assert budget.spent_usd == pytest.approx(4 * cost(routoo.router, name, (11, 7))) and budget.reserved_usd == 0


def test_tool_options_reach_the_chosen_llm_and_its_own_validation_applies():
    routoo, endpoints = openai_routoo()
    tools = [FunctionTool.from_defaults(add), FunctionTool.from_defaults(multiply)]
    response = routoo.chat_with_tools(tools, user_msg="What is 2 times 3?", tool_choice="multiply", strict=True, tool_required=True)
    request = endpoints[response.additional_kwargs["model_name"]].requests[-1]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "multiply"}}
    assert request["parallel_tool_calls"] is False and all(t["function"]["strict"] for t in request["tools"])
    assert [c.tool_name for c in routoo.get_tool_calls_from_response(response)] == ["multiply"]
    for endpoint in endpoints.values():
        endpoint.parallel = True  # it calls both tools; OpenAI's own validation keeps one unless parallel calls are allowed
    assert routoo.predict_and_call(tools, user_msg="2+3 and 2*3?").response == "5"
    assert routoo.predict_and_call(tools, user_msg="2+3 and 2*3?", allow_parallel_tool_calls=True).response == "5\n\n6"
    chunks = list(routoo.stream_chat_with_tools(tools, user_msg="What is 2 + 3?"))
    assert all(isinstance(routoo.get_tool_calls_from_response(c, error_on_no_tool_call=False), list) for c in chunks)
    assert [c.tool_name for c in routoo.get_tool_calls_from_response(chunks[-1])] == ["add", "multiply"]


def test_tool_calls_go_only_to_tool_capable_llms():
    routoo, endpoints = openai_routoo(capable=[TRIO[0]], quality_cost_tradeoff=0.0)
    response = routoo.chat_with_tools([FunctionTool.from_defaults(add)], user_msg="What is 2 + 3?")
    assert response.additional_kwargs["model_name"] == TRIO[0]
    assert routoo.metadata.is_function_calling_model
    assert not openai_routoo(capable=[TRIO[0]], denied_models=[TRIO[0]])[0].metadata.is_function_calling_model


@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_calls_a_tool_through_routoo(streaming):
    routoo, endpoints = openai_routoo()
    agent = FunctionAgent(tools=[add], llm=routoo, streaming=streaming, initial_tool_choice="add")
    assert str(await agent.run("What is 2 + 3?")) == REPLY
    last = [e.requests[-1] for e in endpoints.values() if e.requests][-1]["messages"][-1]
    assert (last["role"], last["content"]) == ("tool", "5")  # the tool ran and its result went back


async def test_react_agent_reasons_through_routoo():
    def react(body: dict) -> str:
        if any("Observation:" in str(m.get("content")) for m in body["messages"]):
            return "Thought: I can answer without using any more tools.\nAnswer: The sum is 5."
        return 'Thought: I need a tool.\nAction: add\nAction Input: {"a": 2, "b": 3}'

    routoo, endpoints = openai_routoo()
    for endpoint in endpoints.values():
        endpoint.reply = react
    assert "The sum is 5." in str(await ReActAgent(tools=[add], llm=routoo).run("What is 2 + 3?"))


async def test_structured_prediction_uses_the_chosen_llms_own_structured_output(events):
    budget = RoutooBudget(total_usd=1.0)
    routoo, endpoints = openai_routoo(capable=[TRIO[1]], budget=budget)
    prompt = PromptTemplate("Extract the person: {text}")
    person = routoo.structured_predict(Person, prompt, text="Ada is 36")
    assert person == Person(name="Ada", age=36)
    assert endpoints[TRIO[1]].requests[-1]["response_format"]["type"] == "json_schema"  # OpenAI's own path
    assert await routoo.astructured_predict(Person, prompt, text="Ada is 36") == person
    assert list(routoo.stream_structured_predict(Person, prompt, text="Ada is 36"))[-1] == person
    assert [p async for p in await routoo.astream_structured_predict(Person, prompt, text="Ada is 36")][-1] == person
    structured = routoo.as_structured_llm(Person)
    assert structured.chat([ChatMessage(role="user", content="Ada is 36")]).raw == person
    assert list(structured.stream_chat([ChatMessage(role="user", content="Ada is 36")]))[-1].raw == person
    assert {e.record["answered_by"] for e in events.of(RoutedCallEvent)} == {TRIO[1]}
    assert len(endpoints[TRIO[1]].requests) == 6 and not endpoints[TRIO[0]].requests
    assert budget.spent_usd == pytest.approx(6 * cost(routoo.router, TRIO[1], (11, 7))) and budget.reserved_usd == 0
    partials = routoo.stream_structured_predict(Person, prompt, text="Ada is 36")
    next(partials)
    partials.close()  # abandoned: the hold settles at once
    assert budget.reserved_usd == 0 and budget.calls == 7


def test_condense_plus_context_chat_engine():
    routoo, endpoints = openai_routoo()
    documents = [Document(text="The Eiffel Tower was finished in 1889."), Document(text="Routoo routes prompts.")]
    index = VectorStoreIndex.from_documents(documents, embed_model=MiniLMEmbedding())
    engine = index.as_chat_engine(chat_mode="condense_plus_context", llm=routoo)
    assert str(engine.chat("When was the Eiffel Tower finished?")) == REPLY
    assert "".join(engine.stream_chat("And where is it?").response_gen) == REPLY
    bodies = [json.dumps(r) for e in endpoints.values() for r in e.requests]
    assert any("1889" in body for body in bodies)  # the retrieved context reached the routed LLM


def test_tree_summarize_packs_prompts_every_eligible_llm_can_take():
    routoo, endpoints = openai_routoo(window=1024)
    for endpoint in endpoints.values():
        endpoint.max_prompt_tokens = 1024  # the provider rejects longer prompts
    # the specs narrow OpenAI's own 128k window; reported in the plain tokens PromptHelper counts
    assert routoo.metadata.context_window == min(routoo.router.pool[n].packable_window() for n in routoo.llms) < 1024
    chunks = [f"Paragraph {i}. " + "The quick brown fox jumps over the lazy dog. " * 30 for i in range(6)]
    answer = get_response_synthesizer(llm=routoo, response_mode="tree_summarize").get_response("Summarise", chunks)
    assert answer == REPLY
    assert sum(len(e.requests) for e in endpoints.values()) > 1  # packed into several prompts


def test_each_routed_call_appears_once_to_callbacks_and_instrumentation(events):
    routoo, _ = openai_routoo()
    counter = TokenCountingHandler()
    routoo.callback_manager = CallbackManager([counter])  # what Settings and query engines do
    messages = [ChatMessage(role="user", content="Hello?")]
    routoo.chat(messages)
    list(routoo.stream_chat(messages))
    routoo.predict(PromptTemplate("Say {what}."), what="hello")
    assert len(counter.llm_token_counts) == 3
    assert [c.prompt_token_count for c in counter.llm_token_counts] == [11, 11, 11]
    assert counter.total_llm_token_count == 3 * 18
    assert len(events.of(LLMChatEndEvent)) == 3 and len(events.of(RoutedCallEvent)) == 3
    assert {e.model_dict["model_name"] for e in events.of(LLMChatStartEvent)} == {"gpt-4o-mini"}  # the answering LLM


# ----- what RoutooLLM tells LlamaIndex about itself
class WindowLLM(CustomLLM):
    """A completion-only LLM with its own window and output size; records the prompts it gets."""

    window: int = 1024
    out: int = -1
    seen: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.window, num_output=self.out)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.seen.append(prompt if formatted else self.completion_to_prompt(prompt))
        return CompletionResponse(text="a summary")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        yield self.complete(prompt, formatted)


def test_metadata_is_what_every_eligible_llm_can_take():
    router = trio_router()
    router.pool[TRIO[0]].context_window = 512  # a spec narrows its LLM's window
    llms = {TRIO[0]: WindowLLM(window=4096), TRIO[1]: WindowLLM(window=2000, out=300), TRIO[2]: WindowLLM(window=100_000, out=200)}
    routoo = RoutooLLM(llms=llms, router=router)
    assert router.pool[TRIO[0]].context_window == 512 and routoo.metadata.context_window == router.pool[TRIO[0]].packable_window()
    assert (routoo.metadata.num_output, routoo.metadata.is_chat_model) == (200, False)
    assert [spec.context_window for spec in routoo.router.pool.models] == [512, 2000, 100_000]  # routing honours them too
    without_first = RoutooLLM(llms=llms, router=router, denied_models=[TRIO[0]])
    assert without_first.router.pool[TRIO[1]].context_window == 2000
    assert without_first.metadata.context_window == without_first.router.pool[TRIO[1]].packable_window()
    router.pool[TRIO[2]].context_window = 10**6  # a spec never widens its LLM's window
    restricted = Router(router.pool, router.predictor, Constraints(allowed_models=[TRIO[2]]))
    widest = RoutooLLM(llms=llms, router=restricted)  # the router's own limits count
    assert widest.router.pool[TRIO[2]].context_window == 100_000
    assert widest.metadata.context_window == widest.router.pool[TRIO[2]].packable_window()


def test_completion_only_llms_format_their_own_prompts():
    def llama2(prompt: str) -> str:
        return f"[INST] {prompt} [/INST]"

    llms = {name: WindowLLM(seen=[], completion_to_prompt=llama2) for name in TRIO}
    routoo = RoutooLLM(llms=llms, router=trio_router())
    routoo.predict(PromptTemplate("Where is {city}?"), city="Paris")
    assert [llm.seen for llm in llms.values() if llm.seen] == [["[INST] Where is Paris? [/INST]"]]
    with pytest.raises(ValueError, match="on the pool LLMs"):
        RoutooLLM(llms=llms, router=trio_router(), system_prompt="Be brief.")


def test_capability_flags_choose_the_llm():
    router = trio_router()
    best = router.route("Explain relativity in one line.").model
    router.pool[best].supports_streaming = False
    routoo = RoutooLLM(llms={name: MockLLM(max_tokens=4) for name in TRIO}, router=router, max_fallbacks=0)
    assert routoo.complete("Explain relativity in one line.").additional_kwargs["model_name"] == best
    assert next(iter(routoo.stream_complete("Explain relativity in one line."))).additional_kwargs["model_name"] != best
    image = [ChatMessage(role="user", blocks=[ImageBlock(image=b"\x89PNG\r\n\x1a\n" + b"\0" * 32, image_mimetype="image/png")])]
    assert routoo.chat(image).additional_kwargs["model_name"] in TRIO  # an undeclared pool routes images on empty text
    router.pool[TRIO[0]].supports_vision = True
    for name in TRIO[1:]:
        router.pool[name].supports_vision = False  # declared text-only: images never go there
    routoo = RoutooLLM(llms=routoo.llms, router=router)
    assert routoo.chat(image).additional_kwargs["model_name"] == TRIO[0]


# ----- pickling and serialisation
def test_pickled_copy_routes_and_the_original_is_untouched():
    router = Router.from_directory(pool_names=TRIO, constraints=Constraints(quality_cost_tradeoff=0.5))
    routoo = RoutooLLM(llms={name: MockLLM(max_tokens=3) for name in TRIO}, router=router)
    before = dict(routoo.__dict__)
    copy = pickle.loads(pickle.dumps(routoo))
    assert routoo.__dict__ == before and routoo.complete("hello").text
    assert copy.complete("hello").additional_kwargs["model_name"] == routoo.complete("hello").additional_kwargs["model_name"]
    described = json.loads(routoo.to_json())
    assert described["class_name"] == "RoutooLLM" and described["router"]["directory"] == str(BUNDLED_PREDICTOR)
    assert described["router"]["pool"] == TRIO and described["router"]["constraints"] == {"quality_cost_tradeoff": 0.5}
    assert described["llms"][TRIO[0]]["class_name"] == "MockLLM"
    with pytest.raises(TypeError, match="its own budget"):
        pickle.dumps(RoutooLLM(llms=routoo.llms, router=routoo.router, budget=RoutooBudget(total_usd=1.0)))


@pytest.mark.slow
def test_ingestion_pipeline_with_two_worker_processes():
    from llama_index.core.extractors import TitleExtractor
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter

    routoo = RoutooLLM(llms={name: MockLLM(max_tokens=3) for name in TRIO}, router=trio_router())
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), TitleExtractor(llm=routoo, nodes=1)])
    documents = [Document(text=f"Document {i}. Routing picks a model for each prompt.") for i in range(4)]
    nodes = pipeline.run(documents=documents, num_workers=2)
    assert len(nodes) == 4 and all(node.metadata["document_title"] for node in nodes)


# ----- Routoo's own logic, with scripted LLMs
OUTCOMES = ("answer", "fail", "hang", "interrupt", "type_error")


class ScriptedLLM(CustomLLM):
    """A stand-in provider that does what ``plan`` says on each call (cycling): answers with usage,
    fails (``fail``, ``rate_limited``), hangs, is interrupted, or rejects a misspelt keyword."""

    plan: list[str] = ["answer"]
    reply: str = "scripted answer"
    output_tokens: int = 20
    delay_s: float = 0.0
    hang_s: float = 5.0
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=64)

    def _outcome(self) -> str:
        outcome = self.plan[self.calls % len(self.plan)]
        self.calls += 1
        return outcome

    def _answer(self, outcome: str) -> CompletionResponse:
        if outcome == "fail":
            raise ConnectionError("provider down")
        if outcome == "rate_limited":
            raise RateLimited("rate limited")
        if outcome == "type_error":
            raise TypeError("unexpected keyword argument 'temprature'")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        usage = {"prompt_tokens": 10, "completion_tokens": self.output_tokens}
        return CompletionResponse(text=self.reply, raw={"usage": usage})

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        outcome = self._outcome()
        if outcome == "hang":
            time.sleep(self.hang_s)
        return self._answer(outcome)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        outcome = self._outcome()
        await asyncio.sleep(self.hang_s if outcome == "hang" else self.delay_s)
        return self._answer(outcome)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        answer = self.complete(prompt)
        words = answer.text.split()
        for i, word in enumerate(words):
            yield CompletionResponse(text=" ".join(words[: i + 1]), delta=word)


class RateLimited(RuntimeError):
    status_code = 429


def scripted_routoo(plans: dict[str, list[str]] | None = None, hang_s: float = 5.0, **settings) -> RoutooLLM:
    plans = plans or {}
    llms = {name: ScriptedLLM(plan=plans.get(name, ["answer"]), reply=f"answer from {name}", hang_s=hang_s) for name in TRIO}
    return RoutooLLM(llms=llms, router=trio_router(), **settings)


async def test_budget_holds_are_settled_on_every_exit_path():
    budget = RoutooBudget(total_usd=1.0)
    routoo = scripted_routoo(budget=budget, hang_s=1.0)
    first = routoo.router.route("hello").model
    assert routoo.complete("hello").additional_kwargs["model_name"] == first
    assert budget.spent_usd == pytest.approx(cost(routoo.router, first, (10, 20)))
    routoo.stream_complete("hello")  # never iterated: nothing held, nothing called
    never = await routoo.astream_complete("hello")
    del never
    assert budget.reserved_usd == 0 and routoo.llms[first].calls == 1
    stream = routoo.stream_complete("hello")
    next(stream)
    stream.close()  # abandoned after one chunk
    stream = await routoo.astream_complete("hello")
    await anext(stream)
    await stream.aclose()
    routoo.llms[first].plan = ["interrupt"]
    with pytest.raises(KeyboardInterrupt):
        routoo.complete("hello")
    routoo.llms[first].plan = ["hang"]
    task = asyncio.create_task(routoo.acomplete("hello"))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    answered = routoo.complete("hello", timeout_s=0.3)  # the hanging LLM is cut off, the next one answers
    attempt = answered.additional_kwargs["routoo"]["attempts"][0]
    assert (attempt["model"], attempt["kind"]) == (first, "timeout")
    for llm in routoo.llms.values():
        llm.plan = ["fail"]
    with pytest.raises(AllModelsFailedError):
        routoo.complete("hello")
    join_abandoned_attempts()  # the timed-out attempt holds its worst case until its thread ends
    assert budget.reserved_usd == 0 and budget.spent_usd <= budget.total_usd


def test_1000_concurrent_calls_writing_past_num_output_overshoot_by_at_most_one_call():
    budget = RoutooBudget(total_usd=0.02)  # about 7 calls at their real cost
    routoo = scripted_routoo(budget=budget)
    for llm in routoo.llms.values():
        llm.output_tokens = 3000  # metadata says num_output=64: LlamaIndex's reservation, not a limit
        llm.delay_s = 0.05  # calls overlap
    assert_burst_overshoots_by_at_most_one_call(budget, routoo.acomplete, CompletionResponse, routoo.router.pool, TRIO, (10, 3000))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OUTCOMES + ("abandon", "unstarted")), min_size=1, max_size=6), st.booleans())
def test_any_mix_of_exit_paths_leaves_no_hold(steps, asynchronous):
    budget = RoutooBudget(total_usd=1.0)
    # asynchronously an interrupt arrives as a cancellation: the step hangs and its caller gives up
    plan = [("hang" if asynchronous and step == "interrupt" else step) for step in steps if step in OUTCOMES] or ["answer"]
    routoo = scripted_routoo({name: plan for name in TRIO}, hang_s=0.3, budget=budget, timeout_s=0.05, max_fallbacks=1)

    run_exit_paths(
        steps, asynchronous, routoo.complete, routoo.acomplete, routoo.stream_complete, routoo.astream_complete,
        interrupt_wait_s=0.04,
    )
    join_abandoned_attempts()
    assert budget.reserved_usd == 0 and budget.remaining_usd == pytest.approx(1.0 - budget.spent_usd)


def test_fallback_on_provider_errors_only_with_every_exception_kept():
    routoo = scripted_routoo(allowed_fails=1, cooldown_s=60)
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.llms[order[0]].plan, routoo.llms[order[1]].plan = ["fail"], ["rate_limited"]
    response = routoo.complete("hello")
    assert response.text == f"answer from {order[2]}"
    assert [a["kind"] for a in response.additional_kwargs["routoo"]["attempts"]] == ["provider", "rate_limit", None]
    assert routoo.complete("hello").text == f"answer from {order[2]}"  # the failed ones are cooling down
    assert [routoo.llms[name].calls for name in order] == [1, 1, 2]
    routoo.llms[order[2]].plan = ["type_error"]
    with pytest.raises(TypeError, match="temprature"):  # a programming error fails at once
        routoo.complete("hello")
    failing = scripted_routoo({name: ["fail"] for name in TRIO})
    with pytest.raises(AllModelsFailedError) as failure:
        failing.complete("hello")
    assert [type(e) for e in failure.value.errors] == [ConnectionError] * 3
    assert isinstance(failure.value.__cause__, ConnectionError)


async def test_async_routing_keeps_the_event_loop_free():
    routoo = scripted_routoo()
    await routoo.acomplete("warm-up")
    gaps, done = [0.0], False

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    answers = await asyncio.gather(*[routoo.acomplete(f"Question {i}: what is {i} squared?") for i in range(64)])
    done = True
    await beat
    assert len(answers) == 64 and all(a.text for a in answers)
    assert max(gaps) < 0.1  # routing 64 prompts on the loop would stall it for seconds


# ----- real local models
LOCAL_TIMEOUT_S = 300  # a first call loads the model (seconds on a busy machine)

@pytest.fixture(scope="module")
def local_routoo(local_router_fixture) -> RoutooLLM:
    llms = {name: LocalGGUFLLM(model=name, max_tokens=12) for name in local_router_fixture.pool.names}
    return RoutooLLM(llms=llms, router=local_router_fixture, timeout_s=LOCAL_TIMEOUT_S)


@pytest.mark.slow
def test_complete_chat_and_streams_with_real_local_models(local_routoo):
    specs = [local_routoo.router.pool[n] for n in local_routoo.llms]  # LocalGGUFLLM's own window (2048), not the spec's
    assert {s.context_window for s in specs} == {2048} and local_routoo.metadata.context_window == specs[0].packable_window()
    completion = local_routoo.complete("The capital of France is")
    assert completion.text.strip() and completion.additional_kwargs["model_name"] in local_routoo.llms
    chat = local_routoo.chat([ChatMessage(role="user", content="Say hello.")])
    assert chat.message.content.strip() and chat.additional_kwargs["routoo"]["answered_by"] == chat.additional_kwargs["model_name"]
    pieces = list(local_routoo.stream_chat([ChatMessage(role="user", content="Count to three.")]))
    assert all("routoo" in p.additional_kwargs for p in pieces) and pieces[-1].message.content.strip()
    assert "".join(p.delta or "" for p in local_routoo.stream_complete("Two plus two is")).strip()


@pytest.mark.slow
async def test_async_calls_with_real_local_models(local_routoo):
    assert (await local_routoo.achat([ChatMessage(role="user", content="Name a colour.")])).message.content.strip()
    assert (await local_routoo.acomplete("One, two,")).text.strip()
    pieces = [p async for p in await local_routoo.astream_chat([ChatMessage(role="user", content="Name an animal.")])]
    assert pieces and all(p.additional_kwargs["model_name"] in local_routoo.llms for p in pieces)


@pytest.mark.slow
def test_query_engine_over_local_documents(local_routoo):
    documents = [
        Document(text="Routoo routes each prompt to the cheapest model that will answer it well."),
        Document(text="The Eiffel Tower is in Paris and was finished in 1889."),
        Document(text="Photosynthesis turns light, water and carbon dioxide into sugar."),
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=MiniLMEmbedding())
    response = index.as_query_engine(llm=local_routoo, similarity_top_k=1).query("When was the Eiffel Tower finished?")
    assert "Eiffel" in response.source_nodes[0].node.get_content() and str(response).strip()


@pytest.mark.slow
def test_fallback_after_a_raising_llm_reaches_a_real_model(local_router_fixture):
    decision = local_router_fixture.route("What is the capital of France?")
    llms = {name: LocalGGUFLLM(model=name, max_tokens=8) for name in local_router_fixture.pool.names}
    llms[decision.model] = ScriptedLLM(plan=["rate_limited"])
    routoo = RoutooLLM(llms=llms, router=local_router_fixture, timeout_s=LOCAL_TIMEOUT_S)
    response = routoo.complete("What is the capital of France?")
    attempts = response.additional_kwargs["routoo"]["attempts"]
    assert attempts[0]["model"] == decision.model and "rate limited" in attempts[0]["error"]
    assert response.additional_kwargs["model_name"] != decision.model and response.text
