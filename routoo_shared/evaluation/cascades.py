"""Cascades fitted and replayed on recorded answers: the evaluation side of ``routing.cascade``.

``fit_policy`` fits a ``CascadePolicy``'s evidence models on held-out labelled answers;
``replay_cascades`` runs the policy over a test split's recorded answers, charging both calls, for
the ``routoo+cascade`` row of ``routoo evaluate``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from routoo_shared.data.formats import Question
from routoo_shared.evaluation.harness import Evaluation, Point
from routoo_shared.routing.cascade import BUNDLED_OUTPUT_CAP, CascadeError, CascadePolicy, EvidenceModel

CASCADE_ROUTER = "routoo+cascade"  # its row in ``routoo evaluate``


def fit_policy(
    questions: list[Question],
    quality: np.ndarray,
    models: list[str],
    output_cap: int = BUNDLED_OUTPUT_CAP,
    **settings,
) -> CascadePolicy:
    """A policy whose evidence is each model's answer length, from recorded per-question results.

    ``questions`` must be held out from the predictor's training (the dev split): on its own
    training questions a predictor's ``quality`` already leans on the labels, which hides what the
    answers add (measured: fitting on train gave a quarter of the dev-split gain). ``quality``: the
    predictor's (n, M) predictions for ``models``, which are also the context. Models with fewer
    than 90% of their answers' lengths recorded, or fewer than 50 finished answers, cannot go
    first. Answers at ``output_cap`` tokens count as cut off. ``settings``: other
    ``CascadePolicy`` fields (``min_gain``, ``max_first_cost_share``).
    """
    tokens, correct = recorded_lengths(questions, models)
    evidence = {}
    for j, name in enumerate(models):
        rows = np.isfinite(tokens[:, j]) & np.isfinite(correct[:, j])
        if rows.mean() < 0.9:
            continue  # too few answers with a length: nothing to read
        length, finished = tokens[rows, j], tokens[rows, j] < output_cap
        try:
            draft = EvidenceModel.fit(name, length, finished, correct[rows, j], quality[rows])
        except CascadeError:
            continue  # nearly every answer cut off (a base model rambling to the cap): nothing to read
        others = [k for k in range(len(models)) if k != j]
        evidence[name] = draft.calibrated(
            quality[rows, j], draft.bins(length, finished, draft.expected(quality[rows])), correct[rows, j],
            quality[rows][:, others], correct[rows][:, others],
        )
    if not evidence:
        raise CascadeError(f"no model among {models} has recorded answer lengths to read; cascades need them")
    return CascadePolicy(context=list(models), evidence=evidence, **settings)


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


class Replay(BaseModel, arbitrary_types_allowed=True):
    """One trade-off's cascades replayed on recorded answers."""

    point: Point
    final: np.ndarray  # (N,) column of the model whose answer was kept
    cascaded: np.ndarray  # (N,) bool: a cascade was planned
    escalated: np.ndarray  # (N,) bool: its first answer was judged doubtful


def replay_cascades(evaluation: Evaluation, predictor, **settings) -> list[Replay] | None:
    """Routoo with cascades on the evaluation's test questions, one replay per trade-off.

    The policy is fitted with ``predictor`` (anything with ``predict(prompts, models)``) on the
    evaluation's dev questions; each replay reads the recorded answers, charging the first call's
    real cost and, when it escalated, the target's. The trade-off mu per USD is one for the whole
    test set, as the budget planner's. None when no pool model has recorded answer lengths.
    ``settings``: ``CascadePolicy`` fields.
    """
    names = evaluation.pool.names
    quality = {part: predictor.predict([q.prompt for q in getattr(evaluation, part)], names) for part in ("dev", "test")}
    try:
        policy = fit_policy(evaluation.dev, quality["dev"], names, **settings)
    except CascadeError:
        return None
    tokens, _ = recorded_lengths(evaluation.test, names)
    readable = {n: e for j, (n, e) in enumerate(zip(names, map(policy.evidence.get, names))) if e and np.isfinite(tokens[:, j]).all()}
    if not readable:
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
            choices, quality["test"], cost, price, names, tokens, tokens < BUNDLED_OUTPUT_CAP, expected
        )
        spent = real[rows, final] + np.where(escalated, real[rows, np.maximum(choices.first, 0)], 0.0)
        point = Point(cost_per_query=float(spent.mean()), accuracy=float(correct[rows, final].mean()))
        replays.append(Replay(point=point, final=final, cascaded=choices.first >= 0, escalated=escalated))
    return replays


def cascade_curve(evaluation: Evaluation, predictor, **settings) -> list[tuple[Point, np.ndarray]] | None:
    """``replay_cascades`` as the evaluation's curve: (point, final model column) per trade-off."""
    replays = replay_cascades(evaluation, predictor, **settings)
    return None if replays is None else [(r.point, r.final) for r in replays]


def policy_summary(policy: CascadePolicy) -> str:
    """One line a first-model candidate: AUC of its surprise alone and the fitted weights."""
    return "\n".join(
        f"{m.model:32s} AUC {m.fit_auc:.3f}  weight {m.weight:.2f}  "
        f"difficulty {m.difficulty_weight:+.2f}"
        for m in sorted(policy.evidence.values(), key=lambda e: -e.fit_auc)
    )

