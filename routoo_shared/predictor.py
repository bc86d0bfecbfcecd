"""Performance predictor: P(model m answers prompt q correctly) for every model in one pass.

The prompt tower reads the frozen MiniLM vector (plus a few length/number features) and gives a
shared representation h(q). Each model owns a bias b_m, a sensitivity a_m to a shared
difficulty d(q) and an embedding e_m: logit = b_m + a_m * d(q) + <e_m, h(q)>. Difficulty is
learned from every model's labels at once (what is shared); e_m carries each model's strengths
(what is specific). Adding a model learns only (b, a, e) for it, the tower stays frozen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from routoo_shared.encoder import PromptEncoder
from routoo_shared.metrics import per_model_report
from routoo_shared.tokens import count_tokens_batch

FORMAT = "routoo-predictor"
FORMAT_VERSION = 1
CONFIG_FILE = "predictor.json"
WEIGHTS_FILE = "predictor.safetensors"


class PredictorFileError(ValueError):
    """A saved predictor is missing, corrupt or does not match its configuration."""


class TrainConfig(BaseModel):
    hidden: int = 256
    dim: int = 32
    dropout: float = 0.3
    epochs: int = 80
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    ensemble: int = 3
    seed: int = 0


def prompt_features(prompts: list[str]) -> np.ndarray:
    """Cheap signals of difficulty the sentence vector blurs: length and how numeric the text is."""
    tokens = np.array(count_tokens_batch(prompts), dtype=np.float32)
    digits = np.array([sum(c.isdigit() for c in p) / max(len(p), 1) for p in prompts], dtype=np.float32)
    maths = np.array([len(re.findall(r"[=+\-*/^<>√∑∫]", p)) / max(len(p), 1) for p in prompts], dtype=np.float32)
    return np.stack([np.log1p(tokens), digits, maths], axis=1)


class QualityNetwork(nn.Module):
    def __init__(self, n_models: int, in_dim: int, hidden: int, dim: int, dropout: float):
        super().__init__()
        self.tower = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.difficulty = nn.Linear(dim, 1)
        self.bias = nn.Parameter(torch.zeros(n_models))
        self.slope = nn.Parameter(torch.full((n_models,), 0.5413))  # softplus(0.5413) = 1
        self.embedding = nn.Parameter(torch.randn(n_models, dim) * 0.01)

    def prompt_side(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tower(x)
        return h, self.difficulty(h)

    @staticmethod
    def combine(h, d, bias, slope, embedding) -> torch.Tensor:
        return bias + nn.functional.softplus(slope) * d + h @ embedding.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, d = self.prompt_side(x)
        return self.combine(h, d, self.bias, self.slope, self.embedding)


def _masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    seen = torch.isfinite(labels)
    return nn.functional.binary_cross_entropy_with_logits(logits[seen], labels[seen])


def _fit(parameters, loss_of_batch, n: int, config: TrainConfig, dev_loss, desc: str, progress: bool = True) -> None:
    """Adam over shuffled mini-batches with early stopping on ``dev_loss`` (restores the best state)."""
    parameters = list(parameters)
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


def _train_member(x, y, x_dev, y_dev, config: TrainConfig, desc: str) -> QualityNetwork:
    """One network of the ensemble, early-stopped on dev log-loss."""
    network = QualityNetwork(y.shape[1], x.shape[1], config.hidden, config.dim, config.dropout)

    def dev_loss() -> float:
        network.eval()
        with torch.no_grad():
            loss = _masked_bce(network(x_dev), y_dev).item()
        network.train()
        return loss

    network.train()
    _fit(network.parameters(), lambda batch: _masked_bce(network(x[batch]), y[batch]), len(x), config, dev_loss, desc)
    return network.eval()


def _learn_new_model(network: QualityNetwork, x: torch.Tensor, y: torch.Tensor, split: int, config: TrainConfig) -> None:
    """Fit one more model's (bias, slope, embedding) on frozen prompt representations and append them.

    The first ``split`` rows are held out for early stopping.
    """
    with torch.no_grad():
        h, d = network.prompt_side(x)
    bias = nn.Parameter(torch.logit(y.mean().clamp(0.02, 0.98)).reshape(1))
    slope = nn.Parameter(torch.full((1,), 0.5413))
    embedding = nn.Parameter(torch.zeros(1, h.shape[1]))

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        logits = QualityNetwork.combine(h[rows], d[rows], bias, slope, embedding)
        return _masked_bce(logits, y[rows]) + 1e-3 * embedding.pow(2).sum()

    held_out = torch.arange(split)
    _fit(
        [bias, slope, embedding],
        lambda batch: loss_on(batch + split),
        len(x) - split,
        config,
        lambda: loss_on(held_out).item(),
        desc="learning a new model",
        progress=False,
    )
    with torch.no_grad():
        network.bias = nn.Parameter(torch.cat([network.bias, bias]))
        network.slope = nn.Parameter(torch.cat([network.slope, slope]))
        network.embedding = nn.Parameter(torch.cat([network.embedding, embedding]))


class Predictor:
    """An ensemble of ``QualityNetwork``s over a fixed list of models, with a temperature for calibration."""

    def __init__(
        self,
        networks: list[QualityNetwork],
        models: list[str],
        config: TrainConfig,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        encoder: PromptEncoder | None = None,
        temperature: float = 1.0,
    ):
        self.networks = [n.eval() for n in networks]
        self.models = list(models)
        self.config = config
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        self.encoder = encoder or PromptEncoder()
        self.temperature = temperature

    # ----- inputs
    def inputs(self, prompts: list[str], dataset: bool = False) -> torch.Tensor:
        """Encoder vectors plus prompt features; ``dataset`` prompts show progress and are cached on disk."""
        vectors = self.encoder.encode(prompts, progress=dataset, persist=dataset)
        features = (prompt_features(prompts) - self.feature_mean) / self.feature_std
        return torch.from_numpy(np.concatenate([vectors, features], axis=1).astype(np.float32))

    @torch.inference_mode()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(x) for network in self.networks]).mean(0)

    def predict(self, prompts: list[str], models: list[str] | None = None) -> np.ndarray:
        """Calibrated probabilities, prompts x models (``models`` defaults to all known, in order)."""
        if not prompts:
            raise ValueError("predict needs at least one prompt")
        columns = self.columns(models)
        probs = torch.sigmoid(self._logits(self.inputs(prompts)) / self.temperature).numpy()
        return probs[:, columns]

    def columns(self, models: list[str] | None) -> list[int]:
        if models is None:
            return list(range(len(self.models)))
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise KeyError(
                f"the predictor has no embedding for model(s) {unknown}; it knows {self.models}. "
                f"Learn one with Predictor.add_model(name, prompts, correct)"
            )
        return [self.models.index(m) for m in models]

    # ----- training
    @classmethod
    def train(
        cls,
        prompts: list[str],
        correct: np.ndarray,
        models: list[str],
        dev_prompts: list[str],
        dev_correct: np.ndarray,
        config: TrainConfig | None = None,
        encoder: PromptEncoder | None = None,
    ) -> "Predictor":
        """Fit on a questions x models 0/1 matrix (NaN = unobserved); dev drives early stopping and the temperature."""
        config = config or TrainConfig()
        if not prompts or not dev_prompts:
            raise ValueError("training needs training prompts and dev prompts (for early stopping and calibration)")
        if correct.shape != (len(prompts), len(models)):
            raise ValueError(f"correct has shape {correct.shape}, expected {(len(prompts), len(models))}")
        torch.manual_seed(config.seed)
        features = prompt_features(prompts)
        predictor = cls([], models, config, features.mean(0), features.std(0) + 1e-6, encoder)
        x, y = predictor.inputs(prompts, dataset=True), torch.from_numpy(correct.astype(np.float32))
        x_dev, y_dev = predictor.inputs(dev_prompts, dataset=True), torch.from_numpy(dev_correct.astype(np.float32))
        for member in range(config.ensemble):
            network = _train_member(x, y, x_dev, y_dev, config, desc=f"training predictor {member + 1}/{config.ensemble}")
            predictor.networks.append(network)
        predictor.temperature = predictor._fit_temperature(x_dev, y_dev)
        return predictor

    def _fit_temperature(self, x_dev: torch.Tensor, y_dev: torch.Tensor) -> float:
        logits = self._logits(x_dev)
        grid = np.exp(np.linspace(np.log(0.5), np.log(2.0), 61))
        losses = [_masked_bce(logits / t, y_dev).item() for t in grid]
        return float(grid[int(np.argmin(losses))])

    def add_model(self, name: str, prompts: list[str], correct: np.ndarray, epochs: int = 200) -> None:
        """Learn a new model's (bias, slope, embedding) from labelled prompts; the rest stays frozen."""
        if name in self.models:
            raise ValueError(f"model {name!r} is already known to the predictor")
        correct = np.asarray(correct, dtype=np.float32)
        if len(prompts) != len(correct) or len(prompts) < 20:
            raise ValueError("add_model needs one 0/1 label a prompt and at least 20 prompts (a few hundred is better)")
        torch.manual_seed(self.config.seed)
        x, y = self.inputs(prompts), torch.from_numpy(correct)[:, None]
        split = max(1, len(prompts) // 5)
        config = self.config.model_copy(update={"epochs": epochs, "batch_size": 64, "lr": 1e-2, "patience": 20})
        for network in self.networks:
            _learn_new_model(network, x, y, split, config)
        self.models.append(name)

    def report(self, prompts: list[str], correct: np.ndarray) -> dict[str, dict[str, float]]:
        """Per-model log-loss, AUC, Brier and ECE of the calibrated probabilities."""
        return per_model_report(self.predict(prompts), correct, self.models)

    # ----- persistence
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{k}.{name}": value.detach().contiguous()
            for k, network in enumerate(self.networks)
            for name, value in network.state_dict().items()
        }
        save_file(tensors, directory / WEIGHTS_FILE)
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "models": self.models,
            "encoder": {"name": self.encoder.name, "max_length": self.encoder.max_length},
            "train_config": self.config.model_dump(),
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "temperature": self.temperature,
            "in_dim": int(self.networks[0].tower[1].in_features),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.exists():
                raise PredictorFileError(f"predictor file missing: {path} (train one with 'routoo train')")
        try:
            config = json.loads(config_path.read_text())
            if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
                raise PredictorFileError(
                    f"{config_path} is not a {FORMAT} v{FORMAT_VERSION} file "
                    f"(format={config.get('format')!r}, version={config.get('version')!r})"
                )
            train_config = TrainConfig(**config["train_config"])
            models, in_dim = config["models"], config["in_dim"]
            encoder = PromptEncoder(max_length=config["encoder"]["max_length"])
        except PredictorFileError:
            raise
        except (ValueError, KeyError, TypeError) as error:
            raise PredictorFileError(f"corrupt predictor config {config_path}: {error}") from error
        try:
            tensors = load_file(weights_path)
        except (SafetensorError, OSError, ValueError) as error:
            raise PredictorFileError(f"corrupt predictor weights {weights_path}: {error}") from error
        networks = []
        for k in range(train_config.ensemble):
            network = QualityNetwork(len(models), in_dim, train_config.hidden, train_config.dim, train_config.dropout)
            prefix = f"{k}."
            state = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
            try:
                network.load_state_dict(state)
            except RuntimeError as error:
                raise PredictorFileError(
                    f"predictor weights {weights_path} do not match its config ({len(models)} models, "
                    f"in_dim {in_dim}): {str(error).splitlines()[0]}"
                ) from error
            networks.append(network)
        return cls(
            networks, models, train_config, config["feature_mean"], config["feature_std"], encoder, config["temperature"]
        )
