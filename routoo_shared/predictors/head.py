"""The predictor's forward pass in numpy: what routing runs, with no torch on the serving path.

Training builds ``QualityNetwork``s in torch (``network.py``); their weights are read here by
name, as they are saved (``predictor.safetensors``), and the same arithmetic runs in float32
numpy (agreeing with torch to ~1e-6). Keeping torch off the call path saves its import (seconds
in a fresh process) and its thread pool, which contended with the encoder's.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

Member = dict[str, np.ndarray]  # one ensemble member's weights, by their torch state-dict names


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (max error 1.5e-7): numpy has no erf, and scipy costs an import."""
    sign, a = np.sign(x), np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, as torch's ``nn.GELU()``."""
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def member_outputs(member: Member, x: np.ndarray, column_dataset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One member's logits (prompts x columns) and p(category | prompt) (prompts x categories).

    logit = b + softplus(a) d + <e, h> + category offsets, as ``QualityNetwork.forward``: d is the
    difficulty of each column's dataset (``column_dataset``), and a column's offsets are read over
    the categories it was measured in (``measured``): the classifier's mass on categories without
    its labels says nothing about it, so that share is renormalised away.
    """
    h = gelu(x @ member["tower.1.weight"].T + member["tower.1.bias"]) @ member["tower.4.weight"].T + member["tower.4.bias"]
    d = (h @ member["difficulty.weight"].T + member["difficulty.bias"])[:, column_dataset]
    logits = member["bias"] + softplus(member["slope"]) * d + h @ member["embedding"].T
    offsets = member["offsets"]
    if not offsets.shape[1]:
        return logits, np.zeros((len(x), 0), dtype=logits.dtype)
    weights = softmax(x @ member["classifier.weight"].T + member["classifier.bias"])
    measured = member["measured"]
    logits = logits + (weights @ (offsets * measured).T) / np.maximum(weights @ measured.T, 1e-6)
    return logits, weights


@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def ensemble(members: list[Member], x: np.ndarray, column_dataset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's mean logits (prompts x columns) and mean p(category | prompt).

    BLAS runs one thread here: these matrices are tiny, and a multi-threaded BLAS spent 15 times
    longer waking its threads than multiplying on a loaded 2-core machine (300 ms against 20 ms a
    batch of 32), holding the GIL from the event loop meanwhile.
    """
    with _blas().limit(limits=1, user_api="blas"):
        outputs = [member_outputs(member, x, column_dataset) for member in members]
    return np.mean([o[0] for o in outputs], axis=0), np.mean([o[1] for o in outputs], axis=0)
