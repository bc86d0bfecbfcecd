"""Routing datasets: prompts with per-model scores, and the pool's price sheet.

A dataset is two files (the format is documented in the README, "Data format"):

- ``questions.jsonl(.gz)``: one JSON object a line, a prompt (text, a list of chat messages, or a
  multiple-choice ``question`` with ``options``), an optional reference ``answer``, and ``results``:
  for each model that answered, a ``score`` in [0, 1] (0/1 correctness is the special case; the
  bundled files' ``correct`` is read as ``score``), its output tokens and, optionally, its latency.
- ``models.json``: the pool, one ``ModelSpec`` a model plus documentation fields.

Every file is validated where it is read: unknown keys, out-of-range scores, results naming
models the sheet does not list and models with no labels are ``DatasetError``s that name the
file, the line and the field.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.routing.models_file import DatasetError, describe_error
from routoo_shared.routing.pool import ModelPool

SPLITS = ("train", "dev", "test")
Split = Literal["train", "dev", "test"]
MIN_TRAIN_ROWS = 24  # below this a predictor learns nothing a per-model mean would not
MIN_DEV_ROWS = 4  # early stopping and the temperature need some held-out rows


class Message(BaseModel):
    """One chat turn, OpenAI style; ``content`` is text or a list of content blocks."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]]


class ModelResult(BaseModel):
    """One model's graded answer to one prompt."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0, le=1, allow_inf_nan=False, description="answer quality in [0, 1]; 1 = correct")
    output_tokens: int | None = Field(default=None, ge=0)
    latency_s: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="seconds to the full answer")
    answer: str | None = Field(default=None, description="the model's extracted final answer (what was graded)")

    @property
    def correct(self) -> float:
        """The score under its historic name (``Outcomes.correct`` and cascades read it so)."""
        return self.score

    @model_validator(mode="before")
    @classmethod
    def _read_correct(cls, data: Any) -> Any:
        """The bundled files (and older ones) say ``correct``: 0/1 correctness is a score."""
        if isinstance(data, dict) and "correct" in data:
            if "score" in data:
                raise ValueError("give either 'score' or 'correct', not both")
            data = {("score" if key == "correct" else key): value for key, value in data.items()}
        return data


class Question(BaseModel):
    """One prompt and the scores of the models that answered it.

    ``prompt`` is the text the predictor reads; a row given as ``messages`` gets their routing
    text (``routoo_shared.routing.messages.routing_text``), a multiple-choice row its lettered layout.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    prompt: str = ""
    messages: list[Message] | None = Field(default=None, min_length=1)
    question: str | None = None
    options: list[str] | None = None
    answer: str | None = Field(default=None, description="the reference answer, for grading")
    category: str | None = None
    subject: str | None = None
    source: str | None = None
    results: dict[str, ModelResult] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _derive_prompt(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("prompt"), list):  # a conversation given under "prompt"
            if data.get("messages"):
                raise ValueError("give the conversation as 'prompt' or as 'messages', not both")
            data["messages"] = data.pop("prompt")
        if not data.get("prompt") and isinstance(data.get("messages"), list):
            from routoo_shared.routing.messages import routing_text

            data["prompt"] = routing_text(data["messages"])
        elif not data.get("prompt") and data.get("question"):
            data["prompt"] = prompt_text(data["question"], data.get("options"))
        return data

    @model_validator(mode="after")
    def _check_prompt(self) -> "Question":
        if not self.prompt.strip() and not self.messages:
            raise ValueError("the row has no prompt: give 'prompt' (text or messages) or 'question'")
        if self.category is None:
            self.category = self.subject
        return self

    @field_validator("results")
    @classmethod
    def _named_models(cls, results: dict[str, ModelResult]) -> dict[str, ModelResult]:
        if any(not name for name in results):
            raise ValueError("a result has an empty model name")
        return results

    def conversation(self) -> list[dict[str, Any]]:
        """The prompt as chat messages to send to a model."""
        if self.messages:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt}]


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


# ----- reading and writing, with errors that name the problem

_KNOWN_FIELDS = sorted({*Question.model_fields, *ModelResult.model_fields, "correct", *Message.model_fields})


def describe(error: ValidationError) -> str:
    """A row's pydantic error as short text, with a guess for a misspelt key."""
    return describe_error(error, _KNOWN_FIELDS)



def _open(path: Path, mode: str = "rt"):
    return gzip.open(path, mode, encoding="utf-8") if path.suffix == ".gz" else open(path, mode, encoding="utf-8")


def read_questions(path: str | Path) -> list[Question]:
    """Every row of a ``questions.jsonl(.gz)`` file, validated (unique ids, known fields)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"questions file not found: {path}")
    questions, seen = [], set()
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    question = Question.model_validate(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DatasetError(f"{path} line {number}: not JSON ({error.msg})") from None
                except ValidationError as error:
                    raise DatasetError(f"{path} line {number}: {describe(error)}") from None
                if question.id in seen:
                    raise DatasetError(f"{path} line {number}: id {question.id!r} appears twice")
                seen.add(question.id)
                questions.append(question)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    if not questions:
        raise DatasetError(f"no questions in {path}")
    return questions


def load_questions(path: str | Path, split: Split | None = None) -> list[Question]:
    """Read a ``questions.jsonl(.gz)`` file, optionally keeping one split."""
    questions = read_questions(path)
    if split is not None:
        questions = [q for q in questions if split_of(q.id) == split]
        if not questions:
            raise DatasetError(f"no questions in {path} for split {split!r}")
    return questions


def write_questions(questions: list[Question], path: str | Path) -> None:
    """Write rows in the documented format (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wt") as handle:
        for question in questions:
            handle.write(question.model_dump_json(exclude_none=True) + "\n")


def bundled(dataset: str, name: str = "questions.jsonl.gz") -> Path:
    """Path of a file of a bundled dataset (one of ``BUNDLED_DATASETS``)."""
    path = BUNDLED_DIR / dataset / name
    if not path.exists():
        known = sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "models.json").exists())
        raise DatasetError(f"no bundled dataset {dataset!r} with a file {name!r}; bundled datasets: {known}")
    return path


# ----- checks before training or evaluating


def check_results(
    questions: list[Question], sheet_names: list[str], source: str = "the questions", sheet: str = "models.json"
) -> None:
    """Every model named in ``results`` must be listed in ``models.json`` (described as ``sheet``)."""
    unknown: dict[str, int] = {}
    for question in questions:
        for name in question.results:
            if name not in sheet_names:
                unknown[name] = unknown.get(name, 0) + 1
    if unknown:
        listed = ", ".join(f"{name!r} ({count} rows)" for name, count in sorted(unknown.items()))
        raise DatasetError(
            f"{source} have results for model(s) not in {sheet}: {listed}; "
            f"add them to models.json or remove their results"
        )


def check_trainable(fit: list[Question], dev: list[Question], pool: ModelPool) -> None:
    """Enough rows to train, and labels for every pool model that has no declared prior."""
    if len(fit) < MIN_TRAIN_ROWS or len(dev) < MIN_DEV_ROWS:
        raise DatasetError(
            f"too few rows to train: {len(fit)} training and {len(dev)} dev questions; "
            f"need at least {MIN_TRAIN_ROWS} and {MIN_DEV_ROWS} (label more prompts with 'routoo label')"
        )
    labelled = {name for q in fit for name in q.results}
    missing = [m.name for m in pool.models if m.name not in labelled and not m.has_prior]
    if missing:
        raise DatasetError(
            f"model(s) {missing} are in models.json but have no labels in the training questions; "
            f"label them ('routoo label'), declare a prior (prior_quality or prior_like), or leave them out of --pool"
        )


class Outcomes(BaseModel, arbitrary_types_allowed=True):
    """Questions x models arrays: scores in [0, 1] (NaN where no run was recorded) and output tokens.

    ``correct`` keeps its historic name; it holds soft scores, of which 0/1 correctness is a case.
    """

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
                    correct[i, j] = result.score
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


