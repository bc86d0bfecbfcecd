"""The general predictor: one network trained on every bundled dataset at once.

Each dataset grades its own way (MMLU-Pro's 10 options, a judge's 1-10 grade, LLMRouter's soft
scores), so a model's level on one says little about its level on another. The network therefore
has one column a (model, dataset) with labels, one difficulty a dataset, and categories named
``dataset:category`` (a dataset without categories is one); the prompt tower and the category
classifier are shared. The loss is masked where a column has no label. ``Predictor.predict`` reads
a model over the datasets every requested model was measured on, weighted by p(dataset | prompt).

Rows whose prompt text also appears in any dataset's test split are left out of training and
early stopping (GSM8K is in three of the datasets, under different ids): no dataset's test
questions are ever learnt through another.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from routoo_shared.data.formats import Question, load_questions, split_of
from routoo_shared.datasets import BUNDLED_DATASETS, BUNDLED_DIR
from routoo_shared.predictors.predictor import Predictor, TrainConfig
from routoo_shared.routing.known_models import canonical


def text_key(prompt: str) -> str:
    """What two copies of one question share whatever their layout (case, spacing, punctuation)."""
    return re.sub(r"\W+", " ", prompt.lower()).strip()[:300]


def bundled_questions(datasets: tuple[str, ...] | list[str] = BUNDLED_DATASETS) -> dict[str, list[Question]]:
    """Every bundled dataset's rows, results under the registry's model names."""
    out = {}
    for name in datasets:
        rows = load_questions(BUNDLED_DIR / name / "questions.jsonl.gz")
        out[name] = [q.model_copy(update={"results": {canonical(m): r for m, r in q.results.items()}}) for q in rows]
    return out


def without_test_texts(by_dataset: dict[str, list[Question]], held: set[str]) -> dict[str, list[Question]]:
    """Each dataset's rows whose prompt is not one of ``held`` (text keys of rows kept for testing)."""
    return {name: [q for q in rows if text_key(q.prompt) not in held] for name, rows in by_dataset.items()}


def test_texts(by_dataset: dict[str, list[Question]]) -> set[str]:
    return {text_key(q.prompt) for rows in by_dataset.values() for q in rows if split_of(q.id) == "test"}


class GeneralRows:
    """Rows of several datasets as one questions x (model, dataset) matrix with dataset-named categories."""

    def __init__(self, by_dataset: dict[str, list[Question]], columns: list[tuple[str, str]] | None = None):
        self.rows = [(name, q) for name, rows in by_dataset.items() for q in rows]
        found = list(dict.fromkeys((m, name) for name, q in self.rows for m in q.results))
        self.columns = columns if columns is not None else found
        index = {column: j for j, column in enumerate(self.columns)}
        self.correct = np.full((len(self.rows), len(self.columns)), np.nan, dtype=np.float32)
        for i, (name, q) in enumerate(self.rows):
            for model, result in q.results.items():
                if (model, name) in index:
                    self.correct[i, index[model, name]] = result.score
        self.prompts = [q.prompt for _, q in self.rows]
        self.categories = [f"{name}:{q.category or name}" for name, q in self.rows]

    def label_counts(self) -> dict[str, dict[str, int]]:
        """model -> dataset -> labels."""
        counts: dict[str, Counter] = {}
        for j, (model, name) in enumerate(self.columns):
            counts.setdefault(model, Counter())[name] += int(np.isfinite(self.correct[:, j]).sum())
        return {model: dict(c) for model, c in counts.items()}


def train_general(
    fit: dict[str, list[Question]], dev: dict[str, list[Question]], config: TrainConfig | None = None, encoder=None
) -> tuple[Predictor, GeneralRows]:
    """The general predictor on ``fit`` (early stopping and temperature on ``dev``), and its training rows."""
    rows = GeneralRows(fit)
    held = GeneralRows(dev, rows.columns)
    predictor = Predictor.train(
        rows.prompts, rows.correct, [m for m, _ in rows.columns], held.prompts, held.correct, config, encoder,
        categories=rows.categories, column_datasets=[d for _, d in rows.columns],
    )
    return predictor, rows
