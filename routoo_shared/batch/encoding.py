"""The encoding step of ``routoo train`` and ``routoo evaluate`` on an engine (``--engine ray``).

Embedding prompts is the slow part of training. On Ray Data, encoder actors (each loads the encoder once)
embed the prompts the encoder's on-disk cache lacks, in batches, streamed back to this process, which
stores them in the cache; training and evaluation then read every vector from the cache as usual.
"""

from __future__ import annotations

import numpy as np

from routoo_shared.batch.engines import Batch


class EncoderWorker:
    """Holds one prompt encoder (sent by its settings, loaded in the worker) and embeds batches of texts."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def __call__(self, batch: Batch) -> Batch:
        texts = [str(t) for t in batch["text"]]
        return {"text": np.array(texts, dtype=object), "vector": self.encoder.encode(texts)}


def encode_into_cache(encoder, texts: list[str], engine) -> int:
    """Embed on ``engine`` the distinct ``texts`` that ``encoder``'s cache lacks and store them in it (on
    disk); how many were embedded. An encoder without a cache (the static encoder: tens of microseconds a
    prompt) has nothing worth distributing: none."""
    if getattr(encoder, "cache", None) is None:
        return 0
    missing = sorted({text for text in texts if encoder.cache.get(text) is None})
    if not missing:
        return 0
    for batch in engine.read([{"text": text} for text in missing], EncoderWorker, encoder):
        for text, vector in zip(batch["text"], batch["vector"]):
            encoder.cache.put(str(text), np.asarray(vector, dtype=np.float32))
    encoder.cache.save()
    return len(missing)
