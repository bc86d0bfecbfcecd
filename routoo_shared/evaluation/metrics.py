"""Probability-quality metrics for the predictor (computed per model over observed labels)."""

from __future__ import annotations

import numpy as np


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(((probs - labels) ** 2).mean())


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum formula (ties share their mean rank)."""
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(probs, kind="mergesort")
    ranks = np.empty(len(probs))
    ranks[order] = np.arange(1, len(probs) + 1)
    sorted_probs = probs[order]
    _, first, counts = np.unique(sorted_probs, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(probs[inside].mean() - labels[inside].mean())
    return float(total)


def per_model_report(probs: np.ndarray, correct: np.ndarray, models: list[str]) -> dict[str, dict[str, float]]:
    """log-loss, AUC, Brier and ECE per model column, plus 'ALL' pooled; NaN labels are skipped."""
    report = {}
    for j, model in enumerate(models + ["ALL"]):
        p, y = (probs[:, j], correct[:, j]) if j < len(models) else (probs.ravel(), correct.ravel())
        seen = np.isfinite(y)
        p, y = p[seen], y[seen]
        report[model] = {
            "log_loss": log_loss(p, y),
            "auc": auc(p, y),
            "brier": brier(p, y),
            "ece": ece(p, y),
            "n": int(seen.sum()),
        }
    return report
