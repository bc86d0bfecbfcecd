"""The model pool: what each candidate costs, how fast it is and what it can do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


MIN_TIMEOUT_S = 10.0


class PriceLookupError(ValueError):
    """A model has no explicit price and the genai-prices table does not know it."""


def lookup_price(model: str, provider: str | None) -> tuple[float, float]:
    """(input, output) USD per 1M tokens from the genai-prices table (bundled snapshot, no network)."""
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), model, provider_id=provider)
    except LookupError as error:
        raise PriceLookupError(
            f"no price for model {model!r} (provider {provider!r}) in genai-prices; "
            f"give price_in_per_mtok and price_out_per_mtok explicitly"
        ) from error
    return float(calc.input_price), float(calc.output_price)


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
    context_window: int = Field(default=8192, gt=0)
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

    @model_validator(mode="after")
    def _resolve_price(self) -> "ModelSpec":
        if self.price_in_per_mtok is not None and self.price_out_per_mtok is not None:
            return self
        if self.provider is None:
            raise PriceLookupError(
                f"model {self.name!r} has no price: give price_in_per_mtok and price_out_per_mtok, "
                f"or a provider to look it up in genai-prices"
            )
        price_in, price_out = lookup_price(self.provider_model or self.name, self.provider)
        if self.price_in_per_mtok is None:
            self.price_in_per_mtok = price_in
        if self.price_out_per_mtok is None:
            self.price_out_per_mtok = price_out
        return self

    def cost(self, input_tokens: float, output_tokens: float | None = None) -> float:
        """USD for one call; output defaults to the expected output length."""
        out = self.expected_output_tokens if output_tokens is None else output_tokens
        return (input_tokens * self.price_in_per_mtok + out * self.price_out_per_mtok) / 1e6

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

    def prices(self) -> tuple[np.ndarray, np.ndarray]:
        """USD per token, (input, output), one entry a model."""
        price_in = np.array([m.price_in_per_mtok for m in self.models]) / 1e6
        price_out = np.array([m.price_out_per_mtok for m in self.models]) / 1e6
        return price_in, price_out

    def cost_matrix(self, input_tokens: np.ndarray, output_tokens: np.ndarray | None = None) -> np.ndarray:
        """Prompts x models USD; output tokens default to each model's expected length."""
        price_in, price_out = self.prices()
        if output_tokens is None:
            output_tokens = np.array([m.expected_output_tokens for m in self.models])[None, :]
        return np.asarray(input_tokens, dtype=float)[:, None] * price_in[None, :] + output_tokens * price_out[None, :]

    @classmethod
    def from_models_json(cls, path: str | Path, names: list[str] | None = None, **defaults) -> "ModelPool":
        """Read a ``models.json`` price sheet (the bundled datasets' format), optionally a subset."""
        sheet = json.loads(Path(path).read_text())
        known = {entry["name"]: entry for entry in sheet["models"]}
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise KeyError(f"unknown model(s) {unknown} in {path}; it lists {sorted(known)}")
        specs = []
        for name in names or list(known):
            entry = known[name]
            fields = {k: v for k, v in entry.items() if k in ModelSpec.model_fields}
            specs.append(ModelSpec(**{**defaults, **fields}))
        return cls(models=specs)
