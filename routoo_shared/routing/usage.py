"""One call's usage as the provider bills it, read from whatever shape the provider reports.

``Usage`` keeps every billed category (prompt, prompt-cache reads and writes, output, reasoning,
audio) so that ``ModelSpec.price`` can price it with genai-prices' ``calc_price``; ``read_usage`` turns
the usage of OpenAI chat completions, the OpenAI Responses API, Anthropic, Gemini and LangChain's
``usage_metadata`` into it. Totals follow genai-prices' convention: ``input_tokens`` counts every prompt
token (cache reads and writes included, as OpenAI and Gemini report it; Anthropic reports the cache
buckets apart, and they are added), ``output_tokens`` every written token (reasoning included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from routoo_shared.routing.fallback import InvalidUsageError


@dataclass(frozen=True)
class Usage:
    """Tokens one call was billed for; the detail fields are parts of the two totals."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    @classmethod
    def checked(cls, model: str, **counts: Any) -> "Usage":
        """``InvalidUsageError`` unless every count is a non-negative whole number and the parts fit
        in their totals (a ``None`` count is 0)."""
        usage = cls(**{name: _whole(value, model, name) for name, value in counts.items()})
        if usage.cache_read_tokens + usage.cache_write_tokens > usage.input_tokens or usage.input_audio_tokens > usage.input_tokens:
            raise InvalidUsageError(f"{model} reported more cached or audio prompt tokens than prompt tokens: {usage}")
        if usage.reasoning_tokens + usage.output_audio_tokens > usage.output_tokens:
            raise InvalidUsageError(f"{model} reported more reasoning or audio output tokens than output tokens: {usage}")
        return usage

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def for_genai_prices(self):
        """The same counts as a ``genai_prices.Usage``."""
        from genai_prices import Usage as PriceUsage

        return PriceUsage(
            input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens,
            output_reasoning_tokens=self.reasoning_tokens,
            input_audio_tokens=self.input_audio_tokens, output_audio_tokens=self.output_audio_tokens,
        )


def lookup(source: Any, *path: str) -> Any:
    """``source[path[0]][path[1]]...`` for dicts and objects alike; None where a step is missing."""
    for name in path:
        if source is None:
            return None
        source = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
    return source


def _has(source: Any, name: str) -> bool:
    return lookup(source, name) is not None


def read_usage(source: Any, model: str = "a model") -> Usage | None:
    """The ``Usage`` of a provider's usage record (a dict or an SDK object), None when ``source``
    holds none. Shapes, told apart by their keys:

    - OpenAI chat completions: ``prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details``
      (``cached_tokens``, ``audio_tokens``), ``completion_tokens_details`` (``reasoning_tokens``, ``audio_tokens``);
    - Gemini ``usageMetadata`` (camelCase or the SDK's snake_case): ``promptTokenCount`` (cached
      included), ``toolUsePromptTokenCount``, ``cachedContentTokenCount``, ``candidatesTokenCount``,
      ``thoughtsTokenCount``;
    - LangChain ``usage_metadata``: ``input_tokens``, ``output_tokens`` (totals), ``input_token_details``
      (``cache_read``, ``cache_creation``, ``audio``), ``output_token_details`` (``reasoning``, ``audio``);
    - OpenAI Responses: ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``,
      ``output_tokens_details.reasoning_tokens``;
    - Anthropic: ``input_tokens`` (uncached only), ``cache_read_input_tokens``,
      ``cache_creation_input_tokens``, ``output_tokens``.

    Raises ``InvalidUsageError`` for counts that are not non-negative whole numbers.
    """
    if source is None:
        return None
    if _has(source, "prompt_tokens") or _has(source, "completion_tokens"):
        return Usage.checked(
            model, input_tokens=lookup(source, "prompt_tokens"), output_tokens=lookup(source, "completion_tokens"),
            cache_read_tokens=lookup(source, "prompt_tokens_details", "cached_tokens"),
            input_audio_tokens=lookup(source, "prompt_tokens_details", "audio_tokens"),
            reasoning_tokens=lookup(source, "completion_tokens_details", "reasoning_tokens"),
            output_audio_tokens=lookup(source, "completion_tokens_details", "audio_tokens"),
        )
    gemini = {key: lookup(source, snake) if _has(source, snake) else lookup(source, camel) for key, snake, camel in (
        ("prompt", "prompt_token_count", "promptTokenCount"), ("tools", "tool_use_prompt_token_count", "toolUsePromptTokenCount"),
        ("cached", "cached_content_token_count", "cachedContentTokenCount"),
        ("candidates", "candidates_token_count", "candidatesTokenCount"), ("thoughts", "thoughts_token_count", "thoughtsTokenCount"),
    )}
    if gemini["prompt"] is not None or gemini["candidates"] is not None:
        counts = {key: _whole(value, model, key) for key, value in gemini.items()}
        return Usage.checked(
            model, input_tokens=counts["prompt"] + counts["tools"], output_tokens=counts["candidates"] + counts["thoughts"],
            cache_read_tokens=counts["cached"], reasoning_tokens=counts["thoughts"],
        )
    if not (_has(source, "input_tokens") or _has(source, "output_tokens")):
        return None
    if _has(source, "input_token_details") or _has(source, "output_token_details"):  # LangChain
        return Usage.checked(
            model, input_tokens=lookup(source, "input_tokens"), output_tokens=lookup(source, "output_tokens"),
            cache_read_tokens=lookup(source, "input_token_details", "cache_read"),
            cache_write_tokens=lookup(source, "input_token_details", "cache_creation"),
            input_audio_tokens=lookup(source, "input_token_details", "audio"),
            reasoning_tokens=lookup(source, "output_token_details", "reasoning"),
            output_audio_tokens=lookup(source, "output_token_details", "audio"),
        )
    if _has(source, "input_tokens_details") or _has(source, "output_tokens_details"):  # OpenAI Responses
        return Usage.checked(
            model, input_tokens=lookup(source, "input_tokens"), output_tokens=lookup(source, "output_tokens"),
            cache_read_tokens=lookup(source, "input_tokens_details", "cached_tokens"),
            reasoning_tokens=lookup(source, "output_tokens_details", "reasoning_tokens"),
        )
    read = _whole(lookup(source, "cache_read_input_tokens"), model, "cache_read_input_tokens")  # Anthropic
    written = _whole(lookup(source, "cache_creation_input_tokens"), model, "cache_creation_input_tokens")
    uncached = _whole(lookup(source, "input_tokens"), model, "input_tokens")
    return Usage.checked(model, input_tokens=uncached + read + written, output_tokens=lookup(source, "output_tokens"),
                         cache_read_tokens=read, cache_write_tokens=written)


def _whole(value: Any, model: str, what: str) -> int:
    """``value`` as a count (None is 0), or ``InvalidUsageError`` naming ``what``."""
    if value is None:
        return 0
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 0:
        raise InvalidUsageError(f"{model} reported {what}={value!r}; expected a non-negative whole number")
    return int(value)
