"""What every framework integration does around a call: settings, routing, budget holds, fallback.

``RoutedCalls`` is a pydantic mixin; ``RoutooChatModel`` (LangChain) and ``RoutooLLM`` (LlamaIndex)
inherit it next to their framework's base class and only translate messages and responses. A call is
routed once (``route_call``/``aroute_call``, off the event loop in async code), then one of the four
drivers (``invoke_routed``, ``ainvoke_routed``, ``stream_routed``, ``astream_routed``) tries the chosen
model and the next-best ones. On every exit path (answer, error, timeout, cancellation, interrupt,
abandoned stream) the attempt's budget hold is settled or released, and the model's health updated.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, model_validator

from routoo_shared.routing import timeouts
from routoo_shared.routing.budget import BudgetExhaustedError, Reservation, RoutooBudget
from routoo_shared.routing.conversations import REPLY, Conversation, ConversationStore, InMemoryConversationStore
from routoo_shared.routing.cascade import AnswerEvidence, CascadePolicy
from routoo_shared.routing.fallback import (
    AllModelsFailedError,
    Attempt,
    EmptyResponseError,
    FallbackPolicy,
    InvalidUsageError,
    failure_kind,
    is_fallback_error,
    malformed_answer,
)
from routoo_shared.routing.health import ModelHealth
from routoo_shared.routing.router import Router, RoutingDecision
from routoo_shared.routing.selector import Constraints
from routoo_shared.routing.usage import Usage

Result = TypeVar("Result")
Chunk = TypeVar("Chunk")

SETTINGS = (
    "quality_cost_tradeoff",
    "max_cost_per_query",
    "min_quality",
    "max_latency_s",
    "allowed_models",
    "denied_models",
    "on_infeasible",
)
# Every keyword a call may carry for the engine rather than for the model: routing settings and
# capability flags, the attempt timeout, a forced model and the conversation's session id.
CALL_SETTINGS = (*Constraints.model_fields, "timeout_s", "model", "session_id")
FAILURE_WORDS = {
    "empty": "answered empty", "timeout": "timed out", "rate_limit": "was rate limited",
    "provider": "failed", "budget": "did not fit the budget", "cooldown": "was cooling down",
}


@dataclass(frozen=True)
class FirstAnswer:
    """How an integration calls a cascade's first model without streaming and reads its answer:
    ``invoke(model)`` (a coroutine function in async drivers), the result's usage, whether it holds
    content, the evidence the cascade policy reads, and, for streams, the whole answer as one chunk."""

    invoke: Callable[[str], Any]
    usage_of: Callable[[Any], Usage | None]
    has_content: Callable[[Any], bool]
    evidence_of: Callable[[Any], AnswerEvidence]
    as_chunk: Callable[[Any], Any] = lambda result: result


@dataclass
class RoutedCall:
    """One call in flight: its decision, output bound, timeout and attempts.

    ``models()`` yields the candidates to try, holding each one's worst-case cost on the budget;
    ``succeeded``/``failed`` settle or release that hold. Budget refusals and cooldowns reorder or skip
    candidates without counting as fallbacks.
    """

    owner: "RoutedCalls"
    decision: RoutingDecision
    max_tokens: int | None = None
    timeout_s: float | None = None
    prompt: Any = None  # the messages as routed, measured per model for its hold (None: the decision's size)
    tools: list[dict[str, Any]] | None = None  # the tool schemas sent with them (OpenAI style)
    asked: Callable[[str], int | None] | None = None  # output tokens each model is really asked for
    conversation: Conversation | None = None  # a sticky call's conversation: its model is kept once committed
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: str | None = None
    cooling: list[str] = field(default_factory=list)
    cascaded: dict[str, Any] | None = None  # the cascade's outcome, once its first model was called
    cost_usd: float = 0.0  # what this call's attempts were charged (billed usage priced, else holds kept)
    _hold: Reservation | None = None
    _prompt_sizes: dict[Any, int] = field(default_factory=dict)  # by tokenizer

    # ----- candidates
    def models(self) -> Iterator[str]:
        """Healthy candidates in rank order, then cooling ones; at most ``1 + max_fallbacks`` tried.

        Each yielded model holds its worst-case cost; one the budget cannot hold is skipped.
        """
        order = [self.decision.model] + self.decision.fallbacks
        if self.cascaded is not None:  # escalated: the target first, never a first-stage model again
            plan = self.decision.cascade
            order = [m for m in dict.fromkeys([plan.target] + order) if m not in plan.asks]
        healthy, self.cooling = self.owner.health.order(order)
        tried = 0
        for name in healthy + self.cooling:
            if tried > self.owner.max_fallbacks or self.answered_by is not None:
                return
            try:
                self._hold = self._reserve(name)
            except BudgetExhaustedError as error:
                self.attempts.append(Attempt(model=name, error=str(error), kind="budget", exception=error))
                continue
            tried += 1
            yield name

    def first_stage(self, first: FirstAnswer | None) -> Iterator[str]:
        """The cascade's first-stage models (``plan.asks``), each held on the budget before it is
        yielded. Nothing when no cascade is planned, one of them is cooling down or the first cannot
        be held (a plain call); no more once a later one cannot be held (the call escalates)."""
        plan = self.decision.cascade
        if plan is None or first is None or any(self.owner.health.cooling_s(name) for name in plan.asks):
            return
        for name in plan.asks:
            try:
                self._hold = self._reserve(name)
            except BudgetExhaustedError as error:
                if name != plan.first:
                    self.attempts.append(Attempt(model=name, error=str(error), kind="budget", exception=error))
                    self._cascade_outcome(escalated=True)
                return
            yield name

    def read_first(self, name: str, result: Any, usage: Usage | None, first: FirstAnswer) -> AnswerEvidence:
        """Charge a first-stage call; what its answer shows (a blank answer shows no answer)."""
        self.ended(name, usage)
        return first.evidence_of(result) if first.has_content(result) else AnswerEvidence(output_tokens=0)

    def first_stands(self, evidence: list[AnswerEvidence]) -> bool:
        """Whether the first model's answer stands, from every first-stage answer's evidence; records the outcome."""
        plan = self.decision.cascade
        if self.cascaded is not None or len(evidence) < len(plan.asks):
            return False  # a first-stage call could not be held: escalated already
        escalate = plan.should_escalate(*evidence)
        self._cascade_outcome(escalated=escalate, posterior=None if evidence[0].output_tokens == 0 else plan.posterior(*evidence),
                              final_answers=[plan.final_answer(e) for e in evidence])
        if not escalate:
            self.committed(plan.first)
            for name in plan.asks:
                self.owner.health.succeeded(name)
        return not escalate

    def first_failed(self, name: str, error: BaseException) -> bool:
        """A first-stage call failed: True when the target should answer (see ``failed``)."""
        self._cascade_outcome(escalated=True, failed=name)
        return self.failed(name, error)

    def _cascade_outcome(self, escalated: bool, **details: Any) -> None:
        plan = self.decision.cascade
        self.cascaded = {"first": plan.first, "second": plan.second, "target": plan.target, "escalated": escalated,
                         "posterior": None, **details}

    def give_up(self) -> Exception:
        """The error for a call no candidate answered: the budget's refusal when nothing could be
        held, else ``AllModelsFailedError`` with every attempt's exception (the last as ``__cause__``)."""
        failures = [a for a in self.attempts if a.exception is not None]
        if failures and all(a.kind == "budget" for a in failures):
            return failures[0].exception
        error = AllModelsFailedError(failures)
        error.__cause__ = failures[-1].exception if failures else None
        return error

    def timeout(self, name: str) -> float:
        """Seconds for one attempt (or the wait for one stream chunk) on ``name``: the call's ``timeout_s``,
        else the model spec's, else the integration's, else twice the spec's predicted latency (>= 10 s)."""
        spec = self.owner.router.pool[name]
        for seconds in (self.timeout_s, spec.timeout_s, self.owner.timeout_s):
            if seconds is not None:
                return seconds
        return spec.attempt_timeout(self.input_tokens(name), self.asked_tokens(name))

    # ----- what a model is asked for
    def input_tokens(self, name: str) -> int:
        """Prompt tokens ``name`` bills for this call: the prompt and tools measured with its tokenizer
        (``ModelSpec.prompt_tokens``), else the routed size."""
        if self.prompt is None:
            return self.decision.input_tokens
        spec = self.owner.router.pool[name]
        if spec.tokenizer not in self._prompt_sizes:  # models that count alike share one measure
            self._prompt_sizes[spec.tokenizer] = spec.prompt_tokens(self.prompt, self.tools)
        return self._prompt_sizes[spec.tokenizer]

    def asked_tokens(self, name: str) -> int | None:
        """Output tokens ``name``'s provider is really asked for (``asked``, given by the integration),
        else the call's ``max_tokens``; None when nothing bounds it."""
        return self.asked(name) if self.asked is not None else self.max_tokens

    def output_bound(self, name: str) -> int:
        """Output tokens ``name`` may write (the hold's worst case): ``asked_tokens``, capped by the
        spec's ``max_output_tokens``, which also bounds an unbounded request."""
        return self.owner.router.pool[name].output_bound(self.asked_tokens(name))

    # ----- budget
    def _reserve(self, name: str) -> Reservation | None:
        budget = self.owner.budget
        if budget is None:
            return None
        spec, prompt, bound = self.owner.router.pool[name], self.input_tokens(name), self.output_bound(name)
        expected = spec.cost(prompt, min(spec.expected_output_tokens, bound))
        return budget.reserve(name, expected, spec.worst_cost(prompt, bound))

    def _charge(self, usd: float | None) -> None:
        """Settle the current hold at ``usd`` (added to ``cost_usd``), or release it when ``usd`` is None."""
        if usd is not None:
            self.cost_usd += usd
        hold, self._hold = self._hold, None
        if hold is None:
            return
        if usd is None:
            self.owner.budget.release(hold)
        else:
            self.owner.budget.settle(hold, usd)

    def _prompt_cost(self, name: str) -> float:
        return self.owner.router.pool[name].cost(self.input_tokens(name), 0)

    def abandon(self, name: str, usage_of: Callable[[Any], Usage | None]) -> Callable[[bool, Any], None]:
        """The attempt on ``name`` timed out, but its request runs on (a sync call's thread): its hold
        stays until the request ends, then ``finish(ok, value)`` settles it to the usage its result
        reports (the hold itself when it reports none), or as ``failed`` would for an error."""
        hold, self._hold = self._hold, None
        budget = self.owner.budget

        def finish(ok: bool, value: Any) -> None:
            if hold is None:
                return
            try:
                usage = usage_of(value) if ok else None
            except InvalidUsageError:
                usage = None
            if usage is not None:
                budget.settle(hold, self._cost(name, usage))
            elif ok or _billed(value):
                budget.settle(hold, hold.held if ok else self._prompt_cost(name))
            else:
                budget.release(hold)

        return finish

    # ----- outcomes
    def succeeded(self, name: str, usage: Usage | None) -> None:
        """The model answered: charge its reported usage (else its hold: the worst case)."""
        self.committed(name)
        self.owner.health.succeeded(name)
        self.ended(name, usage)

    def committed(self, name: str) -> None:
        """``name`` answers this call: no fallback from here (a stream's hold settles at its end, and its
        health counts once the stream has ended well or broken)."""
        self.attempts.append(Attempt(model=name))
        self.answered_by = name
        if self.conversation is not None and self.conversation.key is not None:
            self.owner.conversations.set(self.conversation.key, name, self.owner.conversation_ttl_s)

    def answered_with(self, reply: str) -> None:
        """A sticky call's answer, as ``conversations.reply_digest``: keeps its model for the
        conversation whose last assistant turn it becomes (for histories that carry no routing record)."""
        if self.conversation is not None and self.answered_by is not None:
            self.owner.conversations.set(REPLY + reply, self.answered_by, self.owner.conversation_ttl_s)

    def ended(self, name: str, usage: Usage | None) -> None:
        """A committed answer or stream ended, broke off or was abandoned: charge its reported usage, else
        keep its hold (the worst case; never a guess from the visible text)."""
        if usage is None:
            hold = self._hold
            self._charge(hold.held if hold is not None else None)
        else:
            self._charge(self._cost(name, usage))

    def broke(self, name: str, error: BaseException) -> None:
        """A committed stream failed midway: too late to fall back, but the model's health counts it."""
        if self.owner.falls_back(error):
            self.owner.health.failed(name, error)

    def _cost(self, name: str, usage: Usage) -> float:
        return self.owner.router.pool[name].price(usage)

    def failed(self, name: str, error: BaseException, usage: Usage | None = None) -> bool:
        """Settle the attempt's hold for ``error``; True when the next model should take over.

        Billed work is charged: reported usage, else the prompt for an empty answer, a timeout, a
        cancellation or an interrupt (the provider had the request); other errors release the hold.
        """
        error = malformed_answer(error, type(self.owner.pool_model(name))) or error
        if usage is None and isinstance(error, EmptyResponseError):
            usage = error.usage
        billed = _billed(error)
        if usage is not None:
            self._charge(self._cost(name, usage))
        elif isinstance(error, InvalidUsageError):
            hold = self._hold
            self._charge(hold.held if hold is not None else None)
        else:
            self._charge(self._prompt_cost(name) if billed else None)
        if not self.owner.falls_back(error):
            return False
        self.owner.health.failed(name, error)
        self.attempts.append(Attempt(model=name, error=f"{type(error).__name__}: {error}", kind=failure_kind(error), exception=error))
        return True

    # ----- what the response says
    def reason(self) -> str:
        """Why ``answered_by`` answered, in one line: the decision, and what happened to the models before it."""
        model = self.answered_by or self.decision.model
        before = [f"{a.model} {FAILURE_WORDS[a.kind or 'provider']}" for a in self.attempts if a.model != model and a.error]
        before += [f"{m} cooling down" for m in self.cooling if m != model and m not in {a.model for a in self.attempts}]
        notes = ["next best" if model != self.decision.model else self.decision.why] + before
        if self.decision.sticky and model != self.decision.model:
            notes.append(f"{self.decision.model} was {self.decision.sticky_reason}")
        elif not self.decision.sticky and self.decision.sticky_reason:
            notes.append(self.decision.sticky_reason)
        return self.decision.explain(model, "; ".join(notes))

    def record(self) -> dict[str, Any]:
        """The JSON-ready record both integrations attach to responses under ``routoo``."""
        record = self.decision.model_dump()
        record.update(
            answered_by=self.answered_by,
            attempts=[a.model_dump() for a in self.attempts],
            cooling_down=list(self.cooling),
            cascade_outcome=self.cascaded,
            reason=self.reason(),
        )
        return record


class RoutedCalls(BaseModel):
    """Routing settings (each overridable per call), failure handling, and the four call drivers."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Router
    quality_cost_tradeoff: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_cost_per_query: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_latency_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    allowed_models: list[str] | None = None
    denied_models: list[str] | None = None
    on_infeasible: Literal["raise", "relax"] = "raise"
    max_fallbacks: int = Field(default=2, ge=0, description="next-best models tried after the chosen one fails")
    budget: RoutooBudget | None = Field(default=None, description="spending shared with other chains or agents")
    store: str | None = Field(
        default=None, pattern=r"^(redis|rediss|unix)://",
        description="redis://host:port/db: model cooldowns shared by every process and host naming it, so a "
        "model resting in one worker rests in all (default: this object's own)",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="seconds an attempt (or the wait for a stream's next chunk) may take before the next-best "
        "model is tried; default: each ModelSpec's timeout_s, else twice its predicted latency, at least 10 s",
    )
    allowed_fails: int = Field(default=3, ge=1, description="consecutive failures before a model cools down")
    cooldown_s: float = Field(default=60.0, ge=0, allow_inf_nan=False, description="rest after repeated failures "
                              "(a rate-limited model rests for the provider's Retry-After when given)")
    fallback_on: FallbackPolicy | tuple[type[BaseException], ...] | None = Field(
        default=None, description="which errors move to the next model: a predicate or exception types "
        "(default: provider, network, rate-limit, timeout and empty-answer errors; never programming errors)",
    )
    sticky: bool = Field(
        default=False, description="keep a conversation on the model that answered it (agent tool loops; some "
        "providers reject another provider's tool-call history): it is tried first, the others stay as "
        "fallbacks. A conversation is named by session_id, else LangGraph's thread_id, else its last assistant turn",
    )
    session_id: str | None = Field(
        default=None, min_length=1, description="names the conversation for sticky routing (also per call: "
        "invoke(..., session_id=...)); a call that has one is sticky",
    )
    conversations: ConversationStore = Field(
        default_factory=InMemoryConversationStore, description="where sticky routing keeps each conversation's "
        "model (default: this process's memory; share one, e.g. on Redis, between workers)",
    )
    conversation_ttl_s: float = Field(default=86400.0, gt=0, allow_inf_nan=False,
                                      description="seconds a conversation's model is kept after its last turn")
    cascade: CascadePolicy | None = Field(
        default=None, description="answer-aware cascades: where the policy expects it to pay, a cheap model "
        "answers first and the planned target only when that answer looks doubtful (use a non-zero "
        "quality_cost_tradeoff; CascadePolicy.load() is the bundled predictor's)",
    )
    _health: ModelHealth | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _warm_router(self) -> "RoutedCalls":
        self.router.warm_up()  # a model built before the event loop runs never stalls it on its first call
        return self

    # ----- how the settings serialise (to_dict, to_json, model_dump)
    @field_serializer("router")
    def _describe_router(self, router: Router) -> dict[str, Any]:
        """The router by its ``routoo train`` folder (None when built in memory), pool and constraints."""
        return {
            "directory": str(router.directory) if router.directory is not None else None,
            "pool": router.pool.names,
            "constraints": router.constraints.model_dump(exclude_defaults=True),
        }

    @field_serializer("budget")
    def _describe_budget(self, budget: RoutooBudget | None) -> dict[str, float] | None:
        """The budget's configuration, never its live state (spending changes on every call, and
        identities built from ``to_dict``, such as LlamaIndex's ingestion-cache keys, must not)."""
        return None if budget is None else {"total_usd": budget.total_usd}

    @field_serializer("conversations")
    def _describe_store(self, store: ConversationStore) -> str:
        return type(store).__qualname__

    @field_serializer("fallback_on")
    def _describe_policy(self, policy: Any) -> list[str] | str | None:
        if policy is None:
            return None
        if isinstance(policy, tuple):
            return [f"{kind.__module__}.{kind.__qualname__}" for kind in policy]
        return f"{getattr(policy, '__module__', '?')}.{getattr(policy, '__qualname__', type(policy).__name__)}"

    @property
    def health(self) -> ModelHealth:
        """Failure counts and cooldowns of this object's models, shared by its copies' calls."""
        if self._health is None and self.store is None:
            self._health = ModelHealth(self.allowed_fails, self.cooldown_s)
        elif self._health is None:
            from routoo_shared.stores.redis_store import RedisModelHealth

            self._health = RedisModelHealth(self.store, self.allowed_fails, self.cooldown_s)
        return self._health

    def falls_back(self, error: BaseException) -> bool:
        if not isinstance(error, Exception):  # cancellation, interrupt, generator exit
            return False
        policy = self.fallback_on
        if policy is None:
            return is_fallback_error(error)
        return isinstance(error, policy) if isinstance(policy, tuple) else bool(policy(error))

    def pool_model(self, name: str) -> Any:
        """The integration's object for pool model ``name`` (a chat model, an LLM): its class tells a
        provider's unreadable answer from the caller's own error (``fallback.malformed_answer``)."""
        raise NotImplementedError

    def check_pool(self, given: set[str]) -> None:
        pool = set(self.router.pool.names)
        if pool != given:
            raise ValueError(
                f"models and the router's pool differ: no chat model for {sorted(pool - given)}, "
                f"no spec for {sorted(given - pool)}"
            )

    def routing_constraints(self, **overrides: Any) -> Constraints:
        return Constraints(**{name: getattr(self, name) for name in SETTINGS}).merged(**overrides)

    def eligible_models(self, **overrides: Any) -> list[str]:
        """Pool models this object's settings and the router's own constraints allow for a call with
        ``overrides`` (per-call settings and capability flags such as ``requires_tools=True``)."""
        settings = {**self.routing_constraints().model_dump(), **overrides}
        return self.router.eligible(self.router.constraints.merged(**settings))

    # ----- routing
    def route_call(
        self,
        messages: Any,
        kwargs: dict[str, Any],
        max_tokens: int | None = None,
        prefer_streaming: bool = False,
        tools: list[dict[str, Any]] | None = None,
        asked: Callable[[str], int | None] | None = None,
        conversation: Conversation | None = None,
        **requirements: bool,
    ) -> tuple[RoutedCall, dict[str, Any]]:
        """The routed call, and the call's kwargs without the routing settings.

        Per-call settings come in ``kwargs`` (``quality_cost_tradeoff=...``, ``timeout_s=...``,
        ``session_id=...``); ``model="name"`` forces one pool model; ``requirements`` are capability flags
        the call needs (``requires_tools=True``...); ``prefer_streaming`` keeps a stream on streaming-capable
        models when any is eligible. ``tools`` (OpenAI-style schemas the call sends) count in the prompt's
        size, as providers bill them. The budget holds, for each model, the output ``asked(name)`` says its
        provider class will really ask for (None: unknown), else ``max_tokens``, else the spec's
        ``max_output_tokens``. ``conversation`` is what the integration knows of the call's conversation
        (thread id, last assistant turn): a sticky call keeps its model first (``RoutingDecision.kept``).
        Raises ``KeyError`` for an unknown forced model, ``InfeasibleRoutingError``/``BudgetExhaustedError``
        when nothing can take it.
        """
        call = dict(kwargs)
        overrides = {name: call.pop(name) for name in tuple(Constraints.model_fields) if name in call}
        overrides.update({k: v for k, v in requirements.items() if v})
        if prefer_streaming and self.eligible_models(requires_streaming=True, **overrides):
            overrides["requires_streaming"] = True
        timeout_s = call.pop("timeout_s", None)
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        forced = call.pop("model", None)
        if forced is not None:
            self.router.pool[forced]  # unknown model -> KeyError naming the pool
            overrides["allowed_models"] = [forced]
        constraints = self.routing_constraints(**overrides).model_dump()
        session_id = call.pop("session_id", None) or self.session_id
        if session_id is not None and not isinstance(session_id, str):
            raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
        if session_id is not None or self.sticky:
            conversation = replace(conversation or Conversation(), session_id=session_id)
        else:
            conversation = None
        kept = self._kept_model(conversation) if conversation is not None else None
        decision = self.router.route(messages, budget=self.budget, cascade=None if kept else self.cascade, tools=tools,
                                     **constraints)
        if kept is not None:
            decision = decision.kept(kept, conversation.named_by)
        routed = RoutedCall(self, decision, max_tokens=max_tokens, timeout_s=timeout_s, prompt=messages, tools=tools,
                            asked=asked, conversation=conversation)
        return routed, call

    async def aroute_call(
        self,
        messages: Any,
        kwargs: dict[str, Any],
        max_tokens: int | None = None,
        prefer_streaming: bool = False,
        tools: list[dict[str, Any]] | None = None,
        asked: Callable[[str], int | None] | None = None,
        conversation: Conversation | None = None,
        **requirements: bool,
    ) -> tuple[RoutedCall, dict[str, Any]]:
        """``route_call`` in a routing thread, so the encoder and predictor never run on the event loop;
        the calls that one turn of the loop starts (a gather) go to the thread as one job."""
        route = partial(self.route_call, messages, kwargs, max_tokens, prefer_streaming, tools=tools, asked=asked,
                        conversation=conversation, **requirements)
        return await _off_the_loop(route)

    def _kept_model(self, conversation: Conversation) -> str | None:
        """The pool model this conversation is kept on: the store's for its session or thread, else the
        one its history says answered its last assistant turn (recorded, or found by that turn's digest)."""
        kept = self.conversations.get(conversation.key) if conversation.key is not None else None
        if kept is None:
            kept = conversation.last_answered_by
        if kept is None and conversation.last_reply is not None:
            kept = self.conversations.get(REPLY + conversation.last_reply)
        return kept if kept in self.router.pool.names else None

    # ----- a cascade's first answer, then the four drivers
    def _first_answer(self, call: RoutedCall, first: FirstAnswer | None) -> Any | None:
        """The cascade's first model's answer when it stands; None when there is no cascade or it escalates."""
        results, evidence = [], []
        for name in call.first_stage(first):
            try:
                result = timeouts.call(lambda: first.invoke(name), call.timeout(name), name,
                                       partial(call.abandon, name, first.usage_of))
                usage = first.usage_of(result)
            except BaseException as error:
                if not call.first_failed(name, error):
                    raise
                return None
            results.append(result)
            evidence.append(call.read_first(name, result, usage, first))
        return results[0] if results and call.first_stands(evidence) else None

    async def _afirst_answer(self, call: RoutedCall, first: FirstAnswer | None) -> Any | None:
        """The async form of ``_first_answer``."""
        results, evidence = [], []
        for name in call.first_stage(first):
            try:
                result = await timeouts.acall(first.invoke(name), call.timeout(name), name)
                usage = first.usage_of(result)
            except BaseException as error:
                if not call.first_failed(name, error):
                    raise
                return None
            results.append(result)
            evidence.append(call.read_first(name, result, usage, first))
        return results[0] if results and call.first_stands(evidence) else None

    def invoke_routed(
        self,
        call: RoutedCall,
        invoke: Callable[[str], Result],
        usage_of: Callable[[Result], Usage | None],
        has_content: Callable[[Result], bool],
        evidence_of: Callable[[Result], AnswerEvidence] | None = None,
    ) -> Result:
        """``invoke(model)`` on the chosen model, then the next-best ones, each within its timeout.

        With ``evidence_of`` and a planned cascade, the cascade's first model answers first and its
        answer stands unless the policy reads it as doubtful."""
        first = FirstAnswer(invoke, usage_of, has_content, evidence_of) if evidence_of else None
        if (answer := self._first_answer(call, first)) is not None:
            return answer
        for name in call.models():
            try:
                result = timeouts.call(lambda: invoke(name), call.timeout(name), name, partial(call.abandon, name, usage_of))
                usage = usage_of(result)
                if not has_content(result):
                    raise _empty(usage)
            except BaseException as error:
                if not call.failed(name, error):
                    raise
                continue
            call.succeeded(name, usage)
            return result
        raise call.give_up()

    async def ainvoke_routed(
        self,
        call: RoutedCall,
        invoke: Callable[[str], Awaitable[Result]],
        usage_of: Callable[[Result], Usage | None],
        has_content: Callable[[Result], bool],
        evidence_of: Callable[[Result], AnswerEvidence] | None = None,
    ) -> Result:
        """The async form of ``invoke_routed``."""
        first = FirstAnswer(invoke, usage_of, has_content, evidence_of) if evidence_of else None
        if (answer := await self._afirst_answer(call, first)) is not None:
            return answer
        for name in call.models():
            try:
                result = await timeouts.acall(invoke(name), call.timeout(name), name)
                usage = usage_of(result)
                if not has_content(result):
                    raise _empty(usage)
            except BaseException as error:
                if not call.failed(name, error):
                    raise
                continue
            call.succeeded(name, usage)
            return result
        raise call.give_up()

    def stream_routed(
        self,
        call: RoutedCall,
        open_stream: Callable[[str], Iterator[Chunk]],
        usage_of: Callable[[Sequence[Chunk]], Usage | None],
        has_content: Callable[[Chunk], bool],
        first: FirstAnswer | None = None,
    ) -> Iterator[tuple[str, Chunk]]:
        """(model, chunk) pairs of the first model whose stream reaches content within its timeout.

        Chunks before the first one with content are held back, so a model that fails or streams
        nothing is replaced by the next-best one; after that the stream is committed to its model.
        With ``first`` and a planned cascade, the cascade's first model answers whole (one chunk) unless
        its answer reads as doubtful; only the final model's answer is streamed.
        """
        if (answer := self._first_answer(call, first)) is not None:
            yield call.answered_by, first.as_chunk(answer)
            return
        for name in call.models():
            seen: list[Chunk] = []
            source = None
            try:
                timeout = call.timeout(name)
                opened = timeouts.call(lambda: iter(open_stream(name)), timeout, name)
                source = timeouts.TimedIterator(opened, timeout, name)
                for chunk in source:
                    seen.append(chunk)
                    if has_content(chunk):
                        break
                else:
                    raise _empty(usage_of(seen), "the stream ended without content")
            except BaseException as error:
                if source is not None:
                    source.close()
                if not call.failed(name, error, _safe_usage(usage_of, seen)):
                    raise
                continue
            call.committed(name)
            try:
                for chunk in seen:
                    yield name, chunk
                for chunk in source:
                    seen.append(chunk)
                    yield name, chunk
                self.health.succeeded(name)
            except BaseException as error:
                call.broke(name, error)
                raise
            finally:
                call.ended(name, _safe_usage(usage_of, seen))
                source.close()
            return
        raise call.give_up()

    async def astream_routed(
        self,
        call: RoutedCall,
        open_stream: Callable[[str], AsyncIterator[Chunk] | Awaitable[AsyncIterator[Chunk]]],
        usage_of: Callable[[Sequence[Chunk]], Usage | None],
        has_content: Callable[[Chunk], bool],
        first: FirstAnswer | None = None,
    ) -> AsyncIterator[tuple[str, Chunk]]:
        """The async form of ``stream_routed``; ``open_stream`` may return the stream or an awaitable of it."""
        if (answer := await self._afirst_answer(call, first)) is not None:
            yield call.answered_by, first.as_chunk(answer)
            return
        for name in call.models():
            seen: list[Chunk] = []
            source = None
            try:
                timeout = call.timeout(name)
                opened = open_stream(name)
                source = await timeouts.acall(opened, timeout, name) if inspect.isawaitable(opened) else opened
                while True:
                    try:
                        chunk = await timeouts.anext_within(source, timeout, name)
                    except StopAsyncIteration:
                        raise _empty(usage_of(seen), "the stream ended without content") from None
                    seen.append(chunk)
                    if has_content(chunk):
                        break
            except BaseException as error:
                falls_back = call.failed(name, error, _safe_usage(usage_of, seen))
                _close_later(source)
                if not falls_back:
                    raise
                continue
            call.committed(name)
            try:
                for chunk in seen:
                    yield name, chunk
                while True:
                    try:
                        chunk = await timeouts.anext_within(source, timeout, name)
                    except StopAsyncIteration:
                        break
                    seen.append(chunk)
                    yield name, chunk
                self.health.succeeded(name)
            except BaseException as error:
                call.broke(name, error)
                raise
            finally:
                call.ended(name, _safe_usage(usage_of, seen))
                _close_later(source)
            return
        raise call.give_up()


_CLOSING: set[asyncio.Future] = set()  # streams being closed in the background (kept from the GC)
# Two threads: while one runs a predictor pass, the other gathers the next batch. Routing is mostly
# Python (the static encoder and numpy head take ~2 ms), so more threads only take the GIL from the loop.
_ROUTING_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="routoo-route")
_PENDING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> jobs of its current turn


async def _off_the_loop(job: Callable[[], Any]) -> Any:
    """``job()`` in a routing thread (with the caller's context variables). Jobs started in the same
    turn of the loop go as one: each hand-off to a thread that runs Python costs the loop the GIL for up
    to a switch interval (5 ms), so a gather of 32 calls handed off one by one stalled it ~160 ms."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    jobs = _PENDING.get(loop)
    if jobs is None:
        jobs = _PENDING[loop] = []
        loop.call_soon(lambda: _ROUTING_THREADS.submit(_run_jobs, loop, _PENDING.pop(loop)))
    jobs.append((contextvars.copy_context(), job, future))
    return await future


def _run_jobs(loop: asyncio.AbstractEventLoop, jobs: list) -> None:
    for context, job, future in jobs:
        try:
            outcome = (True, context.run(job))
        except BaseException as error:  # handed to the awaiting caller, who decides
            outcome = (False, error)
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop closed: nobody is waiting
            return
        time.sleep(0)  # let the loop take the GIL between jobs


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if not future.done():  # a cancelled caller has gone; routing reserved nothing
        future.set_result(value) if ok else future.set_exception(value)


def _empty(usage: Usage | None, message: str = "the model returned an empty answer") -> EmptyResponseError:
    return EmptyResponseError(message, usage)


def _billed(error: BaseException) -> bool:
    """Whether the provider bills an attempt that ended in ``error``: an empty answer, a timeout, an
    unreadable usage report, a cancellation or an interrupt (it had the request); not other errors."""
    return isinstance(error, (EmptyResponseError, TimeoutError, InvalidUsageError)) or not isinstance(error, Exception)


def _safe_usage(usage_of: Callable[[Sequence[Chunk]], Usage | None], seen: Sequence[Chunk]) -> Usage | None:
    """Usage of what a stream sent; a stream that broke off may carry none (or an invalid count)."""
    try:
        return usage_of(seen) if seen else None
    except InvalidUsageError:
        return None


def _close_later(source: Any) -> None:
    """Close an async stream in the background: a timed-out or stuck provider stream may take as long
    to close as it took to hang, and the caller has already moved on (its hold is settled)."""
    close = getattr(source, "aclose", None)
    if close is not None:
        task = asyncio.ensure_future(_quietly(close()))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)


async def _quietly(closing: Awaitable[Any]) -> None:
    try:
        await closing
    except Exception:  # a broken stream may fail to close; the attempt's outcome is already decided
        pass
