"""Model identity across datasets and providers: one name a model, and the other names that reach it.

The bundled datasets spell some models differently (MMLU-Pro's ``Meta-Llama-3_1-70B-Instruct`` is
ZeroEval's ``Meta-Llama-3.1-70B-Instruct`` and LLMRouter's ``llama-3.1-70b-instruct``), and users
name provider models by their aliases (``gpt-4o-mini`` is served as ``gpt-4o-mini-2024-07-18``).
The predictor is trained under one name a model (the first spelling in the bundled data); a
``ModelSpec``'s ``name`` (else its ``provider_model``) reaches it through ``resolve``, so a pool
keeps its own names while the predictor reads the labels of the model they mean.

Matching ignores case and an organisation prefix (``meta-llama/``), and reads ``_`` between
digits as ``.`` (``3_1`` = ``3.1``). Dated provider ids stay distinct models: an undated alias
points at the snapshot it served in the data's time (late 2024).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ALIASES: dict[str, str] = {  # another name -> the name the bundled predictor knows the model by
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "claude-3-5-sonnet": "claude-3-5-sonnet-20241022",
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku": "claude-3-5-haiku-20241022",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-3-haiku": "claude-3-haiku-20240307",
    "claude-3-opus": "claude-3-opus-20240229",
    "claude-3-opus-latest": "claude-3-opus-20240229",
    "gemini-1.5-pro-latest": "gemini-1.5-pro",
    "gemini-1.5-flash-latest": "gemini-1.5-flash",
    "Meta-Llama-3.1-8B-Instruct": "Meta-Llama-3_1-8B-Instruct",
    "Meta-Llama-3.1-70B-Instruct": "Meta-Llama-3_1-70B-Instruct",
    "llama-3.1-8b-instruct": "Meta-Llama-3_1-8B-Instruct",
    "llama-3.1-70b-instruct": "Meta-Llama-3_1-70B-Instruct",
    "mistral-large-2407": "Mistral-Large-2",
    "reka-core": "reka-core-20240501",
    "mixtral-8x7b-instruct": "Mixtral-8x7B-Instruct-v0.1",
    "gpt-4-turbo-1106": "gpt-4-1106-preview",
}


def key(name: str) -> str:
    """The spelling-free form two names of one model share."""
    return re.sub(r"(?<=\d)_(?=\d)", ".", name.rsplit("/", 1)[-1]).lower()


_ALIAS_KEYS = {key(alias): target for alias, target in ALIASES.items()}


def canonical(name: str) -> str:
    """The registry's name for ``name`` (itself when the registry has no other name for it)."""
    return _ALIAS_KEYS.get(key(name), name)


def resolve(name: str, known: Iterable[str]) -> str | None:
    """The entry of ``known`` (a predictor's models) that ``name`` names, or None.

    An exact entry wins; else the registry's name for it, else an entry of the same spelling-free form.
    """
    known = list(known)
    if name in known:
        return name
    by_key = {key(model): model for model in known}
    target = canonical(name)
    if target in known:
        return target
    return by_key.get(key(target))


def known_as(spec, known: Iterable[str]) -> str | None:
    """The entry of ``known`` a ``ModelSpec`` is: by its ``name``, else by its ``provider_model``."""
    found = resolve(spec.name, known)
    if found is None and spec.provider_model:
        found = resolve(spec.provider_model, known)
    return found


def aliases_of(name: str, seen: Iterable[str] = ()) -> list[str]:
    """Other names that reach ``name``: the registry's aliases and ``seen`` spellings (e.g. the datasets')."""
    others = [alias for alias, target in ALIASES.items() if target == name] + list(seen)
    return sorted({other for other in others if other != name})
