"""Static prompt encoder: MiniLM distilled into one vector a token (model2vec), read with numpy.

A prompt's vector is the mean of its tokens' vectors, L2-normalised: no transformer pass, so a
prompt costs tens of microseconds instead of ~11 ms on 2 cores, and nothing here imports torch.
The bundled vectors (``datasets/encoders/minilm-static-256``, 16 MB) were distilled from the
bundled all-MiniLM-L6-v2 with model2vec's ``distill`` (PCA to 256 dimensions, SIF weighting),
offline, by ``python scripts/distill_static_encoder.py``; model2vec's ``StaticModel`` gives the
same vectors (to float16 rounding), it is only not imported here because it costs half a second.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from routoo_shared.datasets import BUNDLED_DIR

STATIC_NAME = "minilm-static-256"
BUNDLED_STATIC = BUNDLED_DIR / "encoders" / STATIC_NAME


class StaticEncoder:
    """Token-vector mean encoder: text -> ``dim``-d L2-normalised vector (float32).

    ``directory`` holds model2vec's files (``model.safetensors``, ``tokenizer.json``,
    ``config.json``); tokens past ``max_length`` are ignored. Raises FileNotFoundError naming the
    folder when a file is missing.
    """

    kind = "static"

    def __init__(self, directory: str | Path | None = None, max_length: int = 512):
        self.directory = Path(directory) if directory else BUNDLED_STATIC
        self.max_length = max_length
        self.name = self.directory.name
        config_path = self.directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"no static encoder in {self.directory} (config.json missing)")
        self.dim = int(json.loads(config_path.read_text())["hidden_dim"])
        self._embeddings: np.ndarray | None = None
        self._tokenizer = None
        self._unknown: int | None = None
        self._lock = threading.Lock()

    def __reduce__(self):
        return type(self), (self.directory, self.max_length)

    def _load(self) -> None:
        with self._lock:
            if self._embeddings is not None:
                return
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._unknown = tokenizer.token_to_id("[UNK]")  # model2vec drops it: it carries no meaning
            self._tokenizer = tokenizer
            self._embeddings = load_file(str(self.directory / "model.safetensors"))["embeddings"].astype(np.float32)

    def encode(self, texts: list[str], progress: bool = False, persist: bool = False) -> np.ndarray:
        """Vectors for ``texts``, float32, one row each (``progress`` and ``persist`` are accepted for the
        encoder interface; nothing is worth caching at this speed)."""
        self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate([self._tokenizer.encode(text, add_special_tokens=False) for text in texts]):
            ids = [i for i in encoding.ids if i != self._unknown][: self.max_length]
            if ids:
                out[row] = self._embeddings[ids].mean(axis=0)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-32)
