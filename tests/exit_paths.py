"""Drives a routed model through a sequence of exit paths (answer, error, timeout, cancellation,
interrupt, abandoned and never-started streams), for the budget tests of both integrations."""

from __future__ import annotations

import asyncio
import inspect
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
