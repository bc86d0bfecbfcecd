"""Which failures move a call to the next-best model, and the record of every attempt.

A model that fails with a provider, network, rate-limit, timeout or empty-answer error is replaced by
the next-best eligible one (LiteLLM's Router and LangChain's ``RunnableWithFallbacks`` do the same);
a programming error (a bad keyword argument, a wrong type) fails at once with its own exception, and
a cancellation or interrupt is never swallowed. When every candidate fails, ``AllModelsFailedError``
keeps each attempt's exception, the last one as ``__cause__``.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Errors that say the calling code is wrong, not the model: another model would fail the same way.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    ImportError,
    SyntaxError,
    RecursionError,
    ArithmeticError,
)

# Packages in every model class's ancestry that are nobody's provider code.
_NOT_PROVIDER_CODE = {"builtins", "abc", "typing", "pydantic", "collections"}

FailureKind = Literal["empty", "timeout", "rate_limit", "provider", "budget", "cooldown"]
FallbackPolicy = Callable[[BaseException], bool]


class EmptyResponseError(Exception):
    """A model returned neither text nor tool calls (``usage``: what it billed, a ``usage.Usage``, when reported)."""

    def __init__(self, message: str, usage: Any = None):
        super().__init__(message)
        self.usage = usage


class AttemptTimeoutError(TimeoutError):
    """A model gave no answer (or no next chunk) within its attempt timeout."""


class InvalidUsageError(ValueError):
    """A model reported token usage that is not a non-negative whole number."""


def is_fallback_error(error: BaseException) -> bool:
    """The default policy: any ``Exception`` but a programming error moves on to the next model."""
    return isinstance(error, Exception) and not isinstance(error, PROGRAMMING_ERRORS)


def status_code(error: BaseException) -> int | None:
    """The HTTP status an SDK error carries (openai, anthropic, httpx and most others name it so)."""
    for owner in (error, getattr(error, "response", None)):
        for attribute in ("status_code", "status", "http_status"):
            value = getattr(owner, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def is_rate_limit(error: BaseException) -> bool:
    return status_code(error) == 429 or "ratelimit" in type(error).__name__.lower()


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the provider asked us to wait: an SDK's ``retry_after`` or the response's Retry-After header."""
    value = getattr(error, "retry_after", None)
    if value is None:
        headers = getattr(getattr(error, "response", None), "headers", None) or {}
        try:
            value = headers.get("retry-after-ms")
            value = float(value) / 1000 if value is not None else headers.get("retry-after")
        except (TypeError, ValueError, AttributeError):
            return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:  # an HTTP date
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            value = parsed.timestamp() - time.time() if parsed else None
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def malformed_answer(error: BaseException, provider: type) -> EmptyResponseError | None:
    """A ``LookupError`` raised in the code of ``provider`` (the pool model's class and its bases, with
    their packages) as what it is: an answer the provider class could not read, such as a content-filtered
    reply with no ``choices``. It falls back (and is charged) like an empty answer. None for any other
    error, and for a ``LookupError`` raised in the caller's own code (tools, output parsers, prompt
    functions), which fails at once."""
    if not isinstance(error, LookupError) or error.__traceback__ is None:
        return None
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "")
    packages = {kind.__module__.rpartition(".")[0] or kind.__module__ for kind in provider.__mro__
                if kind.__module__.partition(".")[0] not in _NOT_PROVIDER_CODE}
    if not any(module == package or module.startswith(package + ".") for package in packages):
        return None
    malformed = EmptyResponseError(f"the answer could not be read ({type(error).__name__}: {error})")
    malformed.__cause__ = error
    return malformed


def failure_kind(error: BaseException) -> FailureKind:
    if isinstance(error, EmptyResponseError):
        return "empty"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "rate_limit" if is_rate_limit(error) else "provider"


class Attempt(BaseModel):
    """One model tried for a call: ``error`` is None for the one that answered."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    error: str | None = None
    kind: FailureKind | None = None
    exception: BaseException | None = Field(default=None, exclude=True, repr=False)


class AllModelsFailedError(Exception):
    """Every candidate that was tried failed. ``errors`` holds their exceptions in order;
    ``attempts`` the records; ``__cause__`` is the last exception. An ``Exception``, not a
    ``RuntimeError`` (see ``BudgetExhaustedError``)."""

    def __init__(self, attempts: list[Attempt]):
        lines = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"all {len(attempts)} routed model(s) failed: {lines}")
        self.attempts = attempts
        self.errors = [a.exception for a in attempts if a.exception is not None]
