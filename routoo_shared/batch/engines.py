"""Where batch work runs: in this process (``local``, the default) or on Ray Data (``ray``).

Both run the same code: a worker class built once per worker process (it loads the router or the
encoder) maps batches of rows (dicts of numpy arrays, one row per prompt) in input order, and plain
functions map kept batches (the passes of a budget plan). Reads and writes stream, so memory stays
bounded by a few batches whatever the input size; kept batches live on disk (local) or in Ray's object
store, which spills to disk. Ray is imported only by ``RayEngine``; ``ray.init`` joins the cluster at
``address`` (``RAY_ADDRESS``) or starts a local one with a CPU for each of ``workers`` actors and one
for reading and writing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]
BATCH_ROWS = 512  # rows per batch: big enough for the encoder, small enough for bounded memory


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, one a line (blank lines skipped); ``ValueError`` naming the line
    that is not a JSON object."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not JSON: {error.msg}") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number} must be a JSON object, got {type(row).__name__}")
            yield row


def as_batch(rows: list[dict[str, Any]]) -> Batch:
    """Rows as columns (every key of the first row)."""
    return {key: np.array([row.get(key) for row in rows], dtype=object) for key in rows[0]}


def engine_named(name: str, workers: int | None = None) -> "LocalEngine | RayEngine":
    """``local`` or ``ray`` (``ValueError`` for another name)."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(workers=workers or 2)
    raise ValueError(f"unknown engine {name!r}; use local or ray")


class LocalBatches:
    """Batches computed one after another in this process (lazily, unless kept)."""

    def __init__(self, batches: Callable[[], Iterator[Batch]], folder: tempfile.TemporaryDirectory | None = None):
        self._batches, self._folder = batches, folder

    def __iter__(self) -> Iterator[Batch]:
        return self._batches()

    def map(self, each: Callable[[Batch], Batch]) -> "LocalBatches":
        return LocalBatches(lambda: map(each, self._batches()), self._folder)

    def kept(self) -> "LocalBatches":
        """Computed once, kept on disk (one .npz a batch) for the passes that follow."""
        folder = tempfile.TemporaryDirectory(prefix="routoo-batches-")
        paths = []
        for index, batch in enumerate(self._batches()):
            paths.append(Path(folder.name) / f"{index:08d}.npz")
            np.savez(paths[-1], **batch)

        def load() -> Iterator[Batch]:
            for path in paths:
                with np.load(path, allow_pickle=True) as saved:
                    yield dict(saved)

        return LocalBatches(load, folder)


class LocalEngine:
    """Batches in this process (needs no Ray)."""

    name = "local"

    def read(self, rows: Path | Iterable[dict[str, Any]], worker: type, *args: Any) -> LocalBatches:
        """``worker(*args)``, built once, mapped over ``rows`` (a JSONL path is read line by line) in
        batches of ``BATCH_ROWS``."""

        def batches() -> Iterator[Batch]:
            mapped = worker(*args)
            iterator = read_rows(rows) if isinstance(rows, (str, Path)) else iter(rows)
            while chunk := list(islice(iterator, BATCH_ROWS)):
                yield mapped(as_batch(chunk))

        return LocalBatches(batches)


class RayBatches:
    """A Ray Dataset: lazy, streamed in input order."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.dataset.iter_batches(batch_size=None, batch_format="numpy"))

    def map(self, each: Callable[[Batch], Batch]) -> "RayBatches":
        return RayBatches(self.dataset.map_batches(each, batch_size=None, batch_format="numpy"))

    def kept(self) -> "RayBatches":
        return RayBatches(self.dataset.materialize())


class RayEngine:
    """Batches on Ray Data: ``workers`` actors, each holding one worker object."""

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive whole number, got {workers!r}")
        self.workers, self.address = workers, address

    def _ray(self):
        try:
            import ray
        except ImportError as error:
            raise RuntimeError("--engine ray needs Ray Data: pip install 'ray[data]'") from error
        address = self.address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else self.workers + 1,  # + reads, writes
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # decisions come out in the prompts' order
        context.enable_progress_bars = context.print_on_execution_start = False
        return ray

    def read(self, rows: Path | Iterable[dict[str, Any]], worker: type, *args: Any) -> RayBatches:
        """``worker(*args)`` on each of ``workers`` actors, mapped over ``rows`` (a JSONL path is read by
        Ray, in parallel, streaming)."""
        ray = self._ray()
        dataset = (ray.data.read_json(str(rows), lines=True) if isinstance(rows, (str, Path))
                   else ray.data.from_items(list(rows)))
        return RayBatches(dataset.map_batches(worker, fn_constructor_args=args, batch_size=BATCH_ROWS,
                                              batch_format="numpy", num_cpus=1,
                                              compute=ray.data.ActorPoolStrategy(size=self.workers)))
