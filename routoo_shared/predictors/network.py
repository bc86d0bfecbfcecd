"""The predictor's network: one ensemble member's prompt side and model side, and its settings.

``TrainConfig`` is saved with every predictor (``predictor.json``), so loading one needs it;
training itself lives in ``routoo_shared.predictors.training``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

Positive = Annotated[int, Field(ge=1)]



class TrainConfig(BaseModel):
    """Architecture and training settings; the defaults are the cross-validated choice."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hidden: Positive = 256
    dim: Positive = 32
    dropout: float = Field(0.3, ge=0, lt=1)
    epochs: Positive = 80
    batch_size: Positive = 128
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0, allow_inf_nan=False)
    patience: Positive = 10
    ensemble: int = Field(3, ge=1, le=16)
    seed: int = 0
    categories: bool = True  # per-category model offsets with a text classifier
    model_embedding: bool = False  # e_m . h(q): lowered cross-validated AIQ on MMLU-Pro, so off by default
    category_weight: float = Field(1.0, ge=0, allow_inf_nan=False)  # weight of the classifier's cross-entropy
    start_from_rates: bool = True  # model biases and category offsets start at the lookup table's rates
    early_stopping: Literal["log_loss", "aiq"] = "log_loss"  # dev score that stops training (AIQ: same CV quality, 3-15x slower)
    temperature_by: Literal["aiq", "log_loss"] = "aiq"  # dev score that picks the temperature


class QualityNetwork(nn.Module):
    """One member of the ensemble: prompt side (tower, difficulty, classifier) and model side."""

    def __init__(self, n_models: int, in_dim: int, n_categories: int, config: TrainConfig):
        super().__init__()
        hidden, dim = config.hidden, config.dim
        self.tower = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(hidden, dim)
        )
        self.difficulty = nn.Linear(dim, 1)
        self.classifier = nn.Linear(in_dim, n_categories) if n_categories else None
        self.bias = nn.Parameter(torch.zeros(n_models))
        self.slope = nn.Parameter(torch.full((n_models,), 0.5413))  # softplus(0.5413) = 1
        self.offsets = nn.Parameter(torch.zeros(n_models, n_categories))
        self.embedding = nn.Parameter(torch.randn(n_models, dim) * (0.01 if config.model_embedding else 0.0))
        self.embedding.requires_grad_(config.model_embedding)

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

    def prompt_side(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, d, category logits) for a batch of inputs."""
        h = self.tower(x)
        category_logits = self.classifier(x) if self.classifier is not None else x.new_zeros(len(x), 0)
        return h, self.difficulty(h), category_logits

    @staticmethod
    def combine(h, d, category_logits, bias, slope, offsets, embedding) -> torch.Tensor:
        logits = bias + nn.functional.softplus(slope) * d + h @ embedding.T
        if offsets.shape[1]:
            logits = logits + torch.softmax(category_logits, dim=-1) @ offsets.T
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.prompt_side(x), self.bias, self.slope, self.offsets, self.embedding)

    def loss(self, x: torch.Tensor, y: torch.Tensor, category: torch.Tensor, config: TrainConfig) -> torch.Tensor:
        """Masked BCE on the labels, plus the classifier's cross-entropy where a category is known (-1: unknown)."""
        h, d, category_logits = self.prompt_side(x)
        loss = masked_bce(self.combine(h, d, category_logits, self.bias, self.slope, self.offsets, self.embedding), y)
        known = category >= 0
        if self.offsets.shape[1] and known.any():
            loss = loss + config.category_weight * nn.functional.cross_entropy(category_logits[known], category[known])
        return loss


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    seen = torch.isfinite(labels)
    return nn.functional.binary_cross_entropy_with_logits(logits[seen], labels[seen])
