"""Performance predictor: P(model m answers prompt q correctly) for every model in one pass.

A prompt tower reads the prompt's vector (MiniLM, or the LM reader's projected hidden states) plus
a few length/number features and gives a shared representation h(q). On top of it:

- a text classifier p(c | q) over the training data's categories (trained on the category labels);
- a shared question difficulty d(q) with a per-model sensitivity a_m (a 2-parameter IRT model);
- per-model, per-category offsets o_{m,c} (what each model is good at, by topic);
- optionally a model embedding e_m read against h(q) (Routoo's model embeddings).

logit = b_m + sum_c p(c|q) o_{m,c} + softplus(a_m) d(q) + <e_m, h(q)>.

A general predictor (the bundled one) is trained on several datasets at once: it has one column a
(model, dataset) with labels, one difficulty a dataset, and categories named ``dataset:category``,
so a model's level on one dataset's grading never leaks into another's. ``predict`` reads a model
over the datasets that every requested model was measured on (for a pool within one dataset, that
dataset's columns), weighted by p(dataset | prompt), the classifier's mass on each dataset's
categories. Routing runs the forward pass in numpy (``head.py``): no torch on a call.

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
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routoo_shared.predictors.errors import PredictorFileError
from routoo_shared.predictors.head import Member, ensemble
from routoo_shared.predictors.train_config import TrainConfig
from routoo_shared.routing.known_models import resolve
from routoo_shared.routing.tokens import count_tokens

FORMAT = "routoo-predictor"
FORMAT_VERSION = 2
CONFIG_FILE = "predictor.json"
WEIGHTS_FILE = "predictor.safetensors"
N_FEATURES = 3

if TYPE_CHECKING:
    from routoo_shared.evaluation.routing_quality import RoutingTask
    from routoo_shared.predictors.network import QualityNetwork
    from routoo_shared.predictors.training import DevScore

__all__ = ["Column", "EncoderConfig", "Predictor", "PredictorConfig", "PredictorFileError", "TrainConfig", "prompt_features"]


def prompt_features(prompts: list[str]) -> np.ndarray:
    """Cheap signals of difficulty the sentence vector blurs: length and how numeric the text is."""
    tokens = np.array([count_tokens(p) for p in prompts], dtype=np.float32)  # tiktoken's batch call starts a thread pool a call
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
    """Which prompt encoder the predictor reads: MiniLM (``minilm``), a bundled static encoder distilled
    from it (``static``, ``name`` is its folder in ``datasets/encoders``) or the LM reader (``lm_reader``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["minilm", "static", "lm_reader"] = "minilm"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    max_length: int = Field(ge=8, le=8192)
    layers: list[Annotated[int, Field(ge=0, le=64)]] | None = None
    components: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _consistent(self) -> "EncoderConfig":
        if self.kind == "minilm" and self.max_length > 512:
            raise ValueError("MiniLM reads at most 512 tokens")
        if self.kind == "lm_reader" and (not self.layers or self.components is None):
            raise ValueError("an lm_reader encoder needs its layers and components")
        if self.kind == "static":
            from routoo_shared.predictors.static_encoder import BUNDLED_STATIC

            if not (BUNDLED_STATIC.parent / self.name / "config.json").is_file():
                raise ValueError(f"no bundled static encoder {self.name!r} in {BUNDLED_STATIC.parent}")
        return self

    def build(self):
        if self.kind == "minilm":
            from routoo_shared.predictors.encoder import PromptEncoder

            return PromptEncoder(max_length=self.max_length)
        if self.kind == "static":
            from routoo_shared.predictors.static_encoder import BUNDLED_STATIC, StaticEncoder

            return StaticEncoder(BUNDLED_STATIC.parent / self.name, self.max_length)
        from routoo_shared.predictors.lm_reader import ReaderEncoder

        return ReaderEncoder(tuple(self.layers), self.max_length, self.components)

    @classmethod
    def of(cls, encoder) -> "EncoderConfig":
        if getattr(encoder, "kind", "minilm") == "static":
            return cls(kind="static", name=encoder.name, max_length=encoder.max_length)
        if getattr(encoder, "kind", "minilm") == "lm_reader":
            return cls(kind="lm_reader", name=encoder.name, max_length=encoder.max_length,
                       layers=list(encoder.layers), components=encoder.components)
        return cls(name=encoder.name, max_length=encoder.max_length)


class Column(BaseModel):
    """One output of a general predictor: a model as measured on one dataset."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    dataset: str


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
    columns: list[Column] | None = None  # a general predictor's (model, dataset) outputs; default one a model

    @model_validator(mode="after")
    def _columns_name_models(self) -> "PredictorConfig":
        if self.columns is not None:
            pairs = [(c.model, c.dataset) for c in self.columns]
            if len(set(pairs)) != len(pairs) or {c.model for c in self.columns} != set(self.models):
                raise ValueError("columns must be unique (model, dataset) pairs that cover exactly the models")
        return self

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


def default_encoder():
    """The encoder a new predictor reads unless told otherwise: the static encoder distilled from MiniLM
    (it routed within MiniLM's confidence interval on every bundled dataset, at 1/100 of its cost)."""
    from routoo_shared.predictors.static_encoder import StaticEncoder

    return StaticEncoder()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


class Predictor:
    """An ensemble of quality networks over fixed columns, with a temperature for calibration.

    ``members`` are the networks' weights (numpy, by their state-dict names; ``networks`` gives
    them as torch modules for training). ``models`` may repeat a name when ``column_datasets``
    gives each column's dataset (a general predictor); ``Predictor.models`` lists each model once.
    """

    def __init__(
        self,
        members: list[Member],
        models: list[str],
        config: TrainConfig,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        encoder=None,
        temperature: float = 1.0,
        categories: list[str] | None = None,
        column_datasets: list[str] | None = None,
    ):
        self.members = list(members)
        self.column_models = list(models)
        self.column_datasets = list(column_datasets) if column_datasets is not None else [""] * len(models)
        if len(self.column_datasets) != len(self.column_models):
            raise ValueError(f"{len(self.column_datasets)} column datasets for {len(self.column_models)} columns")
        self.config = config
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        self.encoder = encoder or default_encoder()
        self.temperature = temperature
        self.categories = list(categories or [])
        self._resolved: dict[str, str | None] = {}  # name -> known name, per routing call otherwise

    @property
    def models(self) -> list[str]:
        """Every model the predictor knows, once each, in column order."""
        return list(dict.fromkeys(self.column_models))

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(self.column_datasets))

    @property
    def name(self) -> str:
        """Which predictor this is, for decision records: the encoder it reads."""
        return f"routoo-head/{self.encoder.name}"

    def _column_dataset(self) -> np.ndarray:
        datasets = self.datasets
        return np.array([datasets.index(d) for d in self.column_datasets], dtype=np.int64)

    def _category_dataset(self) -> np.ndarray:
        """Each category's dataset: the one whose columns hold its labels (``measured``)."""
        measured = self.members[0]["measured"]  # columns x categories
        column_dataset = self._column_dataset()
        counts = np.stack([measured[column_dataset == d].sum(0) for d in range(len(self.datasets))])
        return counts.argmax(axis=0)

    @cached_property
    def _layout(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(column -> dataset index, category -> dataset index), computed once (``add_model`` resets it)."""
        return self._column_dataset(), self._category_dataset() if self.categories and len(self.datasets) > 1 else None

    # ----- inputs
    def inputs(self, prompts: list[str], dataset: bool = False) -> np.ndarray:
        """Encoder vectors plus prompt features (float32); ``dataset`` prompts show progress and are cached on disk."""
        vectors = self.encoder.encode(prompts, progress=dataset, persist=dataset)
        features = (prompt_features(prompts) - self.feature_mean) / self.feature_std
        return np.concatenate([vectors, features], axis=1).astype(np.float32)

    def column_probabilities(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities, inputs x columns, and p(category | prompt)."""
        logits, categories = ensemble(self.members, x, self._layout[0])
        return _sigmoid(logits / self.temperature), categories

    def predict(self, prompts: list[str], models: list[str] | None = None) -> np.ndarray:
        """Calibrated probabilities, prompts x models (``models`` defaults to all known, in order;
        any name the model registry resolves is accepted, e.g. ``gpt-4o-mini``).

        Raises ValueError for no prompts and KeyError for a model the predictor does not know. A
        corrupt weight shows as NaN in its model's column; it is returned as is, never hidden.
        """
        if not prompts:
            raise ValueError("predict needs at least one prompt")
        names = self.resolve_all(models) if models is not None else self.models
        probabilities, categories = self.column_probabilities(self.inputs(prompts))
        return self.read_models(probabilities, categories, names)

    def read_models(self, probabilities: np.ndarray, categories: np.ndarray, names: list[str]) -> np.ndarray:
        """Prompts x ``names`` from column probabilities: each model read over the datasets every one of
        ``names`` was measured on (its own datasets where they share none), weighted by p(dataset | prompt)."""
        if len(self.datasets) == 1:
            index = {model: j for j, model in enumerate(self.column_models)}
            return probabilities[:, [index[name] for name in names]]
        own = {name: {d for m, d in zip(self.column_models, self.column_datasets) if m == name} for name in names}
        shared = set.intersection(*own.values())
        if categories.shape[1]:
            category_dataset = self._layout[1]
            mass = {d: categories[:, category_dataset == k].sum(1) for k, d in enumerate(self.datasets)}
        else:
            mass = {d: np.ones(len(probabilities)) for d in self.datasets}
        column = {(m, d): j for j, (m, d) in enumerate(zip(self.column_models, self.column_datasets))}
        out = np.empty((len(probabilities), len(names)))
        for j, name in enumerate(names):
            datasets = sorted(shared or own[name])
            weights = np.stack([mass[d] for d in datasets], axis=1) + 1e-9
            weights /= weights.sum(axis=1, keepdims=True)
            out[:, j] = (weights * probabilities[:, [column[name, d] for d in datasets]]).sum(axis=1)
        return out

    def predict_categories(self, prompts: list[str]) -> np.ndarray:
        """p(category | prompt), prompts x ``categories`` (the ensemble's mean); empty without categories."""
        return self.column_probabilities(self.inputs(prompts))[1]

    def resolve_all(self, models: list[str]) -> list[str]:
        """The known names of ``models`` (through the model registry); KeyError naming the unknown ones."""
        if any(m not in self._resolved for m in models):
            known = self.models
            self._resolved.update({m: resolve(m, known) for m in models})
        resolved = [self._resolved[m] for m in models]
        unknown = [m for m, r in zip(models, resolved) if r is None]
        if unknown:
            raise KeyError(
                f"the predictor has no embedding for model(s) {unknown}; it knows {self.models}. "
                f"Learn one with Predictor.add_model(name, prompts, correct)"
            )
        return resolved

    def columns(self, models: list[str] | None) -> list[int]:
        """Indices of ``models`` in ``models`` (all when None); KeyError for unknown ones."""
        known = self.models
        return list(range(len(known))) if models is None else [known.index(m) for m in self.resolve_all(models)]

    # ----- torch, for training
    @property
    def networks(self) -> list["QualityNetwork"]:
        """The members as torch modules (for training and adding a model; routing never builds them)."""
        import torch

        from routoo_shared.predictors.network import QualityNetwork

        networks = []
        for member in self.members:
            network = QualityNetwork(
                len(self.column_models), member["tower.1.weight"].shape[1], len(self.categories), self.config,
                self._column_dataset().tolist(),
            )
            network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in member.items()})
            networks.append(network.eval())
        return networks

    @staticmethod
    def member_of(network: "QualityNetwork") -> Member:
        return {name: value.detach().numpy().astype(np.float32) for name, value in network.state_dict().items()}

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
        column_datasets: list[str] | None = None,
    ) -> "Predictor":
        """Fit on a questions x columns matrix of scores in [0, 1] (NaN = unobserved).

        ``categories`` (one label a training prompt, None where unknown) trains the category
        classifier and offsets; without them the head has neither. ``column_datasets`` (one a
        column) makes a general predictor: ``models`` may then repeat a model, once a dataset, each
        dataset with its own difficulty. ``dev_task`` (a ``RoutingTask`` on the dev prompts
        ``dev_rows``, default all) lets ``config.early_stopping`` and ``config.temperature_by``
        follow dev routing quality (AIQ); otherwise both use dev log-loss.
        Raises ValueError on empty or misshaped inputs.
        """
        import torch

        from routoo_shared.predictors.training import DevScore, train_member

        config = config or TrainConfig()
        if not prompts or not dev_prompts:
            raise ValueError("training needs training prompts and dev prompts (for early stopping and calibration)")
        if correct.shape != (len(prompts), len(models)):
            raise ValueError(f"correct has shape {correct.shape}, expected {(len(prompts), len(models))}")
        if categories is not None and len(categories) != len(prompts):
            raise ValueError(f"{len(categories)} categories for {len(prompts)} prompts")
        pairs = list(zip(models, column_datasets or [""] * len(models)))
        if len(set(pairs)) != len(pairs):
            raise ValueError("each (model, dataset) column must appear once")
        names = sorted({c for c in categories or [] if c}) if config.categories else []
        torch.manual_seed(config.seed)
        features = prompt_features(prompts)
        predictor = cls(
            [], models, config, features.mean(0), features.std(0) + 1e-6, encoder, categories=names,
            column_datasets=column_datasets,
        )
        x, y = torch.from_numpy(predictor.inputs(prompts, dataset=True)), torch.from_numpy(correct.astype(np.float32))
        index = {c: i for i, c in enumerate(names)}
        category = torch.tensor([index.get(c, -1) for c in (categories or [None] * len(prompts))])
        x_dev = torch.from_numpy(predictor.inputs(dev_prompts, dataset=True))
        y_dev = torch.from_numpy(dev_correct.astype(np.float32))
        rows = np.arange(len(dev_prompts)) if dev_rows is None else dev_rows
        stopping = DevScore(y_dev, dev_task, rows, config.early_stopping)
        for member in range(config.ensemble):
            network = train_member(
                x, y, category, len(names), x_dev, stopping, config,
                desc=f"training predictor {member + 1}/{config.ensemble}", column_dataset=predictor._column_dataset().tolist(),
            )
            predictor.members.append(cls.member_of(network))
        predictor.temperature = predictor._fit_temperature(x_dev.numpy(), DevScore(y_dev, dev_task, rows, config.temperature_by))
        return predictor

    def _fit_temperature(self, x_dev: np.ndarray, score: DevScore) -> float:
        import torch

        logits = torch.from_numpy(ensemble(self.members, x_dev, self._column_dataset())[0])
        grid = np.exp(np.linspace(np.log(0.5), np.log(2.0), 13 if score.by_aiq else 61))
        losses = [score(logits / t) for t in grid]
        return float(grid[int(np.argmin(losses))])

    def add_model(self, name: str, prompts: list[str], correct: np.ndarray, epochs: int = 200) -> None:
        """Learn a new model's (bias, slope, category offsets, embedding) from labelled prompts, starting
        at the known column whose predictions fit them best; the rest stays frozen.

        ``correct``: one score a prompt in [0, 1] (0/1 correctness, or a soft score such as a
        judge's probability). Raises ValueError for a known name, too few prompts, or scores that
        are not finite values in [0, 1].
        """
        import torch

        from routoo_shared.predictors.training import learn_new_model

        if resolve(name, self.models) is not None:
            raise ValueError(f"model {name!r} is already known to the predictor")
        correct = np.asarray(correct, dtype=np.float32)
        if correct.ndim != 1 or len(prompts) != len(correct) or len(prompts) < 20:
            raise ValueError("add_model needs one score a prompt and at least 20 prompts (a few hundred is better)")
        if not (np.isfinite(correct).all() and (correct >= 0).all() and (correct <= 1).all()):
            raise ValueError("add_model scores must be finite values in [0, 1]")
        torch.manual_seed(self.config.seed)
        inputs = self.inputs(prompts)
        split = max(1, len(prompts) // 5)
        known = np.clip(self.column_probabilities(inputs[split:])[0], 1e-4, 1 - 1e-4)
        fit = correct[split:, None]
        like = int(np.nanargmin(-(fit * np.log(known) + (1 - fit) * np.log(1 - known)).mean(0)))
        config = self.config.model_copy(update={"epochs": epochs, "batch_size": 64, "lr": 1e-2, "patience": 20})
        x, y = torch.from_numpy(inputs), torch.from_numpy(correct)[:, None]
        networks = self.networks
        for network in networks:
            learn_new_model(network, x, y, split, config, like)
        self.members = [self.member_of(network) for network in networks]
        self.column_models.append(name)
        self.column_datasets.append(self.column_datasets[like])
        self.__dict__.pop("_layout", None)
        self._resolved.clear()

    def report(self, prompts: list[str], correct: np.ndarray) -> dict[str, dict[str, float]]:
        """Per-model log-loss, AUC, Brier and ECE of the calibrated probabilities."""
        from routoo_shared.evaluation.metrics import per_model_report

        return per_model_report(self.predict(prompts), correct, self.models)

    # ----- persistence
    def save(self, directory: str | Path) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"{k}.{name}": np.ascontiguousarray(value) for k, member in enumerate(self.members) for name, value in member.items()}
        save_file(tensors, str(directory / WEIGHTS_FILE))
        general = self.datasets != [""]
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
            in_dim=int(self.members[0]["tower.1.weight"].shape[1]),
            columns=[Column(model=m, dataset=d) for m, d in zip(self.column_models, self.column_datasets)] if general else None,
        )
        (directory / CONFIG_FILE).write_text(config.model_dump_json(indent=1, exclude_none=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        """Read a saved predictor. Raises PredictorFileError, naming the file and the field, for a
        missing file, unreadable JSON or weights, any invalid value (NaN, infinity, wrong type or
        length, out-of-range number), or weights that do not match the config."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

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
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise PredictorFileError(f"corrupt predictor weights {weights_path}: {error}") from error
        members = {name.split(".", 1)[0] for name in tensors}
        if members != {str(k) for k in range(config.train_config.ensemble)}:
            raise PredictorFileError(
                f"predictor weights {weights_path} hold members {sorted(members)}, but train_config.ensemble "
                f"is {config.train_config.ensemble}"
            )
        columns = config.columns or [Column(model=m, dataset="") for m in config.models]
        shapes = _weight_shapes(len(columns), len({c.dataset for c in columns}), len(config.categories), config)
        loaded = []
        for k in range(config.train_config.ensemble):
            prefix = f"{k}."
            member = {name[len(prefix):]: t.astype(np.float32) for name, t in tensors.items() if name.startswith(prefix)}
            member.setdefault("measured", np.ones(shapes["measured"], dtype=np.float32))  # files before it: all measured
            found = {name: tuple(t.shape) for name, t in member.items()}
            if found != shapes:
                wrong = sorted(set(found) ^ set(shapes)) or [n for n in shapes if found[n] != shapes[n]]
                raise PredictorFileError(
                    f"predictor weights {weights_path} do not match its config ({len(config.models)} models, "
                    f"{len(config.categories)} categories, in_dim {config.in_dim}): {wrong[0]} is "
                    f"{found.get(wrong[0])}, expected {shapes.get(wrong[0])}"
                )
            loaded.append(member)
        return cls(
            loaded, [c.model for c in columns], config.train_config, np.array(config.feature_mean),
            np.array(config.feature_std), encoder, config.temperature, config.categories, [c.dataset for c in columns],
        )


def _weight_shapes(n_columns: int, n_datasets: int, n_categories: int, config: PredictorConfig) -> dict[str, tuple]:
    """Every tensor of one ensemble member and its shape, as ``QualityNetwork`` saves them."""
    hidden, dim, in_dim = config.train_config.hidden, config.train_config.dim, config.in_dim
    shapes = {
        "tower.1.weight": (hidden, in_dim), "tower.1.bias": (hidden,), "tower.4.weight": (dim, hidden), "tower.4.bias": (dim,),
        "difficulty.weight": (n_datasets, dim), "difficulty.bias": (n_datasets,), "bias": (n_columns,),
        "slope": (n_columns,), "offsets": (n_columns, n_categories), "embedding": (n_columns, dim),
        "measured": (n_columns, n_categories),
    }
    if n_categories:
        shapes |= {"classifier.weight": (n_categories, in_dim), "classifier.bias": (n_categories,)}
    return shapes
