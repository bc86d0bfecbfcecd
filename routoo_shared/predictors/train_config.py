"""The predictor's architecture and training settings, saved with every predictor (``predictor.json``).

Apart from the network (``network.py``, torch) so that loading and running a predictor needs no torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
