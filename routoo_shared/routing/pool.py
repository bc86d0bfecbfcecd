"""The model pool: what each candidate costs, how fast it is and what it can do."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from routoo_shared.routing.messages import PER_MESSAGE_TOKENS, REPLY_PRIMING_TOKENS, prompt_tokens
from routoo_shared.routing.tokens import Tokenizer, tokenizer_for

if TYPE_CHECKING:
    from routoo_shared.routing.usage import Usage


MIN_TIMEOUT_S = 10.0


DEFAULT_CONTEXT_WINDOW = 8192


class PriceLookupError(ValueError):
    """A model has no explicit price and the genai-prices table does not know it."""


class PriceTier(BaseModel):
    """A price that applies to every token of a call whose prompt exceeds ``above_input_tokens``
    (a provider's long-context tier; the tier is chosen by prompt size, as genai-prices and the
    providers bill it)."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    above_input_tokens: int = Field(ge=0)
    price_in_per_mtok: float = Field(ge=0)
    price_out_per_mtok: float = Field(ge=0)


class ProviderFacts(BaseModel):
    """What genai-prices knows of a model: base prices for a typical request, tiers, context window."""

    price_in_per_mtok: float
    price_out_per_mtok: float
    price_tiers: list[PriceTier]
    context_window: int | None


def lookup_model(model: str, provider: str | None) -> ProviderFacts:
    """Prices and context window of ``model`` from the genai-prices table (bundled snapshot, no network).

    Base prices are those of a typical request (below any long-context tier); the tiers are kept
    apart, so only prompts that reach a tier pay it. Raises ``PriceLookupError`` for unknown models.
    """
    from genai_prices import Usage, calc_price
    from genai_prices.types import TieredPrices

    try:
        calc = calc_price(Usage(input_tokens=1, output_tokens=1), model, provider_id=provider)
    except LookupError as error:
        raise PriceLookupError(
            f"no price for model {model!r} (provider {provider!r}) in genai-prices; "
            f"give price_in_per_mtok and price_out_per_mtok explicitly"
        ) from error
    prices = {key: getattr(calc.model_price, key, None) for key in ("input_mtok", "output_mtok")}
    if any(price is None for price in prices.values()):
        raise PriceLookupError(
            f"genai-prices has no per-token price for {model!r} (provider {provider!r}); give prices explicitly"
        )
    base = {key: float(p.base if isinstance(p, TieredPrices) else p) for key, p in prices.items()}
    starts = sorted({t.start for p in prices.values() if isinstance(p, TieredPrices) for t in p.tiers})

    def at(price, start: int) -> float:  # the rate for prompts just above ``start``
        if not isinstance(price, TieredPrices):
            return float(price)
        reached = [t.price for t in price.tiers if t.start <= start]
        return float(reached[-1] if reached else price.base)

    tiers = [
        PriceTier(above_input_tokens=s, price_in_per_mtok=at(prices["input_mtok"], s), price_out_per_mtok=at(prices["output_mtok"], s))
        for s in starts
    ]
    return ProviderFacts(
        price_in_per_mtok=base["input_mtok"],
        price_out_per_mtok=base["output_mtok"],
        price_tiers=tiers,
        context_window=calc.model.context_window,
    )


PROFILE_FIELDS = {  # LangChain model profile key -> ModelSpec field
    "max_input_tokens": "context_window",  # models.dev's context limit: prompt and answer together
    "max_output_tokens": "max_output_tokens",
    "tool_calling": "supports_tools",
    "structured_output": "supports_structured_output",
    "image_inputs": "supports_vision",
}


def fields_from_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The ``ModelSpec`` fields a LangChain model profile gives (absent entries and zero limits skipped)."""
    fields = {field: profile[key] for key, field in PROFILE_FIELDS.items() if profile.get(key) is not None}
    return {field: value for field, value in fields.items() if not (field in ("context_window", "max_output_tokens") and value <= 0)}


class ModelSpec(BaseModel):
    """One candidate model. Prices are USD per 1M tokens; latency figures feed ``max_latency_s``.

    Every number must be finite and in range (``ValidationError`` naming the field otherwise), so an
    infinite price or a NaN latency can never win a route.
    """

    model_config = ConfigDict(allow_inf_nan=False, validate_assignment=True)

    name: str = Field(min_length=1)
    provider: str | None = None
    provider_model: str | None = Field(default=None, description="the provider's id when it differs from name")
    price_in_per_mtok: float | None = Field(default=None, ge=0)
    price_out_per_mtok: float | None = Field(default=None, ge=0)
    expected_output_tokens: float = Field(default=256, ge=0)
    max_output_tokens: int = Field(
        default=4096,
        gt=0,
        description="output tokens a call may produce when it sets no max_tokens; a budget holds this much "
        "before the call, so concurrent calls cannot overspend it",
    )
    context_window: int = Field(
        default=DEFAULT_CONTEXT_WINDOW,
        gt=0,
        description="input plus output tokens a call may hold; default: genai-prices' figure for a provider "
        "model, else the model's LangChain profile, else 8,192 with a warning",
    )
    ttft_s: float = Field(default=0.5, ge=0, description="time to first token")
    tokens_per_s: float = Field(default=50.0, gt=0, description="output speed")
    prefill_tokens_per_s: float = Field(default=2000.0, gt=0, description="prompt processing speed")
    timeout_s: float | None = Field(
        default=None, gt=0, description="seconds an attempt may take before the next-best model is tried "
        "(default: twice the latency this spec predicts for the call, at least 10 s)"
    )
    supports_tools: bool = False
    supports_structured_output: bool = False
    supports_streaming: bool = True
    supports_vision: bool | None = Field(
        default=None, description="reads images; None: not declared, so image inputs may still go to it"
    )
    price_tiers: list[PriceTier] = Field(
        default_factory=list, description="long-context prices, by prompt size (from genai-prices for provider models)"
    )
    priced_by: Literal["genai-prices", "spec"] = Field(
        default="spec", description="who prices a call's usage: genai-prices' calc_price (set when the prices came "
        "from its table: cache reads and writes, reasoning, audio and tiers at the provider's rates), or this "
        "spec's two rates and tiers (explicit prices)",
    )
    prior_quality: float | None = Field(
        default=None, ge=0, le=1, description="for a model with no labels: its predicted quality on every prompt"
    )
    prior_like: str | None = Field(
        default=None, min_length=1, description="for a model with no labels: predict it as this known model"
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_provider(cls, data: Any) -> Any:
        """Prices, tiers and context window from genai-prices where not given; a window that nothing
        gives defaults to ``DEFAULT_CONTEXT_WINDOW`` with a warning, never silently."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = lambda key: data.get(key) is not None  # noqa: E731
        priced = given("price_in_per_mtok") and given("price_out_per_mtok")
        if not priced or (not given("context_window") and given("provider")):
            if not given("provider"):
                raise PriceLookupError(
                    f"model {data.get('name')!r} has no price: give price_in_per_mtok and price_out_per_mtok, "
                    f"or a provider to look it up in genai-prices"
                )
            try:
                facts = lookup_model(data.get("provider_model") or data.get("name") or "", data["provider"])
            except PriceLookupError:
                if not priced:
                    raise
                facts = None  # prices given; the table only lacks the window
            if facts is not None:
                if not priced:
                    data.setdefault("price_tiers", [t.model_dump() for t in facts.price_tiers])
                    data.setdefault("priced_by", "genai-prices")
                    for key in ("price_in_per_mtok", "price_out_per_mtok"):
                        data[key] = data[key] if given(key) else getattr(facts, key)
                if not given("context_window") and facts.context_window:
                    data["context_window"] = facts.context_window
        if not given("context_window"):  # the field default applies, left unset so a profile can fill it
            warnings.warn(
                f"context window of model {data.get('name')!r} is unknown; assuming {DEFAULT_CONTEXT_WINDOW:,} "
                f"tokens. Give context_window, or build the spec with ModelSpec.from_chat_model to read the "
                f"model's profile",
                stacklevel=3,  # the caller of ModelSpec(...)
            )
        return data

    @model_validator(mode="after")
    def _one_prior(self) -> "ModelSpec":
        if self.prior_quality is not None and self.prior_like is not None:
            raise ValueError(f"model {self.name!r}: give prior_quality or prior_like, not both")
        return self

    @property
    def has_prior(self) -> bool:
        """Whether the model may join a pool without labels (``prior_quality`` or ``prior_like``)."""
        return self.prior_quality is not None or self.prior_like is not None

    def rates(self, input_tokens: float) -> tuple[float, float]:
        """(input, output) USD per 1M tokens for a call with this many prompt tokens (tier applied)."""
        reached = [t for t in self.price_tiers if input_tokens > t.above_input_tokens]
        tier = max(reached, key=lambda t: t.above_input_tokens) if reached else None
        return (tier.price_in_per_mtok, tier.price_out_per_mtok) if tier else (self.price_in_per_mtok, self.price_out_per_mtok)

    def cost(self, input_tokens: float, output_tokens: float | None = None) -> float:
        """USD for one call; output defaults to the expected output length; a long prompt pays its tier."""
        out = self.expected_output_tokens if output_tokens is None else output_tokens
        price_in, price_out = self.rates(input_tokens)
        return (input_tokens * price_in + out * price_out) / 1e6

    def price(self, usage: "Usage") -> float:
        """USD a provider bills for ``usage``: genai-prices' ``calc_price`` for a model priced from its
        table (every category at its own rate), else this spec's rates (cached and reasoning tokens at
        the plain input and output rates)."""
        if self.priced_by == "spec":
            return self.cost(usage.input_tokens, usage.output_tokens)
        from genai_prices import calc_price

        priced = calc_price(usage.for_genai_prices(), self.provider_model or self.name, provider_id=self.provider)
        return float(priced.total_price)

    def worst_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD a call can cost at most: its whole prompt at the dearest prompt rate (a prompt-cache
        write where the provider charges more for it) and ``output_tokens`` written."""
        from routoo_shared.routing.usage import Usage

        if self.priced_by == "spec":
            return self.cost(input_tokens, output_tokens)
        written = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_write_tokens=input_tokens)
        return max(self.price(written), self.cost(input_tokens, output_tokens))

    @property
    def tokenizer(self) -> Tokenizer:
        """How this model counts prompt tokens (``tokens.tokenizer_for``)."""
        return tokenizer_for(self.provider, self.provider_model or self.name)

    def packable_window(self, messages: int = 3) -> int:
        """The context window in plain tiktoken (cl100k_base) tokens of text, as frameworks that pack
        prompts count them (LlamaIndex's PromptHelper): the window less ``messages`` messages' chat
        framing, divided by the tokenizer's margin, so that what they pack passes this spec's own
        context-window check."""
        framing = messages * PER_MESSAGE_TOKENS + REPLY_PRIMING_TOKENS
        return max(1, math.floor((self.context_window - framing) / self.tokenizer.margin))

    def prompt_tokens(self, prompt_or_messages: Any, tools: list[dict[str, Any]] | None = None) -> int:
        """Prompt tokens this model bills for a call (``messages.prompt_tokens`` with its tokenizer)."""
        return prompt_tokens(prompt_or_messages, self.tokenizer, tools)

    @classmethod
    def from_chat_model(cls, chat_model: Any, name: str | None = None, **fields: Any) -> "ModelSpec":
        """A spec for a LangChain chat model: provider and model id from its LangSmith parameters,
        prices, tiers and context window from genai-prices, and context window, output limit and
        capabilities (tools, structured output, images) from its ``profile`` (LangChain's model
        profiles, from models.dev). ``fields`` override anything read; ``name`` defaults to the model id."""
        params = chat_model._get_ls_params()
        model_id = params.get("ls_model_name")
        read: dict[str, Any] = {"provider": params.get("ls_provider")}
        if model_id:
            read["name"] = model_id
        read.update(fields_from_profile(getattr(chat_model, "profile", None) or {}))
        if name is not None:
            read["name"] = name
            read.setdefault("provider_model", model_id)
        return cls(**{**read, **fields})

    def latency(self, input_tokens: float, output_tokens: float | None = None) -> float:
        """Seconds to a full answer: first token, prompt processing, then generation."""
        out = self.expected_output_tokens if output_tokens is None else output_tokens
        return self.ttft_s + input_tokens / self.prefill_tokens_per_s + out / self.tokens_per_s

    def output_bound(self, max_tokens: int | None = None) -> int:
        """Output tokens a call can produce: its ``max_tokens`` when set, else ``max_output_tokens``."""
        return self.max_output_tokens if max_tokens is None else min(int(max_tokens), self.max_output_tokens)

    def attempt_timeout(self, input_tokens: float, max_tokens: int | None = None) -> float:
        """Seconds before an attempt on this model is abandoned: ``timeout_s``, else twice the predicted
        latency (for ``max_tokens`` output when the call sets it), at least ``MIN_TIMEOUT_S``."""
        if self.timeout_s is not None:
            return self.timeout_s
        return max(MIN_TIMEOUT_S, 2 * self.latency(input_tokens, max_tokens))


class ModelPool(BaseModel):
    """An ordered set of candidate models; the order is the predictor's column order."""

    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "ModelPool":
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique in a pool; repeated: {duplicates}")
        return self

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"unknown model {name!r}; the pool has {self.names}")

    def index(self, name: str) -> int:
        self[name]
        return self.names.index(name)

    def subset(self, names: list[str]) -> "ModelPool":
        return ModelPool(models=[self[n] for n in names])

    def cost_matrix(self, input_tokens: np.ndarray, output_tokens: np.ndarray | None = None) -> np.ndarray:
        """Prompts x models USD; output tokens default to each model's expected length. Each prompt
        pays the rates of the tier its size reaches (``ModelSpec.rates``)."""
        tokens = np.asarray(input_tokens, dtype=float)
        price_in = np.tile([m.price_in_per_mtok for m in self.models], (len(tokens), 1)).astype(float)
        price_out = np.tile([m.price_out_per_mtok for m in self.models], (len(tokens), 1)).astype(float)
        for j, model in enumerate(self.models):
            for tier in sorted(model.price_tiers, key=lambda t: t.above_input_tokens):
                reached = tokens > tier.above_input_tokens
                price_in[reached, j], price_out[reached, j] = tier.price_in_per_mtok, tier.price_out_per_mtok
        if output_tokens is None:
            output_tokens = np.array([m.expected_output_tokens for m in self.models])[None, :]
        return (tokens[:, None] * price_in + output_tokens * price_out) / 1e6

    @classmethod
    def from_models_json(cls, path: str | Path, names: list[str] | None = None) -> "ModelPool":
        """The pool of a validated ``models.json``, optionally a subset (``routoo_shared.routing.models_file.load_pool``)."""
        from routoo_shared.routing.models_file import load_pool  # the file reader builds on the pool

        return load_pool(path, names)
