"""Concurrent routing requests share predictor passes.

While one pass runs, new requests queue; when it ends, one waiting caller runs the next pass for every
request queued meanwhile. An idle router adds no delay, and a burst of concurrent calls (an async
``gather``, a thread pool) costs a few batched passes instead of one pass each: less CPU and less time
holding the GIL, so an event loop that waits on routing threads keeps running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


class _Request:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self.done = threading.Event()
        self.lead = False
        self.rows: np.ndarray | None = None
        self.error: BaseException | None = None


class BatchingPredictor:
    """Calls ``predict(texts) -> (len(texts), M) array`` once for all requests queued at that moment."""

    def __init__(self, predict: Callable[[list[str]], np.ndarray]):
        self._predict = predict
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False

    def __getstate__(self) -> dict:
        return {"_predict": self._predict}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_predict"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        request = _Request(texts)
        with self._lock:
            self._queue.append(request)
            request.lead = not self._busy
            self._busy = True
        if not request.lead:
            request.done.wait()
        if request.rows is None and request.error is None:  # woken to lead the next pass
            self._run_pass()
        if request.error is not None:
            raise request.error
        return request.rows

    def _run_pass(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            rows = self._predict([text for request in batch for text in request.texts])
            start = 0
            for request in batch:
                request.rows, start = rows[start : start + len(request.texts)], start + len(request.texts)
        except BaseException as error:  # every caller of the pass gets the pass's error
            for request in batch:
                request.error = error
        with self._lock:
            following = self._queue[0] if self._queue else None
            self._busy = following is not None
        for request in batch:
            request.done.set()
        if following is not None:
            following.done.set()  # it finds no rows and leads the next pass
