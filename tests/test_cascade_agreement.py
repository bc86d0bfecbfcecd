"""Cascades that read answers: final-answer extraction, two cheap models' agreement, the format of
an answer, and RouteLLM's pair metrics the evaluation reports beside them."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from pydantic import ValidationError

from routoo_shared.cli import _train_files
from routoo_shared.data.formats import DatasetError
from routoo_shared.evaluation.routing_quality import pair_scores
from routoo_shared.routing.answers import AnswerExtraction, normalize_answer
from routoo_shared.routing.cascade import AgreementModel, AnswerEvidence, CascadeError, CascadePolicy, EvidenceModel

A, B, STRONG = "cheap-a", "cheap-b", "strong"
NAMES = [A, B, STRONG]


@pytest.mark.parametrize("text, answer", [
    ("so she makes 9 * 2 = $18 a day.\nThe answer is $1,018.", "1018"),
    ("Hence \\boxed{\\frac{3}{4}}.", "3/4"),
    ("Step 1 ... #### 18", "18"),
    ("Thinking it through, the answer is (C).", "c"),
    ("[ANSWER]assert f([3, 1]) == [(4, 1), (2, 3)][/ANSWER]", "[(4, 1), (2, 3)]"),
    ("I am not sure what is asked here.", None),
])
def test_default_extraction_finds_numbers_letters_and_literals(text, answer):
    assert AnswerExtraction().extract(text) == answer


def test_extraction_rules_per_task_and_normalised_comparison():
    extraction = AnswerExtraction(rules={"mc": r"\b([A-D])\b", "math": "number"})
    assert extraction.extract("I pick C over D, so: C", "mc") == "c"
    assert extraction.extract("Option (B) gives 7", "math") == "7"
    custom = extraction.with_function("yes-no", lambda text: "yes" if "yes" in text.lower() else None)
    assert custom.extract("Yes, it holds.", "yes-no") == "yes" and custom.extract("It fails.", "yes-no") is None
    assert normalize_answer("18.0") == normalize_answer("18") == normalize_answer(" 18. ")
    assert normalize_answer("[(4,1), (2,3)]") == normalize_answer("[(4, 1), (2, 3)]")
    assert normalize_answer("   ") is None and normalize_answer(None) is None
    with pytest.raises(ValidationError, match="not a regex"):
        AnswerExtraction(rules={"mc": "([A-D]"})
    with pytest.raises(ValidationError, match="group"):
        AnswerExtraction(rules={"mc": r"\b[A-D]\b"})


def agreeing_answers(n: int = 4000, seed: int = 0):
    """Two cheap models right 60% of the time; a wrong answer is one of ten wrong numbers, or none (a tenth)."""
    rng = np.random.default_rng(seed)
    correct = rng.random((n, 2)) < 0.6
    wrong = rng.integers(0, 10, (n, 2)).astype(str)
    answers = np.where(correct, "42", wrong).astype(object)
    answers[~correct & (rng.random((n, 2)) < 0.1)] = None
    return answers, correct.astype(float)


def agreement_policy(**settings) -> CascadePolicy:
    answers, correct = agreeing_answers()
    model = AgreementModel.fit(A, B, answers[:, 0], answers[:, 1], correct[:, 0])
    return CascadePolicy(context=[A], agreement=[model], **settings)


QUALITY = np.array([[0.6, 0.6, 0.9]])
COST = np.array([[1e-5, 1e-5, 1e-4]])
PRICE = 0.3 / 1e-4


def test_two_cheap_models_that_agree_stand_and_disagreeing_ones_escalate():
    (plan,) = agreement_policy().plans(QUALITY, COST, NAMES, PRICE, QUALITY[:, :1])
    assert plan is not None and plan.asks == [A, B] and plan.target == STRONG
    assert COST[0, :2].sum() < plan.expected_cost_usd < COST[0].sum()
    agree, other = AnswerEvidence.read("... so the answer is 42."), AnswerEvidence.read("The answer is 42")
    disagree = AnswerEvidence.read("I get 7.")
    assert not plan.should_escalate(agree, other)
    assert plan.should_escalate(agree, disagree)
    assert 0.6 < plan.posterior(agree, AnswerEvidence.read("no idea")) < plan.posterior(agree, other)  # a format failure: the second was wrong
    assert plan.posterior(agree, other) > 0.9 > 0.5 > plan.posterior(agree, disagree)
    assert not plan.should_escalate(AnswerEvidence(output_tokens=5, final_answer="42.0"), AnswerEvidence(output_tokens=5, final_answer="42"))
    with pytest.raises(CascadeError, match="second answer"):
        plan.should_escalate(agree)
    assert "evidence" not in plan.model_dump() and "extraction" not in plan.model_dump()


def test_agreement_cannot_raise_quality_on_average_and_needs_room():
    model = agreement_policy().agreement[0]
    prior = np.array([0.2, 0.6, 0.9])
    np.testing.assert_allclose((model.predictive(prior) * model.posterior(prior)).sum(-1), prior, atol=1e-6)
    policy = agreement_policy()
    assert policy.plans(QUALITY, COST, NAMES, PRICE, QUALITY[:, :1], ceiling=np.array([1.1e-4])) == [None]  # all three calls
    assert policy.plans(QUALITY, COST, NAMES, PRICE, QUALITY[:, :1], feasible=np.array([[True, False, True]])) == [None]
    assert agreement_policy(max_first_cost_share=0.15).plans(QUALITY, COST, NAMES, PRICE, QUALITY[:, :1]) == [None]
    with pytest.raises(ValidationError, match="at least one"):
        CascadePolicy(context=[A])
    with pytest.raises(CascadeError, match="at least 50"):
        AgreementModel.fit(A, B, np.array(["1"] * 10), np.array(["1"] * 10), np.ones(10))


def test_the_plan_asks_the_pair_only_where_it_beats_one_cheap_model():
    rng = np.random.default_rng(3)
    correct = rng.random(2000) < 0.6
    lengths = np.exp(4 + 0.3 * rng.standard_normal(2000))  # lengths say nothing here
    length = EvidenceModel.fit(A, lengths, np.ones(2000, bool), correct.astype(float), np.full((2000, 1), 0.6))
    policy = agreement_policy().model_copy(update={"evidence": {A: length}})
    (plan,) = policy.plans(QUALITY, COST, NAMES, PRICE, QUALITY[:, :1])
    assert plan.second == B
    easy = np.array([[0.99, 0.99, 0.995]])
    assert policy.plans(easy, COST, NAMES, PRICE, easy[:, :1]) == [None]  # nothing to learn: one cheap call


def test_replay_reads_recorded_final_answers():
    policy = agreement_policy()
    quality, cost = np.repeat(QUALITY, 3, 0), np.repeat(COST, 3, 0)
    choices = policy.choose(quality, cost, NAMES, PRICE)
    answers = np.array([["42", "42", "42"], ["42", "7", "42"], [None, "42", "42"]], dtype=object)
    escalated, final = policy.outcomes(choices, quality, cost, PRICE, NAMES, np.ones((3, 3)), np.ones((3, 3), bool),
                                       np.zeros((3, 3)), answers)
    assert escalated.tolist() == [False, True, True] and final.tolist() == [0, 2, 2]


def test_format_evidence_puts_answers_without_a_final_answer_with_cut_off_ones():
    rng = np.random.default_rng(5)
    correct = rng.random(2000) < 0.5
    has_answer = correct | (rng.random(2000) < 0.4)
    model = EvidenceModel.fit(A, np.full(2000, 50.0), has_answer, correct.astype(float), np.full((2000, 1), 0.5),
                              reads_format=True)
    assert model.bin_of(AnswerEvidence(output_tokens=50), 0.0, final_answer=None) == model.n_bins - 1
    assert model.bin_of(AnswerEvidence(output_tokens=50), 0.0, final_answer="3") < model.n_bins - 1


def test_routellm_pair_metrics():
    shares = np.linspace(0, 1, 11)
    line = pair_scores(shares, 0.6 + 0.3 * shares, 0.6, 0.9)  # a random mix: PGR equals the share
    assert line.apgr == pytest.approx(0.5) and line.cpt50 == pytest.approx(0.5) and line.cpt80 == pytest.approx(0.8)
    good = pair_scores(np.array([0.2, 0.4]), np.array([0.8, 0.9]), 0.6, 0.9)
    assert good.cpt50 == pytest.approx(0.15) and good.cpt80 == pytest.approx(0.28)
    assert good.apgr == pytest.approx(0.2 * (2 / 3) / 2 + 0.2 * (2 / 3 + 1) / 2 + 0.6)
    never = pair_scores(np.array([0.5]), np.array([0.6]), 0.6, 0.9)
    assert never.cpt50 == pytest.approx(0.5 + 0.5 * 0.5)  # only the strong model alone gets there
    assert pair_scores(shares, shares, 0.9, 0.9).apgr is None


def write(path, rows):
    with gzip.open(path, "wt") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(path)


def test_training_on_several_files_keeps_the_pools_results(tmp_path):
    one = write(tmp_path / "one.jsonl.gz", [
        {"id": f"a{i}", "prompt": f"question {i}", "results": {A: {"score": 1}, "other": {"score": 0}}} for i in range(40)
    ])
    two = write(tmp_path / "two.jsonl.gz", [
        {"id": f"b{i}", "prompt": f"task {i}", "results": {"other": {"score": 1}} if i % 2 else {B: {"score": 0}}} for i in range(40)
    ])
    test = [type("Q", (), {"id": "zz", "prompt": "question 3"})()]  # a test prompt seen in training is left out
    fit, dev = _train_files(f"{one},{two}", None, "mmlu_pro", test, [A, B])
    rows = fit + dev
    assert len(rows) == 39 + 20 and all(set(q.results) <= {A, B} for q in rows)
    assert "question 3" not in {q.prompt for q in rows}
    with pytest.raises(DatasetError, match="in both"):
        _train_files(f"{one},{one}", None, "mmlu_pro", [], [A, B])


def test_a_model_sampled_twice_reads_its_own_agreement():
    answers, correct = agreeing_answers(seed=7)
    self_consistency = AgreementModel.fit(A, A, answers[:, 0], answers[:, 1], correct[:, 0])
    policy = CascadePolicy(context=[A], agreement=[self_consistency])
    quality, cost = np.array([[0.6, 0.9]]), np.array([[1e-5, 1e-4]])
    (plan,) = policy.plans(quality, cost, [A, STRONG], PRICE, quality[:, :1])
    assert plan.asks == [A, A] and plan.target == STRONG
    assert plan.expected_cost_usd > 2 * cost[0, 0]  # both samples are paid for
    assert not plan.should_escalate("The answer is 42", "42")
