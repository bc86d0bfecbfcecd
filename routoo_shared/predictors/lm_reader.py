"""A small decoder LM reads the prompt: the paper's lightweight-LLM predictor input.

SmolLM2-135M-Instruct (shipped on PyPI, loaded by ``local_llm.load``) runs once over the prompt,
wrapped in its chat template as a user turn (empty system turn). We keep the hidden states of a few layers, averaged
over the prompt's tokens and at its last token (where the model is about to answer), and the
reader's own uncertainty: the mean negative log-likelihood of the prompt's tokens and the entropy
of its next-token distribution (for a multiple-choice prompt, how sure it is of the letter).

Raw reads are wide (layers x 2 x 576 values), so ``ReaderEncoder`` applies a fixed linear
projection (PCA fitted on training prompts, ``fit_projection``) and caches the projected vectors
like the MiniLM encoder does; the bundled datasets ship theirs precomputed
(``scripts/read_bundled_prompts.py``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from routoo_shared.predictors.encoder import BUNDLED_EMBEDDINGS, EmbeddingCache, through_cache

READER_MODEL = "smollm2-135m-instruct"
UNCERTAINTY = ("mean_nll", "next_token_entropy", "next_token_top_probability")
_SENTINEL = "\u2063ROUTOO\u2063"


class LMReader:
    """Hidden states and uncertainty of a local decoder LM on each prompt.

    ``read`` returns float32 rows of ``len(layers) * 2 * hidden`` pooled states (per layer: mean
    over tokens, then last token) followed by the ``UNCERTAINTY`` values. Prompts longer than
    ``max_length`` tokens keep their first and last halves (the question's start and its options).
    Layer 0 is the embedding output; layer ``n_layers`` is the final (normed) state.
    """

    def __init__(self, layers: tuple[int, ...], model: str = READER_MODEL, max_length: int = 128, batch_size: int = 8):
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
        self.model_name = model
        self.layers = tuple(int(layer) for layer in layers)
        self.max_length = max_length
        self.batch_size = batch_size
        self._loaded = None
        self._lock = threading.Lock()

    def _load(self):
        if self._loaded is None:
            from routoo_shared.local.llm import load

            tokenizer, model = load(self.model_name)
            depth = model.config.num_hidden_layers
            bad = [layer for layer in self.layers if not 0 <= layer <= depth]
            if bad:
                raise ValueError(f"{self.model_name} has layers 0..{depth}; asked for {bad}")
            prefix, suffix = "", ""
            if tokenizer.chat_template:
                turn = [{"role": "system", "content": ""}, {"role": "user", "content": _SENTINEL}]  # no default system text
                prefix, suffix = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True).split(_SENTINEL)
            ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            self._loaded = tokenizer, model, ids(prefix), ids(suffix)
        return self._loaded

    @property
    def width(self) -> int:
        hidden = self._load()[1].config.hidden_size
        return len(self.layers) * 2 * hidden + len(UNCERTAINTY)

    def token_ids(self, text: str) -> list[int]:
        """The ids the reader sees: template prefix, the prompt (head and tail if too long), suffix."""
        tokenizer, _, prefix, suffix = self._load()
        content = tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.max_length - len(prefix) - len(suffix)
        if len(content) > room:
            head = room // 2
            content = content[:head] + content[len(content) - (room - head) :]
        return prefix + content + suffix

    @torch.inference_mode()
    def _read_batch(self, texts: list[str]) -> np.ndarray:
        tokenizer, model, _, _ = self._load()
        rows = [self.token_ids(text) for text in texts]
        lengths = torch.tensor([len(r) for r in rows])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        last = lengths - 1
        batch = torch.arange(len(rows))
        weights = mask.unsqueeze(-1).float() / lengths[:, None, None]
        pooled = []
        for layer in self.layers:
            states = out.hidden_states[layer]
            pooled += [(states * weights).sum(1), states[batch, last]]
        log_probs = torch.log_softmax(out.logits.float(), dim=-1)
        token_nll = -log_probs[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        seen = mask[:, 1:].float()
        mean_nll = (token_nll * seen).sum(1) / seen.sum(1).clamp(min=1)
        next_token = log_probs[batch, last]
        entropy = -(next_token.exp() * next_token).sum(-1)
        top = next_token.max(-1).values.exp()
        return torch.cat(pooled + [torch.stack([mean_nll, entropy, top], dim=1)], dim=1).numpy()

    def read(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Raw reads, one float32 row a prompt (see the class docstring for the layout)."""
        with self._lock:
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
            out = np.zeros((len(texts), self.width), dtype=np.float32)
            starts = range(0, len(texts), self.batch_size)
            for start in tqdm(starts, desc="reading prompts", disable=not progress or len(starts) < 2):
                chunk = order[start : start + self.batch_size]
                out[chunk] = self._read_batch([texts[i] for i in chunk])
            return out


class Projection:
    """Standardise raw reads, then PCA of the hidden-state part; uncertainty values are kept as z-scores.

    Fitted on training prompts only (``fit_projection``); shipped next to the bundled vectors.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, components: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)  # (k, width - len(UNCERTAINTY))

    @property
    def dim(self) -> int:
        return self.components.shape[0] + len(UNCERTAINTY)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = (raw - self.mean) / self.std
        hidden, uncertainty = z[:, : -len(UNCERTAINTY)], z[:, -len(UNCERTAINTY) :]
        return np.concatenate([hidden @ self.components.T, uncertainty], axis=1).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, std=self.std, components=self.components.astype(np.float16))

    @classmethod
    def load(cls, path: Path) -> "Projection":
        if not path.exists():
            raise FileNotFoundError(f"no reader projection at {path} (run scripts/read_bundled_prompts.py)")
        with np.load(path) as archive:
            return cls(archive["mean"], archive["std"], archive["components"])


def fit_projection(raw: np.ndarray, dim: int) -> Projection:
    """PCA (``dim`` components, whitened to unit variance) of standardised raw reads of training prompts."""
    mean, std = raw.mean(0), raw.std(0) + 1e-6
    hidden = ((raw - mean) / std)[:, : -len(UNCERTAINTY)]
    _, singular, vt = np.linalg.svd(hidden - hidden.mean(0), full_matrices=False)
    scale = singular[:dim] / np.sqrt(len(raw) - 1)
    return Projection(mean, std, vt[:dim] / scale[:, None])


class ReaderEncoder:
    """The LM-reader path's prompt encoder: ``LMReader`` + ``Projection``, cached like ``PromptEncoder``.

    Same interface as the MiniLM encoder (``encode``, ``name``, ``dim``, ``max_length``), so the
    predictor takes either. The projection ships in ``datasets/embeddings/<name>.projection.npz``.
    """

    kind = "lm_reader"
    layers: tuple[int, ...] = (4,)  # chosen by 5-fold CV among 4, 8, 12 (scripts/select_predictor.py)
    max_length = 128
    components = 128

    def __init__(
        self,
        layers: tuple[int, ...] | None = None,
        max_length: int | None = None,
        components: int | None = None,
        cache_dir: Path | None = None,
    ):
        self.layers = tuple(layers or self.layers)
        self.max_length = max_length or self.max_length
        self.components = components or self.components
        self.reader = LMReader(self.layers, READER_MODEL, self.max_length)
        self.name = f"{READER_MODEL}-L{'-'.join(map(str, self.layers))}-{self.max_length}-pca{self.components}"
        self.projection_path = BUNDLED_EMBEDDINGS / f"{self.name}.projection.npz"
        self.cache = EmbeddingCache(self.name, cache_dir)
        self._projection: Projection | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.components + len(UNCERTAINTY)

    @property
    def projection(self) -> Projection:
        if self._projection is None:
            self._projection = Projection.load(self.projection_path)
        return self._projection

    def bundled_path(self, dataset: str) -> Path:
        return BUNDLED_EMBEDDINGS / f"{dataset}.{self.name}.npz"

    def encode(self, texts: list[str], progress: bool = False, persist: bool = False) -> np.ndarray:
        """Projected reads for ``texts`` (float32, ``dim`` columns), reading only what the cache lacks."""
        with self._lock:
            return through_cache(
                self.cache, self.dim, texts,
                lambda todo: zip(todo, self.projection(self.reader.read(todo, progress=progress))), persist,
            )
