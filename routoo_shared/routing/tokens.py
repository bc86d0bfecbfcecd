"""Token counting with tiktoken, offline: the encodings ship inside llama-index-core."""

from __future__ import annotations

import os
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
