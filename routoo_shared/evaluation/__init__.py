"""Evaluation: routers and baselines trained and compared on the same split, routing-quality
metrics, cascade replays and pool construction.

``routoo_shared.evaluation.X`` keeps reading the harness's names (the module this package was),
loaded on first use so that importing a metric does not load the whole harness.
"""


import importlib


def __getattr__(name: str):
    if name.startswith("_"):  # the import system asks for submodules and dunders here first
        raise AttributeError(name)
    harness = importlib.import_module("routoo_shared.evaluation.harness")
    try:
        return getattr(harness, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
