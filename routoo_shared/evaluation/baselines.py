"""Peer routers, run in the same harness on the same splits and the same prompt vectors as Routoo.

Each baseline turns prompt vectors into a predicted quality matrix (prompts x models); the
evaluation then spends budgets with the same selector for all of them, so only the predictions
differ. Random and single-model routers need no predictions and are handled in ``evaluation``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from routoo_shared.predictors.network import TrainConfig, masked_bce
from routoo_shared.predictors.training import fit_parameters


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

    def output_bias(self) -> torch.Tensor:
        return self.linear.bias


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

    def output_bias(self) -> torch.Tensor:
        return self.bias


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
    with torch.no_grad():  # start at each model's training accuracy: early stopping may come within a few epochs
        seen = torch.isfinite(y)
        rate = torch.where(seen, y, torch.zeros_like(y)).sum(0) / seen.sum(0).clamp(min=1)
        network.output_bias().copy_(torch.logit(rate.clamp(0.02, 0.98)))
    config = TrainConfig(epochs=100, lr=3e-3, batch_size=128, patience=8, weight_decay=1e-3)

    def dev_loss() -> float:
        with torch.no_grad():
            return masked_bce(network(x_dev), y_dev).item()

    fit_parameters(network.parameters(), lambda b: masked_bce(network(x[b]), y[b]), len(x), config, dev_loss, desc=kind)
    return network


def baseline_quality(network: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(network(torch.from_numpy(x))).numpy()


def fit_category_classifier(
    train_x: np.ndarray, train_categories: list[str], dev_x: np.ndarray, dev_categories: list[str], seed: int = 0
) -> tuple[nn.Linear, list[str]]:
    """Multinomial logistic regression from prompt vectors to the training data's categories.

    Returns the linear layer (logits) and the category names of its columns; early-stopped on dev cross-entropy.
    """
    names = sorted(set(train_categories))
    index = {c: i for i, c in enumerate(names)}
    torch.manual_seed(seed)
    x, y = torch.from_numpy(train_x), torch.tensor([index[c] for c in train_categories])
    known = [i for i, c in enumerate(dev_categories) if c in index]
    x_dev, y_dev = torch.from_numpy(dev_x[known]), torch.tensor([index[dev_categories[i]] for i in known])
    classifier = nn.Linear(x.shape[1], len(names))
    config = TrainConfig(epochs=100, lr=3e-3, batch_size=128, patience=5, weight_decay=1e-3)
    cross_entropy = nn.functional.cross_entropy

    def dev_loss() -> float:
        with torch.no_grad():
            return cross_entropy(classifier(x_dev), y_dev).item()

    fit_parameters(classifier.parameters(), lambda b: cross_entropy(classifier(x[b]), y[b]), len(x), config, dev_loss,
         desc="category classifier", progress=False)
    return classifier, names


def category_lookup_quality(
    train_x: np.ndarray, train_correct: np.ndarray, train_categories: list[str],
    dev_x: np.ndarray, dev_categories: list[str], x: np.ndarray,
) -> np.ndarray:
    """The lookup-table router: predict each prompt's category from its text, then use each model's
    training accuracy in that category (one pseudo-count of the model's overall accuracy)."""
    classifier, names = fit_category_classifier(train_x, train_categories, dev_x, dev_categories)
    overall = np.nanmean(train_correct, axis=0)
    table = np.zeros((len(names), train_correct.shape[1]), dtype=np.float32)
    for c, name in enumerate(names):
        rows = train_correct[[i for i, category in enumerate(train_categories) if category == name]]
        table[c] = (np.nansum(rows, axis=0) + overall) / (np.isfinite(rows).sum(axis=0) + 1)
    with torch.no_grad():
        predicted = classifier(torch.from_numpy(x)).argmax(-1).numpy()
    return table[predicted]


ROUTERS = ("knn", "logistic", "matrix_factorisation", "category_lookup")


def predicted_quality(
    router: str, train_x: np.ndarray, train_correct: np.ndarray, dev_x: np.ndarray, dev_correct: np.ndarray,
    x: np.ndarray, train_categories: list[str | None] | None = None, dev_categories: list[str | None] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One baseline's predicted quality on ``x`` (prompts x models), fitted on train and tuned on dev.

    ``category_lookup`` needs every training prompt's category; raises ValueError otherwise.
    """
    if router == "knn":
        return knn_quality(train_x, train_correct, x, tune_knn(train_x, train_correct, dev_x, dev_correct))
    if router == "category_lookup":
        if not train_categories or not all(train_categories):
            raise ValueError("the category lookup router needs a category for every training prompt")
        return category_lookup_quality(train_x, train_correct, list(train_categories), dev_x, list(dev_categories or []), x)
    return baseline_quality(fit_baseline(router, train_x, train_correct, dev_x, dev_correct, seed), x)


def tune_knn(
    train_x: np.ndarray, train_correct: np.ndarray, dev_x: np.ndarray, dev_correct: np.ndarray
) -> int:
    """The k with the best dev log-loss (among those below the number of training prompts)."""
    from routoo_shared.evaluation.metrics import log_loss

    seen = np.isfinite(dev_correct)
    losses = {
        k: log_loss(knn_quality(train_x, train_correct, dev_x, k)[seen], dev_correct[seen])
        for k in (10, 25, 50, 100, 200)
        if k < len(train_x)
    }
    return min(losses, key=losses.get)
