"""The predictor's network in torch: one ensemble member's prompt side and model side, for training.

Routing runs the same arithmetic in numpy (``head.py``) from the saved weights; training itself
lives in ``routoo_shared.predictors.training``.
"""

from __future__ import annotations

import torch
from torch import nn

from routoo_shared.predictors.train_config import TrainConfig

__all__ = ["QualityNetwork", "TrainConfig", "masked_bce"]


class QualityNetwork(nn.Module):
    """One member of the ensemble: prompt side (tower, difficulty, classifier) and model side."""

    def __init__(
        self, n_models: int, in_dim: int, n_categories: int, config: TrainConfig, column_dataset: list[int] | None = None
    ):
        """``n_models`` columns; ``column_dataset`` names each column's dataset (an index: one question
        difficulty a dataset, default one for all), as a general predictor has one column a (model, dataset)."""
        super().__init__()
        hidden, dim = config.hidden, config.dim
        self.tower = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(hidden, dim)
        )
        column_dataset = column_dataset if column_dataset is not None else [0] * n_models
        self.difficulty = nn.Linear(dim, max(column_dataset, default=0) + 1)
        self.register_buffer("column_dataset", torch.tensor(column_dataset, dtype=torch.long), persistent=False)
        self.classifier = nn.Linear(in_dim, n_categories) if n_categories else None
        self.bias = nn.Parameter(torch.zeros(n_models))
        self.slope = nn.Parameter(torch.full((n_models,), 0.5413))  # softplus(0.5413) = 1
        self.offsets = nn.Parameter(torch.zeros(n_models, n_categories))
        self.embedding = nn.Parameter(torch.randn(n_models, dim) * (0.01 if config.model_embedding else 0.0))
        self.embedding.requires_grad_(config.model_embedding)
        # models x categories: 1 where the model has labels in the category (its offsets mean something there)
        self.register_buffer("measured", torch.ones(n_models, n_categories))

    @torch.no_grad()
    def start_from_rates(self, y: torch.Tensor, category: torch.Tensor) -> None:
        """Start at the category lookup table: b_m = logit(model m's accuracy), o_{m,c} = logit(its
        accuracy in category c) - b_m, each with one pseudo-count of the overall rate. Training
        then learns what the prompt adds (difficulty, soft categories) instead of rediscovering
        the table from zero."""
        seen = torch.isfinite(y)
        labels = torch.where(seen, y, torch.zeros_like(y))
        overall = (labels.sum(0) / seen.sum(0).clamp(min=1)).clamp(0.02, 0.98)
        self.bias.copy_(torch.logit(overall))
        for c in range(self.offsets.shape[1]):
            rows = category == c
            rate = (labels[rows].sum(0) + overall) / (seen[rows].sum(0) + 1)
            self.offsets[:, c] = torch.logit(rate.clamp(0.02, 0.98)) - self.bias
            self.measured[:, c] = (seen[rows].sum(0) > 0).float()

    def prompt_side(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, d, category logits) for a batch of inputs."""
        h = self.tower(x)
        category_logits = self.classifier(x) if self.classifier is not None else x.new_zeros(len(x), 0)
        return h, self.difficulty(h)[:, self.column_dataset], category_logits

    @staticmethod
    def combine(h, d, category_logits, bias, slope, offsets, embedding, measured) -> torch.Tensor:
        """Each model's offsets are read over the categories it was measured in (``measured``): the
        classifier's mass elsewhere says nothing about that model, so its share is renormalised away.
        ``head.member_outputs`` is the same arithmetic in numpy."""
        logits = bias + nn.functional.softplus(slope) * d + h @ embedding.T
        if offsets.shape[1]:
            weights = torch.softmax(category_logits, dim=-1)
            logits = logits + (weights @ (offsets * measured).T) / (weights @ measured.T).clamp(min=1e-6)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.prompt_side(x), self.bias, self.slope, self.offsets, self.embedding, self.measured)

    def loss(self, x: torch.Tensor, y: torch.Tensor, category: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        """Masked BCE on the labels, plus the classifier's cross-entropy where a category is known (-1: unknown)."""
        h, d, category_logits = self.prompt_side(x)
        loss = masked_bce(self.combine(h, d, category_logits, self.bias, self.slope, self.offsets, self.embedding, self.measured), y)
        known = category >= 0
        if self.offsets.shape[1] and known.any():
            loss = loss + config.category_weight * nn.functional.cross_entropy(category_logits[known], category[known])
        return loss


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    seen = torch.isfinite(labels)
    return nn.functional.binary_cross_entropy_with_logits(logits[seen], labels[seen])
