"""Token counting with tiktoken, offline (the encodings ship inside llama-index-core), and which
encoding counts a provider's model as it bills."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _point_tiktoken_at_bundled_cache() -> None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return
    from importlib.util import find_spec

    spec = find_spec("llama_index.core")  # located, not imported: importing it costs a second
    if spec is None or not spec.submodule_search_locations:
        return
    cache = Path(spec.submodule_search_locations[0]) / "_static" / "tiktoken_cache"
    if cache.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


@lru_cache(maxsize=4)
def encoding(name: str = "cl100k_base"):
    """A tiktoken encoding that never touches the network (cl100k_base and o200k_base ship offline)."""
    _point_tiktoken_at_bundled_cache()
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as error:
        raise RuntimeError(
            f"tiktoken encoding {name!r} is not available offline; use 'cl100k_base' or 'o200k_base' "
            f"or set TIKTOKEN_CACHE_DIR to a folder that holds it"
        ) from error


def token_ids(text: str, encoding_name: str = "cl100k_base") -> list[int]:
    return encoding(encoding_name).encode(text, disallowed_special=())


def count_tokens(text: str, encoding_name: str = "cl100k_base") -> int:
    return len(token_ids(text, encoding_name))


def count_tokens_batch(texts: list[str], encoding_name: str = "cl100k_base") -> list[int]:
    return [len(ids) for ids in encoding(encoding_name).encode_batch(texts, disallowed_special=())]


OPENAI_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
OPENAI_CL100K_PREFIXES = ("gpt-4", "gpt-3.5")
SAFETY_MARGIN = 1.2  # other tokenizers write up to ~20% more tokens than cl100k_base for English text


@dataclass(frozen=True)
class Tokenizer:
    """How one provider's model counts a prompt: a tiktoken encoding, a margin for a tokenizer that is
    not tiktoken's (counts are multiplied by it, rounded up) and the provider family, whose chat
    template, tool rendering and image rule ``messages.prompt_tokens`` applies."""

    family: str  # "openai", "anthropic", "google" or "other"
    encoding_name: str = "cl100k_base"
    margin: float = SAFETY_MARGIN

    def count(self, text: str) -> int:
        return count_tokens(text, self.encoding_name) if text else 0

    def scaled(self, tokens: int) -> int:
        return math.ceil(tokens * self.margin)


def tokenizer_for(provider: str | None, model: str) -> Tokenizer:
    """The tokenizer a model bills with, as far as it ships offline: o200k_base for current OpenAI
    models and cl100k_base for GPT-4 and GPT-3.5 (exact), else cl100k_base with ``SAFETY_MARGIN``."""
    name = model.lower().rsplit("/", 1)[-1]
    if provider in (None, "openai", "azure") and name.startswith(OPENAI_O200K_PREFIXES):
        return Tokenizer("openai", "o200k_base", 1.0)
    if provider in (None, "openai", "azure") and name.startswith(OPENAI_CL100K_PREFIXES):
        return Tokenizer("openai", "cl100k_base", 1.0)
    if provider == "anthropic" or name.startswith("claude"):
        return Tokenizer("anthropic")
    if provider in ("google", "google-vertex", "gemini") or name.startswith("gemini"):
        return Tokenizer("google")
    return Tokenizer("other")
