"""Answer-aware cascades: evidence reading, the plan's decision rule, validation, the evaluation row."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from routoo_shared.routing.cascade import (
    AnswerEvidence,
    CascadeError,
    CascadePolicy,
    EvidenceModel,
)
from routoo_shared.evaluation.cascades import cascade_curve, fit_policy
from routoo_shared.data.formats import bundled, load_questions
from routoo_shared.routing.answers import AnswerExtraction
from routoo_shared.evaluation.harness import Evaluation
from routoo_shared.routing.pool import ModelPool
from routoo_shared.routing.cascade import BUNDLED_POLICY
from routoo_shared.routing.router import Router

CHEAP, STRONG = "cheap", "strong"


def length_evidence(model: str, separation: float, seed: int = 0) -> EvidenceModel:
    """Right answers around 40 tokens, wrong ones longer by ``separation`` (log scale); 10% cut off when wrong."""
    rng = np.random.default_rng(seed)
    correct = rng.random(4000) < 0.5
    tokens = np.exp(np.log(40) + separation * (~correct) + 0.3 * rng.standard_normal(4000)).round()
    finished = correct | (rng.random(4000) > 0.1)
    context = np.full((4000, 1), 0.5)  # the prompt says nothing: the surprise is the length itself
    return EvidenceModel.fit(model, tokens, finished, correct.astype(float), context)


def policy(separation: float = 1.0, **settings) -> CascadePolicy:
    return CascadePolicy(context=[CHEAP], evidence={CHEAP: length_evidence(CHEAP, separation)}, **settings)


# prompt x (cheap, strong): the cheap model is a coin flip at a tenth of the strong one's price
QUALITY = np.array([[0.5, 0.9]])
COST = np.array([[1e-5, 1e-4]])
PRICE = 0.3 / 1e-4  # the strong model's cost is worth 0.3 quality units
CONTEXT = np.array([[0.5]])


def test_informative_answer_plans_a_cascade_and_reads_the_answer():
    (plan,) = policy().plans(QUALITY, COST, [CHEAP, STRONG], PRICE, CONTEXT)
    assert plan is not None and (plan.first, plan.target) == (CHEAP, STRONG)
    assert 0.2 < plan.escalation_probability < 0.8
    assert COST[0, 0] < plan.expected_cost_usd < COST[0, 0] + COST[0, 1]
    assert not plan.should_escalate("The answer is (B).")
    assert not plan.should_escalate(AnswerEvidence.read("The answer is (B).", output_tokens=30))
    assert plan.should_escalate(AnswerEvidence.read("Let me think step by step ...", output_tokens=400))
    assert plan.should_escalate(AnswerEvidence.read("The answer", output_tokens=40, finished=False))  # cut off
    assert plan.should_escalate("   ")  # an empty answer is no answer
    assert plan.posterior(AnswerEvidence(output_tokens=30)) > 0.5 > plan.posterior(AnswerEvidence(output_tokens=400))


def test_reading_cannot_raise_quality_on_average():
    model = length_evidence(CHEAP, 1.0)
    prior = np.array([0.1, 0.5, 0.85])
    posterior, frequencies = model.posterior(prior), model.predictive(prior)
    np.testing.assert_allclose((frequencies * posterior).sum(-1), prior, atol=1e-6)
    revised = model.revised(np.array([0.3, 0.9, 0.6]), prior)
    np.testing.assert_allclose((frequencies * revised).sum(-1), [0.3, 0.9, 0.6], atol=1e-6)


def test_no_cascade_without_information_or_room():
    names = [CHEAP, STRONG]
    assert policy(separation=0.0).plans(QUALITY, COST, names, PRICE, CONTEXT) == [None]  # lengths say nothing
    assert policy(min_gain=0.5).plans(QUALITY, COST, names, PRICE, CONTEXT) == [None]
    assert policy().plans(QUALITY, COST, names, PRICE, CONTEXT, ceiling=np.array([1e-4])) == [None]  # both calls
    assert policy(max_first_cost_share=0.05).plans(QUALITY, COST, names, PRICE, CONTEXT) == [None]
    infeasible = np.array([[True, False]])
    assert policy().plans(QUALITY, COST, names, PRICE, CONTEXT, feasible=infeasible) == [None]


def test_bad_input_is_named():
    evidence = length_evidence(CHEAP, 1.0)
    with pytest.raises(ValidationError):
        CascadePolicy(context=[CHEAP], evidence={CHEAP: evidence}, min_gain=-1)
    with pytest.raises(ValidationError):
        CascadePolicy(context=[CHEAP], evidence={CHEAP: evidence}, max_first_cost_share=0)
    with pytest.raises(ValidationError, match="model names"):
        CascadePolicy(context=[CHEAP], evidence={"other": evidence})
    with pytest.raises(ValidationError, match="context models"):
        CascadePolicy(context=[CHEAP, STRONG], evidence={CHEAP: evidence})
    with pytest.raises(ValidationError):
        AnswerEvidence(output_tokens=-1)
    with pytest.raises(CascadeError, match="at least 50"):
        EvidenceModel.fit(CHEAP, np.ones(10), np.ones(10, bool), np.ones(10), np.full((10, 1), 0.5))
    logprob_model = evidence.model_copy(update={"signal": "mean_logprob"})
    with pytest.raises(CascadeError, match="mean_logprob"):
        logprob_model.bin_of(AnswerEvidence(output_tokens=12), expected=0.0)
    with pytest.raises(CascadeError, match="no cascade policy"):
        CascadePolicy.load("/nonexistent/cascade.json")


def test_logprobs_are_read_when_the_policy_was_fitted_on_them():
    rng = np.random.default_rng(1)
    correct = rng.random(2000) < 0.5
    mean_logprob = np.where(correct, -0.1, -1.0) + 0.2 * rng.standard_normal(2000)
    model = EvidenceModel.fit(CHEAP, np.minimum(mean_logprob, 0), np.ones(2000, bool), correct.astype(float),
                              np.full((2000, 1), 0.5), signal="mean_logprob")
    (plan,) = CascadePolicy(context=[CHEAP], evidence={CHEAP: model}).plans(QUALITY, COST, [CHEAP, STRONG], PRICE, CONTEXT)
    assert not plan.should_escalate(AnswerEvidence.read("B", output_tokens=1, logprobs=[-0.05, -0.1]))
    assert plan.should_escalate(AnswerEvidence.read("B", output_tokens=1, logprobs=[-1.2, -0.9]))


@pytest.fixture(scope="module")
def bundled_router():
    return Router.from_directory(BUNDLED_POLICY.parent)  # the predictor the bundled policy was fitted for


@pytest.fixture(scope="module")
def dev_questions():
    return load_questions(bundled("mmlu_pro"), split="dev")[:500]


def test_policy_fitted_on_bundled_answers_reads_lengths_it_has(bundled_router, dev_questions):
    names = bundled_router.pool.names
    quality = bundled_router.predictor.predict([q.prompt for q in dev_questions], names)
    fitted = fit_policy(dev_questions, quality, names)
    assert "Phi-3-mini-4k-instruct" in fitted.evidence
    assert "gemini-1.5-pro-002" not in fitted.evidence  # its answers' lengths were not recorded
    assert "Meta-Llama-3-8B" not in fitted.evidence  # nearly every answer runs to the 256-token cap
    assert 0.55 < fitted.evidence["Phi-3-mini-4k-instruct"].fit_auc < 0.75


def test_router_attaches_plans_within_the_budget(bundled_router):
    open_pool = bundled_router.pool.subset([m for m in bundled_router.pool.names if not m.startswith("gemini")])
    router = Router(open_pool, bundled_router.predictor)
    bundled_policy = CascadePolicy.load()
    prompt = "Which enzyme unwinds DNA during replication?\nA. ligase\nB. helicase\nC. primase\nD. polymerase\nAnswer:"
    assert router.route(prompt).cascade is None  # no policy, no plan
    decision = router.route(prompt, cascade=bundled_policy, quality_cost_tradeoff=0.3)
    plan = decision.cascade
    assert plan is not None and plan.first in router.pool.names and plan.target in router.pool.names
    assert router.pool[plan.first].price_out_per_mtok < router.pool[plan.target].price_out_per_mtok
    assert "evidence" not in decision.model_dump()["cascade"]  # records stay small
    ceiling = decision.candidate(plan.first).estimated_cost_usd * 1.01
    capped = router.route(prompt, cascade=bundled_policy, quality_cost_tradeoff=0.3, max_cost_per_query=ceiling)
    assert capped.cascade is None  # the pair would not fit
    floor = router.route(prompt, cascade=bundled_policy, min_quality=0.5)
    assert floor.cascade is None
    assert plan.task is None  # no per-task answer rules: the default extraction
    ruled = bundled_policy.model_copy(update={"extraction": AnswerExtraction(rules={"biology": r"\b([A-D])\b"})})
    task = router.route(prompt, cascade=ruled, quality_cost_tradeoff=0.3).cascade.task
    assert task in router.predictor.categories  # the prompt's predicted category picks its answer rule


def test_cascade_row_replays_recorded_answers(bundled_router, dev_questions):
    router = bundled_router
    names = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"]
    pool = ModelPool.from_models_json(bundled("mmlu_pro", "models.json"), names)
    train = load_questions(bundled("mmlu_pro"), split="train")[:500]
    test = load_questions(bundled("mmlu_pro"), split="test")[:500]
    evaluation = Evaluation(pool, train, dev_questions, test, predictor=router.predictor)
    curve = cascade_curve(evaluation, router.predictor)
    assert curve is not None and len(curve) == 100
    points = [p for p, _ in curve]
    rows = np.arange(len(evaluation.test))
    cheapest = evaluation.real_cost[:, 0].mean()
    assert points[-1].cost_per_query == pytest.approx(cheapest, rel=0.05)  # priced out: the cheap model alone
    most = evaluation.real_cost[rows].sum(1).mean()
    assert all(cheapest * 0.9 < p.cost_per_query < most for p in points)
    direct = cascade_curve(evaluation, router.predictor, min_gain=10.0)  # cascades never worth it
    first = [p for p, _ in direct]
    assert first != points  # cascades changed some operating points


def test_no_cascade_row_without_answer_lengths():
    questions = load_questions(bundled("mmlu_routellm"))
    names = ["Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    pool = ModelPool.from_models_json(bundled("mmlu_routellm", "models.json"), names)

    class Constant:
        def predict(self, prompts, models):
            return np.full((len(prompts), len(models)), 0.7)

    evaluation = Evaluation(pool, questions[:200], questions[200:400], questions[400:600])
    assert cascade_curve(evaluation, Constant()) is None
