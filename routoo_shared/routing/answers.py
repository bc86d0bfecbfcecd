"""Final answers out of model text: extraction (a regex or a function per task) and normalisation.

A cascade compares cheap models' final answers: two answers agree when their normalised forms are
equal. Extraction turns an answer's text into its final answer (None when the text has none: that is
itself evidence, the answer's format); normalisation makes equal answers equal as strings
(``"1,000"``, ``"1000.0"`` and ``"$1000"`` -> ``"1000"``; ``"[(4,1)]"`` and ``"[(4, 1)]"`` -> one form).

Defaults by kind: ``number`` (a ``\\boxed{}`` value, "the answer is X", "#### X", else the last number),
``letter`` (a multiple-choice letter A-J), ``literal`` (a code literal: ``[ANSWER]...[/ANSWER]``, or
the last fenced or backticked snippet), tried in ``default`` order when no rule names the task.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator

Kind = Literal["number", "letter", "literal"]
Extractor = Callable[[str], "str | None"]

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_STATED = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)?\s*[:=]?\s*\**\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_LETTER = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\)?\b|\(([A-J])\)")
_TAGGED = re.compile(r"\[ANSWER\](.*?)\[/ANSWER\]", re.DOTALL)
_FENCED = re.compile(r"```(?:\w+)?\n?(.*?)```", re.DOTALL)
_TICKED = re.compile(r"`([^`\n]+)`")


class AnswerExtractionError(ValueError):
    """An extraction rule that cannot be used: a regex that does not compile or has no group."""


def extract_number(text: str) -> str | None:
    """A ``\\boxed{}`` value, "#### X", "the answer is X" (its first number), else the last number."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1]
    for pattern in (_HASHES, _STATED):
        found = pattern.findall(text)
        numbers = re.findall(_NUMBER, found[-1]) if found else []
        if numbers:
            return numbers[0]
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def extract_letter(text: str) -> str | None:
    """A multiple-choice letter: "the answer is (C)", "Answer: C", else the last "(C)"."""
    found = _LETTER.findall(text)
    if not found:
        return None
    stated, bracketed = found[-1]
    return stated or bracketed


def extract_literal(text: str) -> str | None:
    """A code literal: ``[ANSWER]...[/ANSWER]`` (the right side of an ``==`` in it), else the last
    fenced block or backticked snippet; None for prose without either."""
    for pattern in (_TAGGED, _FENCED, _TICKED):
        found = pattern.findall(text)
        if found:
            answer = found[-1].strip()
            return answer.split("==", 1)[1].strip() if "==" in answer else answer or None
    return None


DEFAULT_EXTRACTORS: dict[str, Extractor] = {"number": extract_number, "letter": extract_letter, "literal": extract_literal}


def normalize_answer(answer: str | None) -> str | None:
    """A canonical string for comparing final answers; None for no answer (blank included)."""
    if answer is None:
        return None
    text = str(answer).strip().strip("$").strip()
    text = re.sub(r"\\text\{([^{}]*)\}|\\!|\\,|\\ ", lambda m: m.group(1) or "", text).rstrip(".").strip()
    if not text:
        return None
    number = _as_number(text)
    if number is not None:
        return number
    try:
        return repr(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return re.sub(r"\s+", "", text).lower()


def _as_number(text: str) -> str | None:
    plain = text.replace(",", "").replace(" ", "")
    frac = re.fullmatch(r"\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", plain)
    if frac:
        plain = f"{frac.group(1)}/{frac.group(2)}"
    try:
        value = Fraction(plain)
    except (ValueError, ZeroDivisionError):
        return None
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class AnswerExtraction(BaseModel):
    """How final answers are read from text: ``rules`` maps a task to a regex (its first group is the
    answer) or a default kind; ``with_function(task, fn)`` adds, in memory only, a function
    ``text -> answer | None`` for a task; tasks without either use the ``default`` kinds in order
    (the first that finds an answer). At run time a prompt's task is the predictor's most likely
    category (``CascadePlan.task``). Raises ``AnswerExtractionError`` for an unusable regex."""

    rules: dict[str, str] = Field(default_factory=dict)
    default: list[Kind] = Field(default_factory=lambda: ["literal", "number", "letter"], min_length=1)
    _functions: dict[str, Extractor] = PrivateAttr(default_factory=dict)

    @field_validator("rules")
    @classmethod
    def _compiles(cls, rules: dict[str, str]) -> dict[str, str]:
        for task, rule in rules.items():
            if rule in DEFAULT_EXTRACTORS:
                continue
            try:
                compiled = re.compile(rule)
            except re.error as error:
                raise AnswerExtractionError(f"answer rule for task {task!r} is not a regex: {error}") from error
            if compiled.groups < 1:
                raise AnswerExtractionError(f"answer rule for task {task!r} needs a group around the answer: {rule!r}")
        return rules

    def with_function(self, task: str, function: Extractor) -> "AnswerExtraction":
        copy = self.model_copy(deep=True)
        copy._functions = {**self._functions, task: function}
        return copy

    def extract(self, text: str, task: str | None = None) -> str | None:
        """The normalised final answer of ``text`` for ``task`` (None: it has none)."""
        if task in self._functions:
            return normalize_answer(self._functions[task](text))
        rule = self.rules.get(task) if task is not None else None
        if rule is not None and rule not in DEFAULT_EXTRACTORS:
            found = re.findall(rule, text)
            last = found[-1] if found else None
            return normalize_answer(last[0] if isinstance(last, tuple) else last)
        kinds = [rule] if rule is not None else self.default
        for kind in kinds:
            answer = normalize_answer(DEFAULT_EXTRACTORS[kind](text))
            if answer is not None:
                return answer
        return None
