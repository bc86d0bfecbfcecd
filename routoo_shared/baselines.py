"""Peer routers, run in the same harness on the same splits and the same MiniLM vectors as Routoo.

Each baseline turns prompt vectors into a predicted quality matrix (prompts x models); the
evaluation then spends budgets with the same selector for all of them, so only the predictions
differ. Random and single-model routers need no predictions and are handled in ``evaluation``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from routoo_shared.predictor import TrainConfig, _fit, _masked_bce


def knn_quality(train_x: np.ndarray, train_correct: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Mean correctness of each model over the k most similar training prompts (cosine)."""
    out = np.zeros((len(x), train_correct.shape[1]), dtype=np.float32)
    filled = np.nan_to_num(train_correct, nan=0.0)
    seen = np.isfinite(train_correct).astype(np.float32)
    for start in range(0, len(x), 512):
        similarity = x[start : start + 512] @ train_x.T
        nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
        hits, counts = filled[nearest].sum(1), seen[nearest].sum(1)
        prior = np.nanmean(train_correct, axis=0)
        out[start : start + 512] = (hits + prior) / (counts + 1)  # one pseudo-count of the model's mean
    return out


class _Logistic(nn.Module):
    """Independent logistic regressions, one a model (shares nothing across models)."""

    def __init__(self, in_dim: int, n_models: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, n_models)

    def forward(self, x):
        return self.linear(x)


class _MatrixFactorisation(nn.Module):
    """RouteLLM's mf idea: score(q, m) = w . (v_m * W x_q) + b_m, a prompt-model bilinear form."""

    def __init__(self, in_dim: int, n_models: int, dim: int):
        super().__init__()
        self.project = nn.Linear(in_dim, dim, bias=False)
        self.models = nn.Parameter(torch.randn(n_models, dim) * 0.1)
        self.out = nn.Linear(dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(n_models))

    def forward(self, x):
        h = self.project(x)[:, None, :] * self.models[None, :, :]
        return self.out(h).squeeze(-1) + self.bias


def fit_baseline(
    kind: str, train_x: np.ndarray, train_correct: np.ndarray, dev_x: np.ndarray, dev_correct: np.ndarray, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_correct.astype(np.float32))
    x_dev, y_dev = torch.from_numpy(dev_x), torch.from_numpy(dev_correct.astype(np.float32))
    if kind == "logistic":
        network = _Logistic(x.shape[1], y.shape[1])
    elif kind == "matrix_factorisation":
        network = _MatrixFactorisation(x.shape[1], y.shape[1], 64)
    else:
        raise ValueError(f"unknown baseline {kind!r}; known: logistic, matrix_factorisation")
    config = TrainConfig(epochs=100, lr=3e-3, batch_size=128, patience=8, weight_decay=1e-3)

    def dev_loss() -> float:
        with torch.no_grad():
            return _masked_bce(network(x_dev), y_dev).item()

    _fit(network.parameters(), lambda b: _masked_bce(network(x[b]), y[b]), len(x), config, dev_loss, desc=kind)
    return network


def baseline_quality(network: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(network(torch.from_numpy(x))).numpy()


def tune_knn(
    train_x: np.ndarray, train_correct: np.ndarray, dev_x: np.ndarray, dev_correct: np.ndarray
) -> int:
    """The k with the best dev log-loss."""
    from routoo_shared.metrics import log_loss

    seen = np.isfinite(dev_correct)
    losses = {
        k: log_loss(knn_quality(train_x, train_correct, dev_x, k)[seen], dev_correct[seen])
        for k in (10, 25, 50, 100, 200)
    }
    return min(losses, key=losses.get)
