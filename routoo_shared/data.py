"""Routing datasets: questions with per-model correctness, and the pool's price sheet.

The bundled files follow one format (``questions.jsonl.gz`` + ``models.json``); the same
``prompt_text`` turns a question into the prompt at training and at routing time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

BUNDLED_DIR = Path(__file__).resolve().parent / "datasets"
SPLITS = ("train", "dev", "test")
Split = Literal["train", "dev", "test"]


class ModelResult(BaseModel):
    correct: int
    output_tokens: int | None = None


class Question(BaseModel):
    id: str
    prompt: str
    category: str | None = None
    subject: str | None = None
    results: dict[str, ModelResult] = Field(default_factory=dict)


def prompt_text(question: str, options: list[str] | None = None) -> str:
    """The one prompt layout used for training and routing: question, lettered options, 'Answer:'."""
    if not options:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = [question] + [f"{letters[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines) + "\nAnswer:"


def split_of(question_id: str) -> Split:
    """Deterministic 70/10/20 split from a hash of the id, stable across machines and file orders."""
    bucket = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16) % 10
    if bucket < 7:
        return "train"
    return "dev" if bucket == 7 else "test"


def carve_dev(questions: list[Question]) -> tuple[list[Question], list[Question]]:
    """(fit, dev) from one file: the dev split's ids, or, for a file that holds none of them
    (a train split written by ``routoo split``), a deterministic eighth of the ids."""
    dev = [q for q in questions if split_of(q.id) == "dev"]
    if dev:
        return [q for q in questions if split_of(q.id) != "dev"], dev
    held = {q.id for q in questions if int(hashlib.sha256(f"dev:{q.id}".encode()).hexdigest()[:8], 16) % 8 == 0}
    return [q for q in questions if q.id not in held], [q for q in questions if q.id in held]


def _parse(row: dict) -> Question:
    prompt = row.get("prompt") or prompt_text(row["question"], row.get("options"))
    category = row.get("category") or row.get("subject")
    return Question(
        id=row["id"], prompt=prompt, category=category, subject=row.get("subject"), results=row["results"]
    )


def load_questions(path: str | Path, split: Split | None = None) -> list[Question]:
    """Read a ``questions.jsonl(.gz)`` file, optionally keeping one split."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"questions file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        questions = [_parse(json.loads(line)) for line in handle if line.strip()]
    if split is not None:
        questions = [q for q in questions if split_of(q.id) == split]
    if not questions:
        raise ValueError(f"no questions in {path}" + (f" for split {split!r}" if split else ""))
    return questions


def write_questions(questions: list[Question], path: str | Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for question in questions:
            handle.write(question.model_dump_json(exclude_none=True) + "\n")


def bundled(dataset: str, name: str = "questions.jsonl.gz") -> Path:
    """Path of a file of a bundled dataset (``mmlu_pro`` or ``mmlu_routellm``)."""
    path = BUNDLED_DIR / dataset / name
    if not path.exists():
        raise FileNotFoundError(f"no bundled file {name!r} for dataset {dataset!r} (looked in {path.parent})")
    return path


class Outcomes(BaseModel, arbitrary_types_allowed=True):
    """Questions x models arrays: correctness (NaN where no run was recorded) and output tokens."""

    models: list[str]
    correct: np.ndarray
    output_tokens: np.ndarray

    @classmethod
    def from_questions(cls, questions: list[Question], models: list[str]) -> "Outcomes":
        correct = np.full((len(questions), len(models)), np.nan, dtype=np.float32)
        tokens = np.zeros((len(questions), len(models)), dtype=np.float32)
        for i, question in enumerate(questions):
            for j, model in enumerate(models):
                result = question.results.get(model)
                if result is not None:
                    correct[i, j] = result.correct
                    tokens[i, j] = result.output_tokens or 0
        return cls(models=models, correct=correct, output_tokens=_impute_unrecorded(tokens))


def _impute_unrecorded(tokens: np.ndarray) -> np.ndarray:
    """Some runs stored no text (0 tokens); charge them the question's median over runs that did."""
    recorded = np.where(tokens > 0, tokens, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no recorded text at all
        per_question = np.nanmedian(recorded, axis=1)
    fallback = np.nanmedian(recorded) if np.isfinite(recorded).any() else 0.0
    per_question = np.where(np.isfinite(per_question), per_question, fallback)
    return np.where(tokens > 0, tokens, per_question[:, None]).astype(np.float32)


# The open-weight pool of the evaluation issue: every mmlu_pro model but the hosted/proprietary ones.
CLOSED_OR_EXCLUDED = ("gemini-", "c4ai-command-r", "jamba", "DeepSeek")


def pool_names(spec: str | None, available: list[str]) -> list[str]:
    """Expand a ``--pool`` value: comma-separated names, where ``open`` stands for the open-weight models."""
    if not spec:
        return list(available)
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if item == "open":
            names += [m for m in available if not m.startswith(CLOSED_OR_EXCLUDED)]
        elif item:
            names.append(item)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; the data has {available}")
    return list(dict.fromkeys(names))
