"""Labelling end to end with the real local models as pool and judge, on a small slice."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from routoo_shared.data.formats import Question, bundled, load_questions
from routoo_shared.data.labeling import (
    Calls,
    FunctionGrader,
    Judge,
    Labeler,
    LabelingError,
    LLMJudge,
    Match,
    PairwisePreference,
)
from routoo_shared.local.llm import local_pool


def questions(n: int) -> list[Question]:
    return [q.model_copy(update={"results": {}}) for q in load_questions(bundled("mmlu_routellm"), split="dev")[:n]]


@pytest.mark.slow
def test_local_pool_labelled_by_match_and_by_a_local_judge_then_resumed(tmp_path):
    from langchain_routoo.local import LocalChatModel

    pool = local_pool()
    models = {name: LocalChatModel(model=name, max_tokens=4) for name in pool.names}
    cache = tmp_path / "answers.jsonl"
    slice_ = questions(2)

    report = Labeler(pool, Match(pattern=r"\b([A-D])\b"), models=models, cache=cache, max_concurrency=2).label(slice_)
    assert report.new_calls == 4 and report.cached_calls == 0 and not report.failures
    assert set(report.cost_usd) == set(pool.names) and all(usd > 0 for usd in report.cost_usd.values())
    for question in report.questions:
        assert set(question.results) == set(pool.names)
        assert all(r.score in (0.0, 1.0) and r.output_tokens > 0 and r.latency_s > 0 for r in question.results.values())

    judge = Judge(model=LocalChatModel(model="gemma-3-270m", max_tokens=3), name="gemma-judge", spec=pool["gemma-3-270m"])
    judged = Labeler(pool, LLMJudge(judge=judge), models=models, cache=cache, max_concurrency=2).label(slice_)
    assert judged.cached_calls == 4 and judged.new_calls == 4  # answers from the cache, one verdict each
    assert set(judged.cost_usd) == {"gemma-judge"} and judged.cost_usd["gemma-judge"] > 0
    graded = [r.score for q in judged.questions for r in q.results.values()]
    assert len(graded) + judged.ungraded == 4 and all(0.0 <= s <= 1.0 for s in graded)

    again = Labeler(pool, LLMJudge(judge=judge), models=models, cache=cache, max_concurrency=2).label(slice_)
    assert again.new_calls == 0 and again.total_cost_usd == 0  # resumed entirely from the cache
    assert len(cache.read_text().splitlines()) == 8


class Flaky(GenericFakeChatModel):
    """Fails the first ``failures`` calls with a provider-like error, then answers."""

    failures: int = 0

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("503 from the provider")
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_retries_then_records_failures_and_keeps_going(tmp_path):
    pool = local_pool()
    models = {
        "smollm2-135m-instruct": Flaky(messages=iter([AIMessage(content="B")] * 4), failures=1),
        "gemma-3-270m": Flaky(messages=iter([]), failures=99),
    }
    labeler = Labeler(pool, Match(pattern=r"\b([A-D])\b"), models=models, max_retries=1, retry_wait_s=0, progress=False)
    report = labeler.label([Question(id="q1", prompt="2+2?\nA. 3\nB. 4\nAnswer:", answer="B")])
    assert report.questions[0].results["smollm2-135m-instruct"].score == 1.0
    assert "gemma-3-270m" not in report.questions[0].results
    assert report.failures == ["q1 / gemma-3-270m: ConnectionError: 503 from the provider"]


def test_graders_score_in_unit_interval(tmp_path):
    question = Question(id="q", prompt="Capital of France?", answer="Paris")
    calls = Calls(None)
    assert asyncio.run(Match().score(question, " paris. ", None, calls)) == 1.0
    assert asyncio.run(Match(pattern=r"is (\w+)").score(question, "It is Rome", None, calls)) == 0.0
    grader = FunctionGrader(function=lambda q, a: "Paris" in a)
    assert asyncio.run(grader.score(question, "Paris, of course", None, calls)) == 1.0
    with pytest.raises(LabelingError, match="scores are in \\[0, 1\\]"):
        asyncio.run(FunctionGrader(function=lambda q, a: 3).score(question, "x", None, calls))
    with pytest.raises(LabelingError, match="no reference 'answer'"):
        asyncio.run(Match().score(Question(id="q", prompt="x"), "x", None, calls))


def test_pairwise_counts_both_orders(tmp_path):
    pool = local_pool()
    verdicts = iter([AIMessage(content="A"), AIMessage(content="A")])  # position bias: always "A"
    judge = Judge(model=GenericFakeChatModel(messages=verdicts), name="biased")
    models = {n: GenericFakeChatModel(messages=iter([AIMessage(content=f"answer of {n}")])) for n in pool.names}
    labeler = Labeler(pool, PairwisePreference(judge=judge), models=models, reference_model="gemma-3-270m", progress=False)
    results = labeler.label([Question(id="q", prompt="Tell me a joke.")]).questions[0].results
    assert results["smollm2-135m-instruct"].score == 0.5  # wins as A, loses as B: no preference
    assert results["gemma-3-270m"].score == 0.5  # the reference against itself


def test_unknown_models_are_named():
    with pytest.raises(LabelingError, match=r"models \['gpt-17'\] are not in the pool"):
        Labeler(local_pool(), Match(), models={"gpt-17": object()})
    with pytest.raises(KeyError, match="unknown model 'gpt-17'"):
        Labeler(local_pool(), Match(), models={n: object() for n in local_pool().names}, reference_model="gpt-17")


def test_cache_lines_are_json(tmp_path):
    calls = Calls(tmp_path / "c.jsonl")
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hi")]))
    answer = asyncio.run(calls.ask("m", model, None, [{"role": "user", "content": "hello"}]))
    record = json.loads((tmp_path / "c.jsonl").read_text())
    assert record["text"] == answer.text == "hi" and record["key"] == Calls.key("m", [{"role": "user", "content": "hello"}])


def test_a_provider_model_that_cannot_be_created_is_named(monkeypatch):
    from routoo_shared.data.labeling import chat_model_for
    from routoo_shared.routing.pool import ModelSpec

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LabelingError, match="cannot create a chat model for 'gpt-4o-mini' \\(provider 'openai'\\)"):
        chat_model_for(ModelSpec(name="gpt-4o-mini", provider="openai"))


def test_llama_index_llms_are_labelled_too(tmp_path):
    from llama_index.core.llms import MockLLM

    pool = local_pool()
    models = {name: MockLLM() for name in pool.names}  # echoes the prompt: a real LlamaIndex LLM, offline
    grader = FunctionGrader(function=lambda q, answer: "Paris" in answer)
    report = Labeler(pool, grader, models=models, progress=False).label([Question(id="q", prompt="Is Paris in France?")])
    results = report.questions[0].results
    assert set(results) == set(pool.names) and all(r.score == 1.0 and r.output_tokens > 0 for r in results.values())
    assert report.total_cost_usd > 0
