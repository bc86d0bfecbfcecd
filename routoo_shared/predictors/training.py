"""Training the predictor: AdamW with early stopping, one ensemble member, and a model added later."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from routoo_shared.predictors.network import QualityNetwork, TrainConfig, masked_bce

if TYPE_CHECKING:
    from routoo_shared.evaluation.routing_quality import RoutingTask


def fit_parameters(parameters, loss_of_batch, n: int, config: TrainConfig, dev_loss, desc: str, progress: bool = True) -> None:
    """AdamW over shuffled mini-batches with early stopping on ``dev_loss`` (lower is better; restores the best state)."""
    parameters = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    best, best_state, stale = float("inf"), None, 0
    for _ in tqdm(range(config.epochs), desc=desc, leave=False, disable=not progress):
        for batch in torch.randperm(n).split(config.batch_size):
            optimizer.zero_grad()
            loss_of_batch(batch).backward()
            optimizer.step()
        loss = dev_loss()
        if loss < best - 1e-5:
            best, best_state, stale = loss, [p.detach().clone() for p in parameters], 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    with torch.no_grad():
        for p, saved in zip(parameters, best_state):
            p.copy_(saved)


class DevScore:
    """A held-out score to minimise: minus routing quality (AIQ) when a task is given, else log-loss."""

    def __init__(self, y_dev: torch.Tensor, task: RoutingTask | None, rows: np.ndarray | None, by: str):
        self.y_dev, self.task, self.rows = y_dev, task, rows
        self.by_aiq = task is not None and by == "aiq"

    def __call__(self, logits: torch.Tensor) -> float:
        if self.by_aiq:
            return -self.task.aiq(torch.sigmoid(logits).numpy()[self.rows])
        return masked_bce(logits, self.y_dev).item()


def train_member(
    x, y, category, n_categories, x_dev, score: DevScore, config: TrainConfig, desc: str, column_dataset: list[int] | None = None
) -> QualityNetwork:
    """One network of the ensemble, early-stopped on the dev score."""
    network = QualityNetwork(y.shape[1], x.shape[1], n_categories, config, column_dataset)
    if config.start_from_rates:
        network.start_from_rates(y, category)

    def dev_loss() -> float:
        network.eval()
        with torch.no_grad():
            loss = score(network(x_dev))
        network.train()
        return loss

    network.train()
    fit_parameters(network.parameters(), lambda b: network.loss(x[b], y[b], category[b], config), len(x), config, dev_loss, desc)
    return network.eval()


def learn_new_model(
    network: QualityNetwork, x: torch.Tensor, y: torch.Tensor, split: int, config: TrainConfig, like: int
) -> None:
    """Fit one more model's (bias, slope, offsets, embedding) on frozen prompt representations and append them.

    The first ``split`` rows are held out for early stopping. The fit starts at the known model
    ``like`` (the one whose predictions fit the labels best) and its category offsets are L2-shrunk
    towards that model's, the embedding towards zero: a few hundred labels set the level and adjust
    the profile, while the known model's profile (learnt from thousands of labels) carries the ranking.
    """
    with torch.no_grad():
        h, d, category_logits = network.prompt_side(x)
        d = d[:, like : like + 1]  # the difficulty of the dataset the known model was measured on
        anchor = network.offsets[like : like + 1].clone()
        measured = network.measured[like : like + 1].clone()  # it is read where the model it starts from was
    bias = nn.Parameter(network.bias[like : like + 1].detach().clone())
    slope = nn.Parameter(network.slope[like : like + 1].detach().clone())
    offsets = nn.Parameter(anchor.clone())
    embedding = nn.Parameter(torch.zeros(1, h.shape[1]), requires_grad=config.model_embedding)

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        logits = QualityNetwork.combine(h[rows], d[rows], category_logits[rows], bias, slope, offsets, embedding, measured)
        return masked_bce(logits, y[rows]) + 1e-3 * (embedding.pow(2).sum() + (offsets - anchor).pow(2).sum())

    held_out = torch.arange(split)
    fit_parameters(
        [bias, slope, offsets, embedding],
        lambda batch: loss_on(batch + split),
        len(x) - split,
        config,
        lambda: loss_on(held_out).item(),
        desc="learning a new model",
        progress=False,
    )
    with torch.no_grad():
        for name, value in (("bias", bias), ("slope", slope), ("offsets", offsets), ("embedding", embedding)):
            grown = nn.Parameter(torch.cat([getattr(network, name), value.detach()]))
            grown.requires_grad_(getattr(network, name).requires_grad)
            setattr(network, name, grown)
        network.measured = torch.cat([network.measured, measured])
        network.column_dataset = torch.cat([network.column_dataset, network.column_dataset[like : like + 1]])
