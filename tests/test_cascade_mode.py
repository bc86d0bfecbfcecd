"""Cascades as a routing mode in both integrations: the first model answers whole, stands or escalates;
both calls are charged; only the final model's answer is streamed. The plan is fixed here (the
policy's own planning is tested in test_cascade.py) so each path is deterministic."""

from __future__ import annotations

import asyncio
import math

import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from langchain_routoo import RoutooBudget, RoutooChatModel
from llama_index_routoo import RoutooLLM
from routoo_shared.routing.cascade import AgreementModel, CascadePlan, CascadePolicy, EvidenceModel
from tests.conftest import TRIO, ScriptedChatModel, trio_router

FIRST, TARGET = TRIO[0], TRIO[-1]
LONG = "a long and careful answer that works through the question step by step and lands on it"


def plan() -> CascadePlan:
    """Answers shorter than ~10 tokens read as doubtful (escalate); longer ones stand."""
    evidence = EvidenceModel(model=FIRST, context_coef=[0.0], edges=[0.0], p_correct=[0.1, 0.8, 0.1],
                             p_wrong=[0.8, 0.1, 0.1], fit_auc=0.8)
    return CascadePlan(first=FIRST, target=TARGET, expected_signal=math.log1p(10), first_quality=0.5,
                       target_quality=0.9, target_cost_weight=0.2, expected_quality=0.8, expected_cost_usd=1e-5,
                       escalation_probability=0.5, evidence=evidence)


def pair_plan() -> CascadePlan:
    """Ask the two cheaper models; their agreeing final answers stand, disagreeing ones escalate."""
    evidence = AgreementModel(model=FIRST, second=TRIO[1], p_correct=[0.9, 0.04, 0.03, 0.03],
                              p_wrong=[0.1, 0.7, 0.1, 0.1], fit_auc=0.9)
    return CascadePlan(first=FIRST, second=TRIO[1], target=TARGET, expected_signal=0.0, first_quality=0.5,
                       target_quality=0.9, target_cost_weight=0.2, expected_quality=0.8, expected_cost_usd=1e-5,
                       escalation_probability=0.5, evidence=evidence)


def planned_router(make_plan=plan):
    router = trio_router()
    route = router.route

    def with_plan(*args, **kwargs):
        assert kwargs.pop("cascade") is not None
        return route(*args, **kwargs).model_copy(update={"cascade": make_plan()})

    router.route = with_plan
    return router


class Wordy(ScriptedChatModel):
    """Reports one output token a word, so an answer's length is what the cascade reads."""

    def _message(self, messages, kwargs):
        message = super()._message(messages, kwargs)
        words = len(message.content.split())
        return message.model_copy(update={"usage_metadata": {"input_tokens": 10, "output_tokens": words,
                                                             "total_tokens": 10 + words}})


def routoo(first_reply: str, budget=None, **settings) -> RoutooChatModel:
    models = {name: Wordy(name=name, reply=f"answer from {name}") for name in TRIO}
    models[FIRST].reply = first_reply
    policy = CascadePolicy.load()  # enables the mode; the router above fixes the plan
    return RoutooChatModel(models=models, router=planned_router(), cascade=policy, budget=budget, **settings)


def call(chat: RoutooChatModel, path: str) -> list:
    """The messages (or chunks) one call on ``path`` gives."""
    async def consume():
        if path == "ainvoke":
            return [await chat.ainvoke("hello")]
        return [c async for c in chat.astream("hello")]

    if path in ("ainvoke", "astream"):
        return asyncio.run(consume())
    return [chat.invoke("hello")] if path == "invoke" else list(chat.stream("hello"))


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
def test_a_convincing_first_answer_stands_and_a_doubtful_one_escalates(path):
    for reply, answered_by, escalated in ((LONG, FIRST, False), ("no", TARGET, True)):
        budget = RoutooBudget(total_usd=1.0)
        chunks = call(routoo(reply, budget), path)
        record = chunks[0].response_metadata["routoo"]
        assert record["answered_by"] == answered_by and record["cascade_outcome"]["escalated"] is escalated
        assert "".join(c.text for c in chunks) == (LONG if not escalated else f"answer from {TARGET}")
        assert budget.calls == (2 if escalated else 1) and budget.reserved_usd == 0


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
def test_two_cheap_models_that_agree_answer_and_disagreeing_ones_escalate(path):
    for second_reply, answered_by in (("It is 42.", FIRST), ("It is 7.", TARGET)):
        budget = RoutooBudget(total_usd=1.0)
        chat = routoo("So the answer is 42", budget)
        chat.router = planned_router(pair_plan)
        chat.models[TRIO[1]].reply = second_reply
        chunks = call(chat, path)
        outcome = chunks[0].response_metadata["routoo"]["cascade_outcome"]
        assert outcome["second"] == TRIO[1] and outcome["final_answers"] == ["42", second_reply[6:-1]]
        assert chunks[0].response_metadata["routoo"]["answered_by"] == answered_by
        expected = "So the answer is 42" if answered_by == FIRST else f"answer from {TARGET}"
        assert "".join(c.text for c in chunks) == expected  # only the final answer is streamed
        assert budget.calls == (2 if answered_by == FIRST else 3) and budget.reserved_usd == 0


def test_a_failing_or_unaffordable_second_model_escalates():
    chat = routoo("So the answer is 42")
    chat.router = planned_router(pair_plan)
    chat.models[TRIO[1]].error = "connection reset"
    message = chat.invoke("hello")
    record = message.response_metadata["routoo"]
    assert record["answered_by"] == TARGET and record["cascade_outcome"]["failed"] == TRIO[1]
    budget = RoutooBudget(total_usd=1.0)
    chat = routoo("So the answer is 42", budget)
    chat.router = planned_router(pair_plan)
    chat.router.pool[TRIO[1]].price_in_per_mtok = 1e9  # the second call cannot be held
    record = chat.invoke("hello").response_metadata["routoo"]
    assert record["cascade_outcome"]["escalated"] and record["answered_by"] != TRIO[1]
    assert [a["kind"] for a in record["attempts"]][:1] == ["budget"] and budget.reserved_usd == 0


def test_a_failing_first_model_escalates_and_keeps_its_attempt():
    chat = routoo(LONG)
    chat.models[FIRST].error = "connection reset"
    message = chat.invoke("hello")
    assert message.response_metadata["model_name"] == TARGET
    assert message.response_metadata["routoo"]["attempts"][0]["model"] == FIRST


class Writer(CustomLLM):
    reply: str = "ok"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=8192, num_output=256)

    @llm_completion_callback()
    def complete(self, prompt, formatted=False, **kwargs):
        return CompletionResponse(text=self.reply)

    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        def pieces():
            text = ""
            for word in self.reply.split(" "):
                text += word + " "
                yield CompletionResponse(text=text, delta=word + " ")

        return pieces()


@pytest.mark.parametrize("reply, answered_by", [(LONG, FIRST), ("no", TARGET)])
def test_llama_index_cascades_on_complete_chat_and_streams(reply, answered_by):
    llms = {name: Writer(reply=f"answer from {name}") for name in TRIO}
    llms[FIRST].reply = reply
    budget = RoutooBudget(total_usd=1.0)
    llm = RoutooLLM(llms=llms, router=planned_router(), cascade=CascadePolicy.load(), budget=budget)
    assert llm.complete("hello").additional_kwargs["model_name"] == answered_by
    chunks = list(llm.stream_chat([ChatMessage(role="user", content="hello")]))
    assert {c.additional_kwargs["model_name"] for c in chunks} == {answered_by}
    assert chunks[-1].message.content.strip() == (reply if answered_by == FIRST else f"answer from {TARGET}")
    assert budget.reserved_usd == 0 and budget.calls == (2 if answered_by == FIRST else 4)


@pytest.mark.parametrize("second_reply, answered_by", [("It is 42.", FIRST), ("It is 7.", TARGET)])
def test_llama_index_asks_a_pair_first(second_reply, answered_by):
    llms = {name: Writer(reply=f"answer from {name}") for name in TRIO}
    llms[FIRST].reply, llms[TRIO[1]].reply = "So the answer is 42", second_reply
    budget = RoutooBudget(total_usd=1.0)
    llm = RoutooLLM(llms=llms, router=planned_router(pair_plan), cascade=CascadePolicy.load(), budget=budget)
    chunks = list(llm.stream_chat([ChatMessage(role="user", content="hello")]))
    assert {c.additional_kwargs["model_name"] for c in chunks} == {answered_by}
    assert chunks[-1].additional_kwargs["routoo"]["cascade_outcome"]["second"] == TRIO[1]
    assert budget.reserved_usd == 0 and budget.calls == (2 if answered_by == FIRST else 3)
