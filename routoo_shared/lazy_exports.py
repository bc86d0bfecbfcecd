"""Package names that load on first use (PEP 562), as ``langchain_core.language_models`` does, so that
importing a package costs only what its caller then uses."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: dict[str, Any], exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``globals()`` is ``package``: each name of
    ``exports`` (name -> module path) is imported from its module on first access, then kept.

    Raises AttributeError for any other name, as a module does."""

    def get(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name]), name)
        package[name] = value
        return value

    def names() -> list[str]:
        return sorted({*package, *exports})

    return get, names
