"""Cascades fitted and replayed on recorded answers: the evaluation side of ``routing.cascade``.

``fit_policy`` fits a ``CascadePolicy``'s evidence models (one model's answer length and format;
two cheap models' agreement, from the per-result ``answer``) on held-out labelled answers;
``replay_cascades`` runs the policy over a test split's recorded answers, charging every call, for
the ``routoo+cascade`` row of ``routoo evaluate``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from routoo_shared.data.formats import Question
from routoo_shared.evaluation.harness import Evaluation, Point
from routoo_shared.routing.answers import normalize_answer
from routoo_shared.routing.cascade import BUNDLED_OUTPUT_CAP, AgreementModel, CascadeError, CascadePolicy, EvidenceModel
from routoo_shared.routing.tokens import count_tokens_batch

CASCADE_ROUTER = "routoo+cascade"  # its row in ``routoo evaluate``


def fit_policy(
    questions: list[Question],
    quality: np.ndarray,
    models: list[str],
    output_cap: int = BUNDLED_OUTPUT_CAP,
    mean_cost: np.ndarray | None = None,
    max_pair_models: int = 6,
    **settings,
) -> CascadePolicy:
    """A policy that reads each model's answer length and format and, where final answers are
    recorded, whether two cheap models' final answers agree, from per-question results.

    ``questions`` must be held out from the predictor's training (the dev split): on its own
    training questions a predictor's ``quality`` already leans on the labels, which hides what the
    answers add (measured: fitting on train gave a quarter of the dev-split gain). ``quality``: the
    predictor's (n, M) predictions for ``models``, which are also the context. Models with fewer
    than 90% of their answers' lengths recorded, or fewer than 50 usable answers, get no length
    evidence. Answers at ``output_cap`` tokens count as cut off; for a model whose results record
    final answers (``ModelResult.answer``), one without a final answer is unusable too. Agreement
    pairs are fitted among the models that record final answers: with ``mean_cost`` ((M,) USD a
    query), the ``max_pair_models`` cheapest that no cheaper model beats in accuracy on
    ``questions``, the priciest model left out (it is the target, not a first stage). The pair's
    first model is the more accurate one (its answer stands when the pair agrees). ``settings``:
    other ``CascadePolicy`` fields (``min_gain``, ``max_first_cost_share``, ``extraction``).
    """
    tokens, correct = recorded_lengths(questions, models)
    answers, records = recorded_answers(questions, models)
    evidence = {}
    for j, name in enumerate(models):
        rows = np.isfinite(tokens[:, j]) & np.isfinite(correct[:, j])
        if rows.mean() < 0.9:
            continue  # too few answers with a length: nothing to read
        usable = (tokens[rows, j] < output_cap) & ((answers[rows, j] != None) if records[j] else True)  # noqa: E711
        try:
            draft = EvidenceModel.fit(name, tokens[rows, j], usable, correct[rows, j], quality[rows], reads_format=records[j])
        except CascadeError:
            continue  # nearly every answer cut off (a base model rambling to the cap): nothing to read
        bins = draft.bins(tokens[rows, j], usable, draft.expected(quality[rows]))
        evidence[name] = _calibrated(draft, bins, rows, j, [j], quality, correct)
    agreement = []
    for j, k in _pair_candidates(correct, records, mean_cost, max_pair_models):
        rows = np.isfinite(correct[:, j]) & np.isfinite(correct[:, k])
        try:
            draft = AgreementModel.fit(models[j], models[k], answers[rows, j], answers[rows, k], correct[rows, j])
        except CascadeError:
            continue
        bins = draft.bins(answers[rows, j], answers[rows, k])
        agreement.append(_calibrated(draft, bins, rows, j, [j, k], quality, correct))
    if not evidence and not agreement:
        raise CascadeError(f"no model among {models} has recorded answer lengths or final answers to read; cascades need them")
    return CascadePolicy(context=list(models), evidence=evidence, agreement=agreement, **settings)


def _calibrated(draft, bins: np.ndarray, rows: np.ndarray, first: int, stage: list[int],
                quality: np.ndarray, correct: np.ndarray):
    """``draft`` with its weights fitted against the prompt-only prior on ``rows``."""
    others = [k for k in range(quality.shape[1]) if k not in stage]
    return draft.calibrated(quality[rows, first], bins, correct[rows, first], quality[rows][:, others], correct[rows][:, others])


def _pair_candidates(correct: np.ndarray, records: np.ndarray, mean_cost: np.ndarray | None, limit: int) -> list[tuple[int, int]]:
    """(first, second) columns of the agreement pairs worth fitting (see ``fit_policy``)."""
    accuracy = np.nanmean(correct, axis=0)
    candidates = [j for j in np.flatnonzero(records) if np.isfinite(accuracy[j])]
    if mean_cost is not None:
        candidates = [j for j in candidates if j != int(np.argmax(mean_cost))
                      and not any(mean_cost[k] < mean_cost[j] and accuracy[k] >= accuracy[j] for k in candidates)]
        candidates = sorted(candidates, key=lambda j: mean_cost[j])[:limit]
    ordered = sorted(candidates, key=lambda j: -accuracy[j])
    return [(j, k) for a, j in enumerate(ordered) for k in ordered[a + 1 :]]


def recorded_lengths(questions: list[Question], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, correct), each (N, M): NaN where a run or its length was not recorded."""
    tokens = np.full((len(questions), len(models)), np.nan)
    correct = np.full((len(questions), len(models)), np.nan)
    for i, question in enumerate(questions):
        for j, model in enumerate(models):
            result = question.results.get(model)
            if result is not None:
                correct[i, j] = result.correct
                if result.output_tokens:
                    tokens[i, j] = result.output_tokens
    return tokens, correct


def recorded_answers(questions: list[Question], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(answers (N, M) normalised final answers, None where there is none; records (M,) bool: the
    model's results record final answers at all, so that a missing one means the answer had none)."""
    answers = np.full((len(questions), len(models)), None, dtype=object)
    for i, question in enumerate(questions):
        for j, model in enumerate(models):
            result = question.results.get(model)
            if result is not None:
                answers[i, j] = normalize_answer(result.answer)
    return answers, (answers != None).any(axis=0)  # noqa: E711


class Replay(BaseModel, arbitrary_types_allowed=True):
    """One trade-off's cascades replayed on recorded answers."""

    point: Point
    final: np.ndarray  # (N,) column of the model whose answer was kept
    cascaded: np.ndarray  # (N,) bool: a cascade was planned
    escalated: np.ndarray  # (N,) bool: its first answer was judged doubtful


def replay_cascades(evaluation: Evaluation, predictor, **settings) -> list[Replay] | None:
    """Routoo with cascades on the evaluation's test questions, one replay per trade-off.

    The policy is fitted with ``predictor`` (anything with ``predict(prompts, models)``) on the
    evaluation's dev questions; each replay reads the recorded answers (lengths, final answers),
    charging every first-stage call's real cost and, when it escalated, the target's. The trade-off
    mu per USD is one for the whole test set, as the budget planner's. None when no pool model has
    recorded answer lengths or final answers. ``settings``: ``fit_policy`` settings.
    """
    names = evaluation.pool.names
    quality = {part: predictor.predict([q.prompt for q in getattr(evaluation, part)], names) for part in ("dev", "test")}
    dev_cost = evaluation.pool.cost_matrix(np.array(count_tokens_batch([q.prompt for q in evaluation.dev]), dtype=float))
    try:
        policy = fit_policy(evaluation.dev, quality["dev"], names, mean_cost=dev_cost.mean(axis=0), **settings)
    except CascadeError:
        return None
    tokens, _ = recorded_lengths(evaluation.test, names)
    answers, _ = recorded_answers(evaluation.test, names)
    readable = {n: e for j, (n, e) in enumerate(zip(names, map(policy.evidence.get, names))) if e and np.isfinite(tokens[:, j]).all()}
    if not readable and not policy.agreement:
        return None
    policy = policy.model_copy(update={"evidence": readable})
    tokens = np.nan_to_num(tokens)
    expected = policy.expected_signals(quality["test"], names)
    cost, real, correct = evaluation.expected_cost, evaluation.real_cost, evaluation.correct
    rows, scale = np.arange(len(tokens)), cost.max(axis=1).mean()
    readings = policy.readings(quality["test"], names)
    replays = []
    for tradeoff in np.concatenate([[0.0], np.geomspace(0.01, 1000, 99)]):
        price = tradeoff / scale
        choices = policy.choose(quality["test"], cost, names, price, readings=readings)
        escalated, final = policy.outcomes(
            choices, quality["test"], cost, price, names, tokens, tokens < BUNDLED_OUTPUT_CAP, expected, answers
        )
        cascaded = choices.first >= 0
        first_stage = real[rows, np.maximum(choices.first, 0)] + np.where(choices.second >= 0, real[rows, np.maximum(choices.second, 0)], 0.0)
        spent = np.where(cascaded, first_stage, 0.0) + np.where(cascaded & ~escalated, 0.0, real[rows, final])
        point = Point(cost_per_query=float(spent.mean()), accuracy=float(correct[rows, final].mean()))
        replays.append(Replay(point=point, final=final, cascaded=cascaded, escalated=escalated))
    return replays


def cascade_curve(evaluation: Evaluation, predictor, **settings) -> list[tuple[Point, np.ndarray]] | None:
    """``replay_cascades`` as the evaluation's curve: (point, final model column) per trade-off."""
    replays = replay_cascades(evaluation, predictor, **settings)
    return None if replays is None else [(r.point, r.final) for r in replays]


def policy_summary(policy: CascadePolicy) -> str:
    """One line a first stage: AUC of its bins alone and the fitted weights."""
    stages = [(m.model, m) for m in policy.evidence.values()] + [(f"{m.model} + {m.second}", m) for m in policy.agreement]
    return "\n".join(
        f"{name:48s} AUC {m.fit_auc:.3f}  weight {m.weight:.2f}  difficulty {m.difficulty_weight:+.2f}"
        for name, m in sorted(stages, key=lambda item: -item[1].fit_auc)
    )
