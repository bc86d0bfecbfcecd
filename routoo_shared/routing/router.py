"""The router facade: prompt or conversation in, ``RoutingDecision`` out."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from routoo_shared.routing.batching import BatchingPredictor
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget
from routoo_shared.routing.cascade import CascadePlan, CascadePolicy
from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.routing.models_file import pool_names as expand_pool
from routoo_shared.routing.known_models import known_as, resolve
from routoo_shared.routing.messages import prompt_tokens, routing_text
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.predictors.errors import PredictorFileError
from routoo_shared.routing.selector import (
    Constraints,
    InfeasibleRoutingError,
    Selection,
    Selector,
    capability_masks,
    plan_budget,
)

if TYPE_CHECKING:  # loaded with the predictor's file: importing the router needs no torch
    from routoo_shared.predictors.predictor import Predictor


BUNDLED_PREDICTOR = BUNDLED_DIR / "predictors" / "general"  # every bundled dataset's models (scripts/train_general_predictor.py)


class Candidate(BaseModel):
    model: str
    predicted_quality: float
    estimated_cost_usd: float
    excluded_by: str | None = None
    unlabelled: bool = False  # quality from a declared prior (ModelSpec.prior_quality / prior_like), not labels


class RoutingDecision(BaseModel):
    """Which model answers, why, and who comes next if it fails."""

    model: str
    predicted_quality: float
    estimated_cost_usd: float
    input_tokens: int
    binding_constraint: str | None
    candidates: list[Candidate]  # eligible ones first, best first; then the excluded ones
    sticky: bool = False  # the model a sticky conversation is kept on (RoutedCalls.sticky), first of the candidates
    sticky_reason: str | None = None  # why it was kept, or why the kept model could not be (routed afresh)
    cascade: CascadePlan | None = None  # set when a cascade policy planned one: call its first model first
    predictor: str | None = None  # which predictor decided (its head and prompt encoder)

    @property
    def fallbacks(self) -> list[str]:
        """Eligible candidates after the chosen one, in rank order."""
        return [c.model for c in self.candidates if c.excluded_by is None and c.model != self.model]

    def candidate(self, model: str) -> Candidate:
        return next(c for c in self.candidates if c.model == model)

    @property
    def why(self) -> str:
        """Why ``model`` was chosen: kept for a conversation, the setting that bound the choice, or best
        predicted quality."""
        if self.sticky:
            return self.sticky_reason
        return f"bound by {self.binding_constraint}" if self.binding_constraint else "best predicted quality"

    def kept(self, model: str, conversation: str) -> "RoutingDecision":
        """This decision with ``model`` (the one ``conversation`` is kept on) first and every other eligible candidate
        after it, in rank order, as fallbacks; when this call's settings exclude ``model`` (its cost
        ceiling, the budget, capabilities), the decision as routed, saying so in ``sticky_reason``."""
        candidate = next((c for c in self.candidates if c.model == model), None)
        if candidate is None or candidate.excluded_by is not None:
            excluded = "not eligible" if candidate is None else f"excluded by {candidate.excluded_by}"
            return self.model_copy(update={"sticky_reason": f"{model}, kept for {conversation}, was {excluded}: routed afresh"})
        return self.model_copy(update={
            "model": model, "predicted_quality": candidate.predicted_quality, "binding_constraint": None,
            "estimated_cost_usd": candidate.estimated_cost_usd, "sticky": True,
            "sticky_reason": f"kept for {conversation} (sticky)",
            "candidates": [candidate] + [c for c in self.candidates if c is not candidate],
        })

    def explain(self, answered_by: str | None = None, why: str | None = None) -> str:
        """One line: the model, its predicted quality and cost, and why it answered (``why`` given by
        the caller that tried the candidates; by default the binding constraint or best quality)."""
        model = answered_by or self.model
        why = why or self.why
        candidate = self.candidate(model)
        source = "prior quality (unlabelled)" if candidate.unlabelled else "predicted quality"
        return (
            f"{model}: {source} {candidate.predicted_quality:.2f}, "
            f"~{candidate.estimated_cost_usd * 1e6:.0f} USD per 1M calls ({why})"
        )


def _pool_groups(directory: Path) -> dict[str, list[str]]:
    """Named groups of a predictor folder's pool (``pools.json``: {"name": [models]}), if it has them."""
    path = directory / "pools.json"
    if not path.exists():
        return {}
    try:
        groups = json.loads(path.read_text())
    except ValueError as error:
        raise PredictorFileError(f"corrupt pool groups {path}: {error}") from error
    if not isinstance(groups, dict) or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in groups.values()):
        raise PredictorFileError(f"{path} must map group names to lists of model names")
    return groups


def _named_as_asked(spec: ModelSpec, asked: str, groups: dict[str, list[str]]) -> ModelSpec:
    """The spec under the name the caller used for it, where that was another name of the model."""
    for item in (part.strip() for part in asked.split(",")):
        if item not in groups and item != spec.name and resolve(item, [spec.name]) == spec.name:
            return spec.model_copy(update={"name": item})
    return spec


class Router:
    """Predictor + selector over a pool; every decision of a batch comes from one vectorised pass."""

    def __init__(self, pool: ModelPool, predictor: Predictor, constraints: Constraints | None = None):
        labelled = [known_as(m, predictor.models) for m in pool.models]
        unknown = [m.name for m, known in zip(pool.models, labelled) if known is None and not m.has_prior]
        if unknown:
            raise KeyError(
                f"the predictor has no labels for model(s) {unknown}; it knows {predictor.models}. Learn them "
                f"with Predictor.add_model or 'routoo add-model', or declare prior_quality or prior_like"
            )
        strangers = [m.prior_like for m in pool.models if m.prior_like and resolve(m.prior_like, predictor.models) is None]
        if strangers:
            raise KeyError(f"prior_like names model(s) {strangers} the predictor does not know; it knows {predictor.models}")
        # what the predictor reads for each pool model: its own labels (under the registry's name), else its prior_like's
        self._sources = [
            known or (resolve(m.prior_like, predictor.models) if m.prior_like else None) for m, known in zip(pool.models, labelled)
        ]
        self._unlabelled = [known is None for known in labelled]
        self.pool = pool
        self.predictor = predictor
        self.selector = Selector(pool, constraints)
        self.directory: Path | None = None  # the ``routoo train`` folder it was loaded from, if any
        self._predictor_digest: tuple[tuple, str] = ((), "")
        self._batcher = BatchingPredictor(self._predict_pool)

    def _predict_pool(self, texts: list[str]) -> np.ndarray:
        """Prompts x pool models: the predictor's estimate, or a declared prior for a model it has no labels for."""
        return self._predict_models(texts)

    def _predict_models(self, texts: list[str], context: tuple[str, ...] | list[str] = ()) -> np.ndarray:
        """Prompts x (pool models, then ``context`` models, known names) in one predictor pass."""
        columns = list(dict.fromkeys([s for s in self._sources if s is not None] + list(context)))
        predicted = self.predictor.predict(texts, columns) if columns else np.empty((len(texts), 0))
        quality = np.empty((len(texts), len(self.pool) + len(context)))
        for j, (spec, source) in enumerate(zip(self.pool.models, self._sources)):
            quality[:, j] = predicted[:, columns.index(source)] if source is not None else spec.prior_quality
        for j, name in enumerate(context, len(self.pool)):
            quality[:, j] = predicted[:, columns.index(name)]
        return quality

    @classmethod
    def from_directory(
        cls, directory: str | Path | None = None, pool_names: str | list[str] | None = None, constraints: Constraints | None = None
    ) -> "Router":
        """A router from a ``routoo train`` folder (default: the bundled general predictor, which knows
        every bundled dataset's models; its default pool is mmlu_pro's 29).

        ``pool_names`` keeps a subset of its pool: a list, or a ``--pool`` string. Besides model names
        (any name the model registry resolves: ``gpt-4o-mini``, ``Meta-Llama-3.1-70B-Instruct``; the
        pool keeps the name you gave), the folder's ``pools.json`` names groups: for the bundled
        predictor ``open`` (mmlu_pro's 24 open-weight models) and each bundled dataset's name.
        """
        from routoo_shared.predictors.predictor import Predictor  # its numpy head and encoder load with it

        directory = Path(directory) if directory else BUNDLED_PREDICTOR
        predictor = Predictor.load(directory)
        pool_file = directory / "pool.json"
        if not pool_file.exists():
            raise PredictorFileError(f"no pool.json next to the predictor in {directory}")
        pool = ModelPool.model_validate_json(pool_file.read_text())
        groups = _pool_groups(directory)
        if pool_names or "default" in groups:
            spec = pool_names if isinstance(pool_names, str) else ",".join(pool_names or ["default"])
            pool = pool.subset(expand_pool(spec, pool.names, groups))
            pool = ModelPool(models=[_named_as_asked(m, spec, groups) for m in pool.models])
        router = cls(pool, predictor, constraints)
        router.directory = directory
        return router

    @property
    def constraints(self) -> Constraints:
        return self.selector.constraints

    def warm_up(self) -> None:
        """Load the encoder, the tokenizer and the predictor now (seconds, once a process) instead of in
        the first routed call, where their loading holds the GIL and would stall an event loop."""
        self._predict_pool(["warm-up"])  # the pool's columns, priors included

    def with_pool(self, pool: ModelPool) -> "Router":
        """This router over other specs of the same models (e.g. completed from the models' profiles)."""
        if pool.names != self.pool.names:
            raise ValueError(f"with_pool keeps the models: {self.pool.names} != {pool.names}")
        routed = copy.copy(self)
        routed.pool, routed.selector = pool, Selector(pool, self.constraints)
        return routed

    def fingerprint(self) -> str:
        """A digest of what decides routes: the pool's specs, the constraints and the predictor's saved
        weights; stable across processes, so LLM-cache keys can hold it."""
        key = (id(self.predictor), tuple(self.predictor.models))
        if self._predictor_digest[0] != key:
            with tempfile.TemporaryDirectory() as folder:
                self.predictor.save(folder)
                saved = hashlib.sha256()
                for name in sorted(os.listdir(folder)):
                    saved.update(name.encode() + (Path(folder) / name).read_bytes())
            self._predictor_digest = (key, saved.hexdigest())
        digest = hashlib.sha256(self._predictor_digest[1].encode())
        digest.update(self.pool.model_dump_json().encode() + self.constraints.model_dump_json().encode())
        return digest.hexdigest()[:32]

    def eligible(self, constraints: Constraints | None = None) -> list[str]:
        """Pool models that the prompt-independent limits allow (allow/deny lists, capabilities)."""
        masks = capability_masks(self.pool, constraints or self.constraints)
        allowed = np.all(list(masks.values()), axis=0) if masks else np.ones(len(self.pool), dtype=bool)
        return [name for name, ok in zip(self.pool.names, allowed) if ok]

    def route(
        self, prompt_or_messages: Any, budget: RoutooBudget | None = None, cascade: CascadePolicy | None = None,
        tools: list[dict[str, Any]] | None = None, **settings
    ) -> RoutingDecision:
        return self.route_batch([prompt_or_messages], budget=budget, cascade=cascade, tools=tools, **settings)[0]

    def route_batch(
        self, prompts: list[Any], budget: RoutooBudget | None = None, cascade: CascadePolicy | None = None,
        tools: list[dict[str, Any]] | None = None, **settings
    ) -> list[RoutingDecision]:
        """One decision a prompt; ``settings`` override the router's constraints for this call.

        ``tools`` (OpenAI-style schemas offered with every prompt) count in each prompt's size. With a
        ``cascade`` policy, a decision may carry a ``CascadePlan`` (see ``CascadePolicy``).
        """
        constraints = self.constraints.merged(**settings)
        if budget is not None:
            ceiling = budget.remaining_usd
            if constraints.max_cost_per_query is not None:
                ceiling = min(ceiling, constraints.max_cost_per_query)
            constraints = constraints.model_copy(update={"max_cost_per_query": max(ceiling, 0.0)})
        texts, tokens, quality = self._predict(prompts, cascade.context if cascade else (), tools)
        quality, context_quality = quality[:, : len(self.pool)], quality[:, len(self.pool) :]
        try:
            selection = self.selector.select(quality, tokens, constraints)
        except InfeasibleRoutingError as error:
            if budget is not None and error.constraint == "max_cost_per_query":
                raise BudgetExhaustedError(
                    f"budget exhausted: {max(budget.remaining_usd, 0):.6g} of {budget.total_usd:.6g} USD left, "
                    f"less than any eligible model costs for this prompt"
                ) from error
            raise
        decisions = self._decisions(quality, tokens, selection)
        if cascade is not None:
            plans = self._plan_cascades(cascade, quality, tokens, selection, constraints, context_quality)
            tasks = self._answer_tasks(cascade, texts, plans)
            decisions = [
                d.model_copy(update={"cascade": plan and plan.model_copy(update={"task": task})})
                for d, plan, task in zip(decisions, plans, tasks)
            ]
        return decisions

    def _answer_tasks(self, policy: CascadePolicy, texts: list[str], plans: list) -> list[str | None]:
        """Each planned prompt's task for the policy's per-task answer rules: the predictor's most
        likely category (None without rules, categories or a plan)."""
        if not policy.extraction.rules or not self.predictor.categories or not any(plans):
            return [None] * len(texts)
        likely = self.predictor.predict_categories(texts).argmax(axis=1)
        return [self.predictor.categories[c] if plan else None for c, plan in zip(likely, plans)]

    def _plan_cascades(
        self,
        policy: CascadePolicy,
        quality: np.ndarray,
        tokens: np.ndarray,
        selection: Selection,
        constraints: Constraints,
        context_quality: np.ndarray,
    ) -> list[CascadePlan | None]:
        """Cascade plans under the call's constraints, in the trade-off mode's terms.

        The trade-off prices a unit of the priciest eligible model's cost, as in ``Selector``;
        both calls must be eligible and fit ``max_cost_per_query`` (a shared budget's remainder)
        together. No plan under a quality floor or where the selection had to relax constraints.
        """
        if constraints.min_quality is not None:
            return [None] * len(quality)
        cost = self.pool.cost_matrix(tokens)
        feasible = np.equal(selection.excluded_by, None)
        reference = np.where(feasible, cost, 0).max(axis=1)
        price = constraints.quality_cost_tradeoff / np.where(reference > 0, reference, 1.0)
        ceiling = None
        if constraints.max_cost_per_query is not None:
            ceiling = np.full(len(quality), constraints.max_cost_per_query)
        plans = policy.plans(quality, cost, self.pool.names, price, context_quality, feasible, ceiling)
        relaxed = [b is not None and b.startswith("relaxed:") for b in selection.binding]
        return [None if skip else plan for plan, skip in zip(plans, relaxed)]

    def calibrate_tradeoff(self, dev_prompts: list[Any], target_cost_per_query: float) -> float:
        """The online form of a budget: set the trade-off so that prompts like ``dev_prompts``
        cost ``target_cost_per_query`` on average, then route one prompt at a time with it."""
        _, tokens, quality = self._predict(dev_prompts)
        tradeoff = self.selector.calibrate_tradeoff(quality, tokens, target_cost_per_query)
        self.selector.constraints = self.constraints.merged(quality_cost_tradeoff=tradeoff)
        return tradeoff

    def plan_batch(self, prompts: list[Any], budget_usd: float, **settings) -> list[RoutingDecision]:
        """The paper's setting: a total budget (USD) for the whole batch, spent where it buys most quality.

        Raises TypeError / ValueError (from ``plan_budget``) for a budget that is not a finite,
        non-negative number."""
        tokens, quality, cost, feasible, base = self.plan_inputs(prompts, **settings)
        plan = plan_budget(quality, cost, budget_usd, feasible)
        binding = ["budget" if c != b else None for c, b in zip(plan.chosen, base.chosen)]
        selection = base.model_copy(update={"chosen": plan.chosen, "binding": binding})
        return self._decisions(quality, tokens, selection)

    def plan_inputs(self, prompts: list[Any], **settings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Selection]:
        """What a budget plan reads of each prompt: input tokens, predicted quality and cost (USD) per
        model, which models the constraints allow (prompts x models), and the choice without a budget."""
        constraints = self.constraints.merged(**settings)
        _, tokens, quality = self._predict(prompts)
        base = self.selector.select(quality, tokens, constraints.model_copy(update={"quality_cost_tradeoff": 0.0}))
        return tokens, quality, self.pool.cost_matrix(tokens), np.isfinite(base.scores), base

    def prompt_size(self, prompt_or_messages: Any, tools: list[dict[str, Any]] | None = None) -> int:
        """Prompt tokens of a call as the pool's dearest-counting tokenizer bills them
        (``messages.prompt_tokens``): one size for the cost matrix and the context-window check."""
        tokenizers = {spec.tokenizer for spec in self.pool.models}
        return max(prompt_tokens(prompt_or_messages, tokenizer, tools) for tokenizer in tokenizers)

    def _predict(
        self, prompts: list[Any], context: tuple[str, ...] | list[str] = (), tools: list[dict[str, Any]] | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Texts, input tokens and predicted quality: the pool's columns, then ``context``'s (one pass)."""
        if not prompts:
            raise ValueError("route_batch needs at least one prompt")
        texts = [routing_text(p) for p in prompts]
        tokens = np.array([self.prompt_size(p, tools) for p in prompts])
        if context:  # a cascade's context models too: one pass of its own, outside the shared batches
            return texts, tokens, self._predict_models(texts, context)
        return texts, tokens, self._batcher(texts)

    def _decisions(self, quality: np.ndarray, tokens: np.ndarray, selection: Selection) -> list[RoutingDecision]:
        cost = self.pool.cost_matrix(tokens)
        names = self.pool.names
        decisions = []
        for row, chosen in enumerate(selection.chosen):
            order = np.argsort(-selection.scores[row], kind="stable")
            order = [chosen] + [j for j in order if j != chosen]
            candidates = [
                Candidate(
                    model=names[j],
                    predicted_quality=float(quality[row, j]),
                    estimated_cost_usd=float(cost[row, j]),
                    excluded_by=selection.excluded_by[row, j],
                    unlabelled=self._unlabelled[j],
                )
                for j in order
            ]
            candidates.sort(key=lambda c: c.excluded_by is not None)  # stable: rank kept within groups
            decisions.append(
                RoutingDecision(
                    model=names[chosen],
                    predicted_quality=float(quality[row, chosen]),
                    estimated_cost_usd=float(cost[row, chosen]),
                    input_tokens=int(tokens[row]),
                    binding_constraint=selection.binding[row],
                    candidates=candidates,
                    predictor=self.predictor.name,
                )
            )
        return decisions
