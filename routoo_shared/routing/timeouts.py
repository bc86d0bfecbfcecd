"""Bounded waits on a model: a call, the first chunk of a stream, the gap to the next chunk.

Synchronous provider calls cannot be interrupted, so a sync attempt runs in a daemon thread (with the
caller's context variables, so callbacks and tracers still nest) and the caller stops waiting after
the timeout; the abandoned thread finishes or hangs on its own, and may report how it ended (``call``'s
``abandon``), so its bill is still counted. Async attempts use ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from routoo_shared.routing.fallback import AttemptTimeoutError

T = TypeVar("T")
_END = object()


def _in_thread(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=contextvars.copy_context().run, args=(target,), name=name, daemon=True).start()


def call(fn: Callable[[], T], timeout_s: float, what: str,
         abandon: Callable[[], Callable[[bool, Any], None]] | None = None) -> T:
    """``fn()`` or ``AttemptTimeoutError`` after ``timeout_s``; the worker's exceptions (any
    ``BaseException``, KeyboardInterrupt included) are raised here.

    When the caller stops waiting, ``abandon()`` is called (before the error is raised) and returns
    ``finish(ok, value)``, which the worker calls when ``fn`` ends after all: with its result
    (``ok``) or its exception. A request that hangs forever never calls it.
    """
    lock = threading.Lock()
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()
    late: list[Callable[[bool, Any], None]] = []

    def work() -> None:
        try:
            result = (True, fn())
        except BaseException as error:  # handed to the caller, who decides
            result = (False, error)
        with lock:
            outcome.append(result)
            done.set()
            finish = late[0] if late else None
        if finish is not None:
            finish(*result)

    _in_thread(work, f"routoo-{what}")
    if not done.wait(timeout_s):
        with lock:
            if not outcome:
                if abandon is not None:
                    late.append(abandon())
                raise AttemptTimeoutError(f"{what} gave no answer within {timeout_s:.3g} s") from None
    ok, value = outcome[0]
    if ok:
        return value
    raise value


class TimedIterator(Iterator[T]):
    """Iterates ``source`` in a pump thread; each item must arrive within ``timeout_s``.

    ``close()`` (called by the consumer, also when it stops early) makes the pump close ``source``
    in its own thread after the item it is waiting for.
    """

    def __init__(self, source: Iterator[T], timeout_s: float, what: str):
        self.timeout_s = timeout_s
        self.what = what
        self._items: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._done = False
        self._source = source
        _in_thread(self._pump, f"routoo-stream-{what}")

    def _pump(self) -> None:
        try:
            for item in self._source:
                self._items.put((True, item))
                if self._stop.is_set():
                    break
            self._items.put((True, _END))
        except BaseException as error:
            self._items.put((False, error))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            ok, item = self._items.get(timeout=self.timeout_s)
        except queue.Empty:
            self.close()
            raise AttemptTimeoutError(f"{self.what} sent nothing for {self.timeout_s:.3g} s") from None
        if not ok:
            self._done = True
            raise item
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()


async def acall(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise AttemptTimeoutError(f"{what} gave no answer within {timeout_s:.3g} s") from None


async def anext_within(source: AsyncIterator[T], timeout_s: float, what: str) -> T:
    """The next item of ``source`` within ``timeout_s``; ``StopAsyncIteration`` at its end."""
    try:
        return await asyncio.wait_for(source.__anext__(), timeout_s)
    except asyncio.TimeoutError:
        raise AttemptTimeoutError(f"{what} sent nothing for {timeout_s:.3g} s") from None
