"""Answer-aware cascades: ask cheap models first, read their answers, escalate only when in doubt.

Routing from the prompt alone has a ceiling: the predictor cannot know whether this particular
answer came out right. A cascade buys that information. For a prompt it plans a first stage and a
target: the first stage answers and its answers are read, and the target is called only when the
first answer's posterior P(correct) is too low for what the target would add at its price. A first
stage is either one cheap model, read by an ``EvidenceModel`` (its answer's length, whether it
finished and holds a final answer, log-probabilities or a verifier's score where available), or
two cheap models, read by an ``AgreementModel`` (whether their extracted final answers agree; the
second may be the first model sampled again). Final answers are extracted by the policy's
``AnswerExtraction`` (``routoo_shared.routing.answers``: a regex or function per task; defaults for
numbers, letters and code literals).

The plan is a value-of-information decision (FrugalGPT, Chen et al. 2023, arXiv 2305.05176, learns
such cascades; AutoMix, Madaan et al. 2023, arXiv 2310.12963, frames the escalation as a decision
under uncertainty). With utility u_j = q_j - mu * c_j (quality minus the priced cost of model j, mu
the selector's trade-off per USD) a cascade is worth

    V(stage, t) = sum_b p(b) * max(pi_b, q'_t,b - mu * c_t) - mu * c_stage

where b is what the first stage's answers will show, p(b) its predicted frequency, pi_b the first
model's posterior and q'_t,b the target's quality revised by the same evidence (a long, rambling
answer, or two cheap models that disagree, also say the question is hard). The cascade is planned
when V beats the best direct choice by ``min_gain``; the first stage's cost is part of V, and a
cost ceiling holds for all calls together. So the plan chooses, per prompt, prompt-only routing or
which cheap models to ask first, from predicted quality, cost and the evidence fitted on dev.

Answer lengths depend on the prompt as much as on correctness (chemistry answers are long, right
or wrong), so length evidence is the signal's surprise: its value minus what the predictor's
quality row for the prompt (the ``context`` models) predicts. Evidence models are fitted on
labelled answers the predictor was not trained on (the dev split; ``routoo_shared.evaluation.
cascades.fit_policy``): the binned log-likelihood ratio and its weight against the predictor's
prompt-only prior.

For integrations (a routing mode): hold a policy (``CascadePolicy.load()`` for the bundled
predictor, or ``fit_policy`` for one's own) and route with it,
``decision = router.route(messages, budget=budget, cascade=policy, **settings)``. Cascades follow
the trade-off mode: with ``quality_cost_tradeoff=0`` cost does not count, so set a trade-off
(``Router.calibrate_tradeoff``); a quality floor plans none. When ``plan = decision.cascade`` is
None, call ``decision.model`` as usual. Otherwise:
1. for each model of ``plan.asks`` (``plan.first``, then ``plan.second`` if any): reserve its
   estimated cost from the budget, call it without streaming, settle with its reported usage;
2. ``evidence = AnswerEvidence.read(text, output_tokens=<reported>, finished=<finish reason not
   'length'/'max_tokens'>, logprobs=<token log-probabilities, if the provider gives them>)``;
3. ``plan.should_escalate(evidence, second_evidence)``: True -> call (and stream) ``plan.target``,
   its fallbacks being ``decision.fallbacks`` without the first stage's models; False -> return
   the first answer (as one chunk when streaming). A first-stage call that raises escalates;
4. record ``decision.cascade`` (its dump leaves the evidence model out), whether it escalated and
   ``plan.posterior(evidence, second_evidence)``.
The plan was made only if all its calls' estimates fit ``max_cost_per_query`` and the budget's
remainder together, and all its models meet the call's hard limits (tools, context, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.routing.answers import AnswerExtraction, normalize_answer
from routoo_shared.routing.tokens import count_tokens

Signal = Literal["output_tokens", "mean_logprob", "confidence", "verifier_score"]
BUNDLED_POLICY = BUNDLED_DIR / "predictors" / "mmlu_pro" / "cascade.json"
BUNDLED_OUTPUT_CAP = 256  # max_tokens the bundled datasets' answers were generated with
_EPS = 1e-4


class CascadeError(ValueError):
    """A cascade policy or plan got evidence it cannot read, or a policy file is unusable."""


class AnswerEvidence(BaseModel):
    """What an integration reads off a first-stage answer (only ``output_tokens`` is required).

    ``finished`` is False when the provider stopped at its token limit (finish reason 'length' or
    'max_tokens'); ``mean_logprob`` is the mean log-probability of the answer's tokens;
    ``confidence`` a probability the model stated itself; ``verifier_score`` a verifier model's
    probability that the answer is right; ``final_answer`` the normalised final answer when the
    caller extracted it, else the plan extracts it from ``text`` (kept out of records).
    """

    output_tokens: int = Field(ge=0)
    finished: bool = True
    mean_logprob: float | None = Field(default=None, le=0)
    confidence: float | None = Field(default=None, ge=0, le=1)
    verifier_score: float | None = Field(default=None, ge=0, le=1)
    final_answer: str | None = None
    text: str | None = Field(default=None, exclude=True, repr=False)

    @classmethod
    def read(
        cls,
        answer_text: str,
        output_tokens: int | None = None,
        finished: bool = True,
        logprobs: list[float] | None = None,
        confidence: float | None = None,
        verifier_score: float | None = None,
    ) -> "AnswerEvidence":
        """Evidence from an answer as providers return it; tokens are counted when not reported,
        and a blank answer counts as zero tokens (no answer)."""
        if not answer_text.strip():
            output_tokens = 0
        elif output_tokens is None:
            output_tokens = count_tokens(answer_text)
        mean_logprob = float(np.mean(logprobs)) if logprobs else None
        return cls(
            output_tokens=output_tokens, finished=finished, mean_logprob=mean_logprob,
            confidence=confidence, verifier_score=verifier_score, text=answer_text,
        )


def signal_values(signal: Signal, values: np.ndarray) -> np.ndarray:
    """The scale the bins live on: log(1 + tokens) for lengths, the raw value otherwise."""
    values = np.asarray(values, dtype=float)
    return np.log1p(values) if signal == "output_tokens" else values


class BinnedEvidence(BaseModel):
    """What a first stage's answers show, as one of a few bins, and how that revises beliefs.

    Posterior of the first model's answer: logit pi_b = logit(prior) + weight * llr[b] + delta;
    another pool model's quality on the same prompt becomes logit q'_b = logit(q) +
    difficulty_weight * llr[b] + delta'. The shifts delta and delta' make each revision average
    back to its prior over the bins' predictive frequencies (sum_b p(b) pi_b = prior): reading an
    answer moves beliefs, it cannot raise them on average, so a cascade is never planned for value
    that only a miscalibrated revision would create.
    """

    model: str
    p_correct: list[float]  # P(bin | the first model's answer is correct)
    p_wrong: list[float]  # P(bin | wrong)
    weight: float = 1.0
    difficulty_weight: float = 0.0
    fit_auc: float = Field(description="AUC of the bins' log-likelihood ratio alone on the answers it was fitted on")

    @property
    def n_bins(self) -> int:
        raise NotImplementedError

    @model_validator(mode="after")
    def _shapes(self) -> "BinnedEvidence":
        if len(self.p_correct) != self.n_bins or len(self.p_wrong) != self.n_bins:
            raise CascadeError(f"evidence model for {self.model}: expected {self.n_bins} bin probabilities")
        return self

    @property
    def log_ratio(self) -> np.ndarray:
        return np.log(np.asarray(self.p_correct)) - np.log(np.asarray(self.p_wrong))

    def posterior(self, prior: np.ndarray) -> np.ndarray:
        """(..., bins): P(the answer is correct) after reading it, for each bin it may fall in."""
        prior = np.asarray(prior, float)
        return _revise(prior, self.weight * self.log_ratio, self.predictive(prior))

    def revised(self, quality: np.ndarray, first_prior: np.ndarray) -> np.ndarray:
        """(..., bins): another model's quality on the same prompt once this stage's answers were read;
        ``first_prior`` (broadcast against ``quality``) is the first model's prompt-only quality."""
        quality = np.asarray(quality, float)
        frequencies = self.predictive(np.broadcast_to(first_prior, quality.shape))
        return _revise(quality, self.difficulty_weight * self.log_ratio, frequencies)

    def predictive(self, prior: np.ndarray) -> np.ndarray:
        """(..., bins) probability of each bin before the call, for a first model with quality ``prior``."""
        prior = np.asarray(prior)[..., None]
        return prior * np.asarray(self.p_correct) + (1 - prior) * np.asarray(self.p_wrong)

    def with_counts(self, bins: np.ndarray, correct: np.ndarray) -> "BinnedEvidence":
        """P(bin | correct) and P(bin | wrong) from labelled answers' bins (one pseudo-count a bin)."""
        from routoo_shared.evaluation.metrics import auc  # fitting is the evaluation's work, not a call's

        counts = [np.bincount(bins[correct == label], minlength=self.n_bins) + 1.0 for label in (1, 0)]
        p_correct, p_wrong = (c / c.sum() for c in counts)
        score = np.log(p_correct) - np.log(p_wrong)
        return self.model_copy(update={
            "p_correct": p_correct.tolist(), "p_wrong": p_wrong.tolist(), "fit_auc": auc(score[bins], correct),
        })

    def calibrated(self, prior: np.ndarray, bins: np.ndarray, correct: np.ndarray,
                   others: np.ndarray, others_correct: np.ndarray) -> "BinnedEvidence":
        """Weights fitted on held-out (dev) answers against the predictor's prompt-only prior.

        ``prior``/``bins``/``correct``: the first model's dev predictions, answer bins and labels (n,);
        ``others``/``others_correct``: the other pool models' dev predictions and labels (n, m), NaN unseen.
        """
        llr = self.log_ratio[bins]
        (weight,) = _offset_logistic(_logit(prior), llr[:, None], correct)
        seen = np.isfinite(others_correct)
        llr_all = np.broadcast_to(llr[:, None], others.shape)
        (difficulty,) = _offset_logistic(_logit(others[seen]), llr_all[seen][:, None], others_correct[seen])
        return self.model_copy(update={"weight": weight, "difficulty_weight": difficulty})


class EvidenceModel(BinnedEvidence):
    """How one model's answers tell right from wrong, on one signal.

    The surprise of a usable answer is its signal (on ``signal_values``'s scale) minus the
    expected signal, ``context_coef`` applied to the logits of the policy's context qualities
    (last entry: intercept); surprises fall into bins at ``edges`` (interior). Unusable answers
    have a bin of their own, the last: cut off at the token limit, or, with ``reads_format``,
    holding no final answer.
    """

    signal: Signal = "output_tokens"
    context_coef: list[float] = Field(min_length=1)
    edges: list[float]
    reads_format: bool = False

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 2

    @model_validator(mode="after")
    def _increasing(self) -> "EvidenceModel":
        if list(self.edges) != sorted(self.edges):
            raise CascadeError(f"evidence model for {self.model}: bin edges must increase")
        return self

    def expected(self, context_quality: np.ndarray) -> np.ndarray:
        """(N,) the signal a prompt is expected to get, from its (N, K) context qualities."""
        coef = np.asarray(self.context_coef)
        if np.shape(context_quality)[-1] != len(coef) - 1:
            raise CascadeError(f"{self.model}'s evidence reads {len(coef) - 1} context qualities, got {np.shape(context_quality)}")
        return _logit(np.asarray(context_quality, float)) @ coef[:-1] + coef[-1]

    def bins(self, values: np.ndarray, usable: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """Bin index of each answer: by surprise when usable, the last bin otherwise."""
        surprise = signal_values(self.signal, values) - expected
        inside = np.searchsorted(np.asarray(self.edges), surprise, side="right")
        return np.where(np.asarray(usable, dtype=bool), inside, len(self.edges) + 1)

    def bin_of(self, evidence: AnswerEvidence, expected: float, final_answer: str | None = None) -> int:
        value = getattr(evidence, self.signal)
        if value is None:
            raise CascadeError(f"the evidence model of {self.model} reads {self.signal!r}, which the answer lacks")
        usable = evidence.finished and (final_answer is not None or not self.reads_format)
        return int(self.bins(np.array([value]), np.array([usable]), np.array([expected]))[0])

    @classmethod
    def fit(
        cls,
        model: str,
        values: np.ndarray,
        usable: np.ndarray,
        correct: np.ndarray,
        context_quality: np.ndarray,
        signal: Signal = "output_tokens",
        n_bins: int = 8,
        ridge: float = 1.0,
        reads_format: bool = False,
    ) -> "EvidenceModel":
        """From labelled answers: the expected signal (ridge regression on the context logits),
        quantile bins of the surprise and smoothed P(bin | correct), P(bin | wrong).

        values, usable, correct: (n,) per answer (usable: finished, and holding a final answer when
        ``reads_format``); context_quality: (n, K) the predictor's qualities.
        """
        values, usable, correct = np.asarray(values, float), np.asarray(usable, bool), np.asarray(correct, float)
        if len(values) < 50 or correct.min() == correct.max() or usable.sum() < 50:
            raise CascadeError(f"fitting {model}'s evidence needs at least 50 usable answers, right and wrong ones")
        features = np.c_[_logit(np.asarray(context_quality, float)), np.ones(len(values))]
        scaled = signal_values(signal, values)
        on = features[usable]
        coef = np.linalg.solve(on.T @ on + ridge * np.eye(on.shape[1]), on.T @ scaled[usable])
        surprise = scaled[usable] - on @ coef
        edges = np.unique(np.quantile(surprise, np.linspace(0, 1, n_bins + 1)[1:-1]))
        draft = cls(model=model, signal=signal, context_coef=coef.tolist(), edges=edges.tolist(), reads_format=reads_format,
                    p_correct=[1.0] * (len(edges) + 2), p_wrong=[1.0] * (len(edges) + 2), fit_auc=0.5)
        return draft.with_counts(draft.bins(values, usable, features @ coef), correct)


AGREEMENT_BINS = ("agree", "disagree", "first has no final answer", "second has no final answer")


class AgreementModel(BinnedEvidence):
    """How two first-stage answers tell right from wrong: whether their final answers agree.

    ``model`` is the first model (its answer stands when the cascade does not escalate),
    ``second`` the one asked beside it; ``second == model`` reads two samples of one model
    (self-consistency), fitted from data that holds two sampled answers a prompt. Bins:
    ``AGREEMENT_BINS`` (two answers are equal when their normalised final answers are).
    """

    second: str

    @property
    def n_bins(self) -> int:
        return len(AGREEMENT_BINS)

    @property
    def models(self) -> list[str]:
        return [self.model, self.second]

    @staticmethod
    def bins(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(n,) bin of each pair of normalised final answers (None: no final answer)."""
        first, second = np.asarray(first, dtype=object), np.asarray(second, dtype=object)
        first_none, second_none = first == None, second == None  # noqa: E711 (elementwise on object arrays)
        agree = ~first_none & ~second_none & (first == second)
        return np.select([first_none, second_none, agree], [2, 3, 0], default=1).astype(int)

    @classmethod
    def fit(cls, model: str, second: str, first_answers: np.ndarray, second_answers: np.ndarray,
            correct: np.ndarray) -> "AgreementModel":
        """From labelled pairs of answers: P(bin | the first is correct), P(bin | it is wrong)."""
        correct = np.asarray(correct, float)
        if len(correct) < 50 or correct.min() == correct.max():
            raise CascadeError(f"fitting {model} + {second}'s agreement needs at least 50 answers, right and wrong ones")
        draft = cls(model=model, second=second, p_correct=[1.0] * 4, p_wrong=[1.0] * 4, fit_auc=0.5)
        return draft.with_counts(cls.bins(first_answers, second_answers), correct)


class CascadePlan(BaseModel):
    """One prompt's cascade: ask ``first`` (and ``second``), read the answers, call ``target`` if
    ``should_escalate``.

    Escalate when the first answer's posterior quality is below the target's revised quality minus
    the target's priced cost (``target_cost_weight`` = mu * cost, in quality units).
    """

    first: str
    second: str | None = None  # asked beside ``first`` (agreement evidence); may be ``first`` again
    target: str
    expected_signal: float = Field(description="the first answer's expected signal for this prompt (length evidence)")
    first_quality: float = Field(ge=0, le=1)
    target_quality: float = Field(ge=0, le=1)
    target_cost_weight: float = Field(ge=0)
    expected_quality: float
    expected_cost_usd: float = Field(ge=0, description="the first stage plus the target times P(escalate)")
    escalation_probability: float = Field(ge=0, le=1)
    evidence: EvidenceModel | AgreementModel = Field(exclude=True, repr=False)  # kept out of decision records
    extraction: AnswerExtraction = Field(default_factory=AnswerExtraction, exclude=True, repr=False)
    task: str | None = None  # the task whose answer rule extracts final answers (None: the defaults)

    @property
    def asks(self) -> list[str]:
        """The first stage's calls, in order."""
        return [self.first] if self.second is None else [self.first, self.second]

    def final_answer(self, evidence: AnswerEvidence) -> str | None:
        """The answer's normalised final answer: given by the caller, else extracted from its text."""
        if evidence.final_answer is not None:
            return normalize_answer(evidence.final_answer)
        return self.extraction.extract(evidence.text, self.task) if evidence.text else None

    def bin_of(self, evidence: AnswerEvidence, second: AnswerEvidence | None = None) -> int:
        if isinstance(self.evidence, AgreementModel):
            if second is None:
                raise CascadeError(f"this plan compares {self.first} with {self.second}: pass the second answer's evidence")
            return int(AgreementModel.bins([self.final_answer(evidence)], [self.final_answer(second)])[0])
        return self.evidence.bin_of(evidence, self.expected_signal, self.final_answer(evidence))

    def posterior(self, evidence: AnswerEvidence, second: AnswerEvidence | None = None) -> float:
        """P(the first answer is correct) given what the first stage's answers show."""
        return float(self.evidence.posterior(self.first_quality)[self.bin_of(evidence, second)])

    def should_escalate(self, answer: str | AnswerEvidence, second: str | AnswerEvidence | None = None) -> bool:
        """True when the target should answer instead of the first model.

        ``answer`` (and ``second``, the second model's, for a two-model stage): the text (its
        tokens are counted), or ``AnswerEvidence.read(text, output_tokens=..., finished=...,
        logprobs=...)`` with what the provider reported. An empty first answer always escalates;
        otherwise the rule is: the target's revised quality, less its priced cost, beats the first
        answer's posterior.
        """
        evidence = AnswerEvidence.read(answer) if isinstance(answer, str) else answer
        other = AnswerEvidence.read(second) if isinstance(second, str) else second
        if evidence.output_tokens == 0:
            return True
        b = self.bin_of(evidence, other)
        target = self.evidence.revised(self.target_quality, self.first_quality)[b]
        return bool(self.posterior(evidence, other) < target - self.target_cost_weight)


class CascadeChoices(BaseModel, arbitrary_types_allowed=True):
    """Cascade plans for a batch, as column indices (-1 where the prompt is routed directly)."""

    first: np.ndarray  # (N,) int
    second: np.ndarray  # (N,) int: -1 where the first stage is one model
    target: np.ndarray  # (N,) int
    direct: np.ndarray  # (N,) int: the best direct choice, used where first == -1
    value: np.ndarray  # (N,) expected utility of what was chosen
    escalation_probability: np.ndarray  # (N,)
    expected_quality: np.ndarray  # (N,)
    expected_cost: np.ndarray  # (N,) USD


Stage = tuple[int, int]  # (first column, second column or -1)
Readings = dict[Stage, tuple[np.ndarray, np.ndarray, np.ndarray]]


class CascadePolicy(BaseModel):
    """When to cascade and between which models: ``evidence`` reads one model's answer (by name),
    ``agreement`` two models' answers; ``extraction`` finds final answers in answer texts.

    ``context``: the models whose predicted qualities describe a prompt to the length evidence
    (the predictor must know them all; they need not be in the routed pool).
    """

    context: list[str] = Field(min_length=1)
    evidence: dict[str, EvidenceModel] = Field(default_factory=dict)
    agreement: list[AgreementModel] = Field(default_factory=list)
    extraction: AnswerExtraction = Field(default_factory=AnswerExtraction)
    min_gain: float = Field(default=0.0, ge=0, description="expected utility (quality units) a cascade must add")
    max_first_cost_share: float = Field(
        default=0.5, gt=0, le=1, description="the first stage costs at most this share of the target's"
    )

    @field_validator("evidence")
    @classmethod
    def _names_match(cls, evidence: dict[str, EvidenceModel]) -> dict[str, EvidenceModel]:
        wrong = [k for k, v in evidence.items() if k != v.model]
        if wrong:
            raise CascadeError(f"evidence keys must be the model names they describe: {wrong}")
        return evidence

    @model_validator(mode="after")
    def _context_fits(self) -> "CascadePolicy":
        if not self.evidence and not self.agreement:
            raise CascadeError("a cascade policy needs evidence for at least one model or pair of models")
        wrong = [k for k, v in self.evidence.items() if len(v.context_coef) != len(self.context) + 1]
        if wrong:
            raise CascadeError(f"evidence of {wrong} does not match the {len(self.context)} context models")
        return self

    def expected_signals(self, context_quality: np.ndarray, names: list[str]) -> np.ndarray:
        """(N, M) each readable pool model's expected signal (NaN for the others);
        ``context_quality``: (N, len(context)) predicted qualities of the context models."""
        out = np.full((len(context_quality), len(names)), np.nan)
        for j, name in enumerate(names):
            if name in self.evidence:
                out[:, j] = self.evidence[name].expected(context_quality)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model_dump_json(indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path = BUNDLED_POLICY) -> "CascadePolicy":
        """A saved policy (default: the one fitted for the bundled mmlu_pro predictor)."""
        path = Path(path)
        if not path.exists():
            raise CascadeError(f"no cascade policy at {path} (fit one with scripts/fit_cascade.py)")
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as error:
            raise CascadeError(f"corrupt cascade policy {path}: {error}") from error

    def stages(self, names: list[str]) -> dict[Stage, EvidenceModel | AgreementModel]:
        """Every first stage the policy can read among ``names``, by (first, second) column."""
        stages: dict[Stage, EvidenceModel | AgreementModel] = {
            (f, -1): self.evidence[name] for f, name in enumerate(names) if name in self.evidence
        }
        for pair in self.agreement:
            if pair.model in names and pair.second in names:
                stages[names.index(pair.model), names.index(pair.second)] = pair
        return stages

    def readings(self, quality: np.ndarray, names: list[str]) -> Readings:
        """What each readable first stage's answers may show, by stage: (N, B) bin frequencies,
        (N, 1, B) the first answer's posterior per bin, (N, M, B) every model's revised quality per
        bin. They do not depend on prices, so a sweep over trade-offs computes them once."""
        quality = np.clip(np.asarray(quality, float), _EPS, 1 - _EPS)
        return {
            (f, s): (model.predictive(quality[:, f]), model.posterior(quality[:, f])[:, None, :],
                     model.revised(quality, quality[:, f, None]))
            for (f, s), model in self.stages(names).items()
        }

    def choose(
        self,
        quality: np.ndarray,
        cost: np.ndarray,
        names: list[str],
        price: np.ndarray,
        feasible: np.ndarray | None = None,
        ceiling: np.ndarray | None = None,
        readings: Readings | None = None,
    ) -> CascadeChoices:
        """Vectorised plans for N prompts over M models.

        quality, cost: (N, M) predicted P(correct) and estimated USD; price: (N,) quality given up per
        USD (mu); feasible: (N, M) models the constraints allow; ceiling: (N,) USD all calls must fit
        in; readings: ``self.readings(quality, names)`` when already computed.
        """
        readings = self.readings(quality, names) if readings is None else readings
        quality = np.clip(np.asarray(quality, float), _EPS, 1 - _EPS)
        cost = np.asarray(cost, float)
        n, m = quality.shape
        price = np.broadcast_to(np.asarray(price, float), (n,))[:, None]
        feasible = np.ones((n, m), bool) if feasible is None else np.asarray(feasible, bool)
        utility = np.where(feasible, quality - price * cost, -np.inf)
        direct = utility.argmax(axis=1)
        best = utility.max(axis=1)
        value, first, second, target = best.copy(), np.full(n, -1), np.full(n, -1), np.full(n, -1)
        escalation, exp_quality = np.zeros(n), quality[np.arange(n), direct]
        exp_cost = cost[np.arange(n), direct]
        for (f, s), (p_bin, accept_quality, target_quality) in readings.items():
            stage_cost = cost[:, f] + (cost[:, s] if s >= 0 else 0.0)
            target_utility = target_quality - (price * cost)[:, :, None]
            escalate = target_utility > accept_quality  # (N, M, B)
            outcome = np.where(escalate, target_utility, accept_quality)
            pair_value = np.einsum("nb,nmb->nm", p_bin, outcome) - price * stage_cost[:, None]
            allowed = feasible & feasible[:, [f, max(s, f)]].all(axis=1, keepdims=True)
            allowed &= stage_cost[:, None] <= self.max_first_cost_share * cost
            allowed[:, [f, max(s, f)]] = False
            if ceiling is not None:
                allowed &= stage_cost[:, None] + cost <= np.asarray(ceiling, float)[:, None]
            pair_value = np.where(allowed, pair_value, -np.inf)
            t = pair_value.argmax(axis=1)
            better = pair_value[np.arange(n), t] > value
            if not better.any():
                continue
            rows = np.flatnonzero(better)
            chosen_escalate = escalate[rows, t[rows]]  # (R, B)
            p_escalate = np.einsum("nb,nb->n", p_bin[rows], chosen_escalate)
            value[rows], first[rows], second[rows], target[rows] = pair_value[rows, t[rows]], f, s, t[rows]
            escalation[rows] = p_escalate
            exp_quality[rows] = np.einsum(
                "nb,nb->n", p_bin[rows],
                np.where(chosen_escalate, target_quality[rows, t[rows]], accept_quality[rows, 0]),
            )
            exp_cost[rows] = stage_cost[rows] + p_escalate * cost[rows, t[rows]]
        worth_it = value > best + self.min_gain + 1e-6  # above rounding: a cascade must add something
        first, second, target = (np.where(worth_it, column, -1) for column in (first, second, target))
        value = np.where(worth_it, value, best)
        escalation = np.where(worth_it, escalation, 0.0)
        exp_quality = np.where(worth_it, exp_quality, quality[np.arange(n), direct])
        exp_cost = np.where(worth_it, exp_cost, cost[np.arange(n), direct])
        return CascadeChoices(first=first, second=second, target=target, direct=direct, value=value,
                              escalation_probability=escalation, expected_quality=exp_quality, expected_cost=exp_cost)

    def plans(
        self,
        quality: np.ndarray,
        cost: np.ndarray,
        names: list[str],
        price: np.ndarray | float,
        context_quality: np.ndarray,
        feasible: np.ndarray | None = None,
        ceiling: np.ndarray | None = None,
    ) -> list[CascadePlan | None]:
        """``choose`` as one ``CascadePlan`` (or None: route directly) per prompt;
        ``context_quality``: (N, len(context)) for the plans' expected signals."""
        choices = self.choose(quality, cost, names, price, feasible, ceiling)
        expected = self.expected_signals(context_quality, names)
        stages = self.stages(names)
        price = np.broadcast_to(np.asarray(price, float), (len(choices.first),))
        out: list[CascadePlan | None] = []
        for row, (f, s, t) in enumerate(zip(choices.first, choices.second, choices.target)):
            if f < 0:
                out.append(None)
                continue
            out.append(CascadePlan(
                first=names[f], second=names[s] if s >= 0 else None, target=names[t],
                expected_signal=float(expected[row, f]) if s < 0 else 0.0,
                first_quality=float(np.clip(quality[row, f], _EPS, 1 - _EPS)),
                target_quality=float(np.clip(quality[row, t], _EPS, 1 - _EPS)),
                target_cost_weight=float(price[row] * cost[row, t]),
                expected_quality=float(choices.expected_quality[row]),
                expected_cost_usd=float(choices.expected_cost[row]),
                escalation_probability=float(np.clip(choices.escalation_probability[row], 0, 1)),
                evidence=stages[f, s], extraction=self.extraction,
            ))
        return out

    def outcomes(
        self, choices: CascadeChoices, quality: np.ndarray, cost: np.ndarray, price: np.ndarray,
        names: list[str], values: np.ndarray, finished: np.ndarray, expected: np.ndarray,
        answers: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replay ``choices`` on recorded answers: (escalated (N,) bool, final model column (N,)).

        ``values``/``finished``: (N, M) each model's recorded signal and whether it finished;
        ``expected``: (N, M) from ``expected_signals``; ``answers``: (N, M) normalised final answers
        (None: none), needed for agreement stages and format-reading evidence.
        """
        n = len(choices.first)
        price = np.broadcast_to(np.asarray(price, float), (n,))
        final, escalated = choices.direct.copy(), np.zeros(n, bool)
        quality = np.clip(quality, _EPS, 1 - _EPS)
        stages = self.stages(names)
        planned = np.flatnonzero(choices.first >= 0)
        for f, s in set(zip(choices.first[planned].tolist(), choices.second[planned].tolist())):
            rows = np.flatnonzero((choices.first == f) & (choices.second == s))
            model, t = stages[f, s], choices.target[rows]
            if isinstance(model, AgreementModel):
                bins = model.bins(answers[rows, f], answers[rows, s])
            else:
                usable = finished[rows, f] & ((answers[rows, f] != None) if model.reads_format else True)  # noqa: E711
                bins = model.bins(values[rows, f], usable, expected[rows, f])
            first = np.take_along_axis(model.posterior(quality[rows, f]), bins[:, None], 1)[:, 0]
            revised = model.revised(quality[rows, t], quality[rows, f])
            target = np.take_along_axis(revised, bins[:, None], 1)[:, 0] - price[rows] * cost[rows, t]
            escalated[rows] = first < target
            final[rows] = np.where(escalated[rows], t, f)
        return escalated, final


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _revise(prior: np.ndarray, evidence_terms: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """(..., B) sigmoid(logit(prior) + evidence_terms + delta), with delta (...) chosen by Newton's
    method so that the frequency-weighted mean over the B bins equals ``prior``."""
    z = _logit(prior)[..., None] + evidence_terms
    delta = np.zeros(np.shape(prior))[..., None]
    target = np.clip(prior, _EPS, 1 - _EPS)
    for _ in range(20):
        p = _sigmoid(z + delta)
        gap = (frequencies * p).sum(-1, keepdims=True) - target[..., None]
        slope = (frequencies * p * (1 - p)).sum(-1, keepdims=True)
        delta = delta - gap / np.maximum(slope, 1e-12)
        if np.abs(gap).max() < 1e-9:
            break
    return _sigmoid(z + delta)


def _offset_logistic(offset: np.ndarray, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3) -> list[float]:
    """Coefficients w of P(y=1) = sigmoid(offset + features @ w), by Newton's method (ridge-damped)."""
    w = np.zeros(features.shape[1])
    for _ in range(50):
        p = _sigmoid(offset + features @ w)
        gradient = features.T @ (labels - p) - ridge * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    return w.tolist()
