"""Performance predictor: P(model m answers prompt q correctly) for every model in one pass.

A prompt tower reads the prompt's vector (MiniLM, or the LM reader's projected hidden states) plus
a few length/number features and gives a shared representation h(q). On top of it:

- a text classifier p(c | q) over the training data's categories (trained on the category labels);
- a shared question difficulty d(q) with a per-model sensitivity a_m (a 2-parameter IRT model);
- per-model, per-category offsets o_{m,c} (what each model is good at, by topic);
- optionally a model embedding e_m read against h(q) (Routoo's model embeddings).

logit = b_m + sum_c p(c|q) o_{m,c} + softplus(a_m) d(q) + <e_m, h(q)>.

Measured on 5-fold cross-validation inside train+dev (``scripts/select_predictor.py``), routing
quality comes from the difficulty and the category offsets; see the README's results. The
temperature is chosen by held-out routing quality (AIQ) when a ``RoutingTask`` is given; early
stopping on log-loss routed as well as early stopping on AIQ in cross-validation, at a fraction of
the cost. Adding a model learns only its (b, a, o, e), the rest stays frozen.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from routoo_shared.predictors.encoder import PromptEncoder
from routoo_shared.predictors.errors import PredictorFileError
from routoo_shared.predictors.network import QualityNetwork, TrainConfig
from routoo_shared.routing.tokens import count_tokens_batch

FORMAT = "routoo-predictor"
FORMAT_VERSION = 2
CONFIG_FILE = "predictor.json"
WEIGHTS_FILE = "predictor.safetensors"
N_FEATURES = 3

if TYPE_CHECKING:
    from routoo_shared.evaluation.routing_quality import RoutingTask
    from routoo_shared.predictors.training import DevScore


def prompt_features(prompts: list[str]) -> np.ndarray:
    """Cheap signals of difficulty the sentence vector blurs: length and how numeric the text is."""
    tokens = np.array(count_tokens_batch(prompts), dtype=np.float32)
    digits = np.array([sum(c.isdigit() for c in p) / max(len(p), 1) for p in prompts], dtype=np.float32)
    maths = np.array([len(re.findall(r"[=+\-*/^<>√∑∫]", p)) / max(len(p), 1) for p in prompts], dtype=np.float32)
    return np.stack([np.log1p(tokens), digits, maths], axis=1)


# ----- the saved configuration, validated field by field at load


def _finite(values: list[float]) -> list[float]:
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"must be finite, got {bad}")
    return values


class EncoderConfig(BaseModel):
    """Which prompt encoder the predictor reads: MiniLM (``minilm``) or the LM reader (``lm_reader``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["minilm", "lm_reader"] = "minilm"
    name: str
    max_length: int = Field(ge=8, le=8192)
    layers: list[Annotated[int, Field(ge=0, le=64)]] | None = None
    components: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _consistent(self) -> "EncoderConfig":
        if self.kind == "minilm" and self.max_length > 512:
            raise ValueError("MiniLM reads at most 512 tokens")
        if self.kind == "lm_reader" and (not self.layers or self.components is None):
            raise ValueError("an lm_reader encoder needs its layers and components")
        return self

    def build(self):
        if self.kind == "minilm":
            return PromptEncoder(max_length=self.max_length)
        from routoo_shared.predictors.lm_reader import ReaderEncoder

        return ReaderEncoder(tuple(self.layers), self.max_length, self.components)

    @classmethod
    def of(cls, encoder) -> "EncoderConfig":
        if getattr(encoder, "kind", "minilm") == "lm_reader":
            return cls(kind="lm_reader", name=encoder.name, max_length=encoder.max_length,
                       layers=list(encoder.layers), components=encoder.components)
        return cls(name=encoder.name, max_length=encoder.max_length)


class PredictorConfig(BaseModel):
    """``predictor.json``: everything but the weights. Strict: wrong types are errors, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["routoo-predictor"]
    version: Literal[2]
    models: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    categories: list[Annotated[str, Field(min_length=1)]]
    encoder: EncoderConfig
    train_config: TrainConfig
    feature_mean: list[float] = Field(min_length=N_FEATURES, max_length=N_FEATURES)
    feature_std: list[float] = Field(min_length=N_FEATURES, max_length=N_FEATURES)
    temperature: float = Field(ge=0.05, le=20.0, allow_inf_nan=False)
    in_dim: int = Field(ge=1)

    @field_validator("feature_mean")
    @classmethod
    def _finite_mean(cls, values: list[float]) -> list[float]:
        return _finite(values)

    @field_validator("feature_std")
    @classmethod
    def _positive_std(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"must be finite and positive (it divides the features), got {values}")
        return values

    @field_validator("models", "categories")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("names must be unique")
        return names


def _field_errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors())


class Predictor:
    """An ensemble of ``QualityNetwork``s over a fixed list of models, with a temperature for calibration."""

    def __init__(
        self,
        networks: list[QualityNetwork],
        models: list[str],
        config: TrainConfig,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        encoder=None,
        temperature: float = 1.0,
        categories: list[str] | None = None,
    ):
        self.networks = [n.eval() for n in networks]
        self.models = list(models)
        self.config = config
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        self.encoder = encoder or PromptEncoder()
        self.temperature = temperature
        self.categories = list(categories or [])

    @property
    def name(self) -> str:
        """Which predictor this is, for decision records: the encoder it reads."""
        return f"routoo-head/{self.encoder.name}"

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
        """Calibrated probabilities, prompts x models (``models`` defaults to all known, in order).

        A corrupt weight shows as NaN in its model's column; it is returned as is, never hidden.
        """
        if not prompts:
            raise ValueError("predict needs at least one prompt")
        columns = self.columns(models)
        probs = torch.sigmoid(self._logits(self.inputs(prompts)) / self.temperature).numpy()
        return probs[:, columns]

    @torch.inference_mode()
    def predict_categories(self, prompts: list[str]) -> np.ndarray:
        """p(category | prompt), prompts x ``categories`` (the ensemble's mean); empty without categories."""
        x = self.inputs(prompts)
        return torch.stack([torch.softmax(n.prompt_side(x)[2], dim=-1) for n in self.networks]).mean(0).numpy()

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
        encoder=None,
        categories: list[str | None] | None = None,
        dev_task: RoutingTask | None = None,
        dev_rows: np.ndarray | None = None,
    ) -> "Predictor":
        """Fit on a questions x models matrix of scores in [0, 1] (NaN = unobserved).

        ``categories`` (one label a training prompt, None where unknown) trains the category
        classifier and offsets; without them the head has neither. ``dev_task`` (a
        ``RoutingTask`` on the dev prompts ``dev_rows``, default all) lets ``config.early_stopping``
        and ``config.temperature_by`` follow dev routing quality (AIQ); otherwise both use dev log-loss.
        Raises ValueError on empty or misshaped inputs.
        """
        from routoo_shared.predictors.training import DevScore, train_member

        config = config or TrainConfig()
        if not prompts or not dev_prompts:
            raise ValueError("training needs training prompts and dev prompts (for early stopping and calibration)")
        if correct.shape != (len(prompts), len(models)):
            raise ValueError(f"correct has shape {correct.shape}, expected {(len(prompts), len(models))}")
        if categories is not None and len(categories) != len(prompts):
            raise ValueError(f"{len(categories)} categories for {len(prompts)} prompts")
        names = sorted({c for c in categories or [] if c}) if config.categories else []
        torch.manual_seed(config.seed)
        features = prompt_features(prompts)
        predictor = cls([], models, config, features.mean(0), features.std(0) + 1e-6, encoder, categories=names)
        x, y = predictor.inputs(prompts, dataset=True), torch.from_numpy(correct.astype(np.float32))
        index = {c: i for i, c in enumerate(names)}
        category = torch.tensor([index.get(c, -1) for c in (categories or [None] * len(prompts))])
        x_dev, y_dev = predictor.inputs(dev_prompts, dataset=True), torch.from_numpy(dev_correct.astype(np.float32))
        rows = np.arange(len(dev_prompts)) if dev_rows is None else dev_rows
        stopping = DevScore(y_dev, dev_task, rows, config.early_stopping)
        for member in range(config.ensemble):
            network = train_member(
                x, y, category, len(names), x_dev, stopping, config, desc=f"training predictor {member + 1}/{config.ensemble}"
            )
            predictor.networks.append(network)
        predictor.temperature = predictor._fit_temperature(x_dev, DevScore(y_dev, dev_task, rows, config.temperature_by))
        return predictor

    def _fit_temperature(self, x_dev: torch.Tensor, score: DevScore) -> float:
        logits = self._logits(x_dev)
        grid = np.exp(np.linspace(np.log(0.5), np.log(2.0), 13 if score.by_aiq else 61))
        losses = [score(logits / t) for t in grid]
        return float(grid[int(np.argmin(losses))])

    def add_model(self, name: str, prompts: list[str], correct: np.ndarray, epochs: int = 200) -> None:
        """Learn a new model's (bias, slope, category offsets, embedding) from labelled prompts, starting
        at the known model whose predictions fit them best; the rest stays frozen.

        ``correct``: one score a prompt in [0, 1] (0/1 correctness, or a soft score such as a
        judge's probability). Raises ValueError for a known name, too few prompts, or scores that
        are not finite values in [0, 1].
        """
        from routoo_shared.predictors.training import learn_new_model

        if name in self.models:
            raise ValueError(f"model {name!r} is already known to the predictor")
        correct = np.asarray(correct, dtype=np.float32)
        if correct.ndim != 1 or len(prompts) != len(correct) or len(prompts) < 20:
            raise ValueError("add_model needs one score a prompt and at least 20 prompts (a few hundred is better)")
        if not (np.isfinite(correct).all() and (correct >= 0).all() and (correct <= 1).all()):
            raise ValueError("add_model scores must be finite values in [0, 1]")
        torch.manual_seed(self.config.seed)
        x, y = self.inputs(prompts), torch.from_numpy(correct)[:, None]
        split = max(1, len(prompts) // 5)
        known = np.clip(torch.sigmoid(self._logits(x[split:]) / self.temperature).numpy(), 1e-4, 1 - 1e-4)  # x once
        fit = correct[split:, None]
        like = int(np.nanargmin(-(fit * np.log(known) + (1 - fit) * np.log(1 - known)).mean(0)))
        config = self.config.model_copy(update={"epochs": epochs, "batch_size": 64, "lr": 1e-2, "patience": 20})
        for network in self.networks:
            learn_new_model(network, x, y, split, config, like)
        self.models.append(name)

    def report(self, prompts: list[str], correct: np.ndarray) -> dict[str, dict[str, float]]:
        """Per-model log-loss, AUC, Brier and ECE of the calibrated probabilities."""
        from routoo_shared.evaluation.metrics import per_model_report

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
        config = PredictorConfig(
            format=FORMAT,
            version=FORMAT_VERSION,
            models=self.models,
            categories=self.categories,
            encoder=EncoderConfig.of(self.encoder),
            train_config=self.config,
            feature_mean=self.feature_mean.tolist(),
            feature_std=self.feature_std.tolist(),
            temperature=float(self.temperature),
            in_dim=int(self.networks[0].tower[1].in_features),
        )
        (directory / CONFIG_FILE).write_text(config.model_dump_json(indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        """Read a saved predictor. Raises PredictorFileError, naming the file and the field, for a
        missing file, unreadable JSON or weights, any invalid value (NaN, infinity, wrong type or
        length, out-of-range number), or weights that do not match the config."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.exists():
                raise PredictorFileError(f"predictor file missing: {path} (train one with 'routoo train')")
        try:
            raw = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise PredictorFileError(f"corrupt predictor config {config_path}: {error}") from error
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
            found = (raw.get("format"), raw.get("version")) if isinstance(raw, dict) else (type(raw).__name__, None)
            raise PredictorFileError(
                f"{config_path} is not a {FORMAT} v{FORMAT_VERSION} file (format={found[0]!r}, version={found[1]!r})"
            )
        try:
            config = PredictorConfig.model_validate_json(config_path.read_text())
        except ValidationError as error:
            raise PredictorFileError(f"invalid predictor config {config_path}: {_field_errors(error)}") from error
        encoder = config.encoder.build()
        expected_in = encoder.dim + N_FEATURES
        if config.in_dim != expected_in:
            raise PredictorFileError(
                f"invalid predictor config {config_path}: in_dim is {config.in_dim}, but encoder "
                f"{config.encoder.name} gives {encoder.dim} values + {N_FEATURES} features = {expected_in}"
            )
        try:
            tensors = load_file(weights_path)
        except (SafetensorError, OSError, ValueError) as error:
            raise PredictorFileError(f"corrupt predictor weights {weights_path}: {error}") from error
        members = {name.split(".", 1)[0] for name in tensors}
        if members != {str(k) for k in range(config.train_config.ensemble)}:
            raise PredictorFileError(
                f"predictor weights {weights_path} hold members {sorted(members)}, but train_config.ensemble "
                f"is {config.train_config.ensemble}"
            )
        networks = []
        for k in range(config.train_config.ensemble):
            network = QualityNetwork(len(config.models), config.in_dim, len(config.categories), config.train_config)
            prefix = f"{k}."
            state = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
            try:
                network.load_state_dict(state)
            except RuntimeError as error:
                raise PredictorFileError(
                    f"predictor weights {weights_path} do not match its config ({len(config.models)} models, "
                    f"{len(config.categories)} categories, in_dim {config.in_dim}): {str(error).splitlines()[0]}"
                ) from error
            networks.append(network)
        return cls(
            networks, config.models, config.train_config, np.array(config.feature_mean), np.array(config.feature_std),
            encoder, config.temperature, config.categories,
        )
