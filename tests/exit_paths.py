"""Budget drivers shared by both integrations' tests: a sequence of exit paths (answer, error,
timeout, cancellation, interrupt, abandoned and never-started streams), and a burst of concurrent calls."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any, Callable


def run_exit_paths(
    steps: list[str], asynchronous: bool, call: Callable, acall: Callable, stream: Callable, astream: Callable,
    interrupt_wait_s: float = 1.0,
) -> None:
    """Run each step once (sync or async) and swallow what it raises; the callers assert the budget.

    ``stream``/``astream`` open a stream of "hello" (``astream`` may return an awaitable of it, as
    LlamaIndex does); ``abandon`` reads one chunk and closes it, ``unstarted`` never iterates it.
    An ``interrupt`` step waits ``interrupt_wait_s`` before giving up on an async call.
    """

    async def opened_async() -> Any:
        opened = astream("hello")
        return await opened if inspect.isawaitable(opened) else opened

    async def step_async(step: str) -> None:
        if step == "abandon":
            chunks = await opened_async()
            await anext(chunks, None)
            await chunks.aclose()
        elif step == "unstarted":
            await opened_async()
        else:
            await asyncio.wait_for(acall("hello"), interrupt_wait_s if step == "interrupt" else 1.0)

    def step_sync(step: str) -> None:
        if step == "abandon":
            chunks = stream("hello")
            next(chunks, None)
            chunks.close()
        elif step == "unstarted":
            stream("hello")
        else:
            call("hello")

    for step in steps:
        try:
            asyncio.run(step_async(step)) if asynchronous else step_sync(step)
        except (Exception, KeyboardInterrupt, asyncio.CancelledError):
            pass


def assert_burst_overshoots_by_at_most_one_call(
    budget: Any, acall: Callable, answer_type: type, pool: Any, models: list[str], real_usage: tuple[int, int],
    calls: int = 1000,
) -> None:
    """``calls`` concurrent ``acall``s on ``budget``: each answers or is refused with
    ``BudgetExhaustedError``; spending exceeds the total by at most the priciest call at
    ``real_usage`` (input, output tokens); no hold is left and every answer was charged."""
    from routoo_shared.routing.budget import BudgetExhaustedError

    async def burst() -> list[Any]:
        return await asyncio.gather(*(acall(f"question {i}") for i in range(calls)), return_exceptions=True)

    results = asyncio.run(burst())
    answered = [r for r in results if isinstance(r, answer_type)]
    assert answered and all(isinstance(r, (answer_type, BudgetExhaustedError)) for r in results)
    largest = max(pool[name].cost(*real_usage) for name in models)
    assert budget.spent_usd <= budget.total_usd + largest
    assert budget.reserved_usd == 0 and budget.calls == len(answered)


def join_abandoned_attempts(timeout_s: float = 10.0) -> None:
    """Wait for the threads of sync attempts that timed out (``routoo-<model>``, ``routoo-stream-<model>``)
    to end: until then they hold their worst case on the budget."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread.name.startswith("routoo-") and not thread.name.startswith("routoo-route") and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
