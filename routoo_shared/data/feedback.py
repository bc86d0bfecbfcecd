"""Feedback from production: how a routed answer really did, written as training rows.

Each ``FeedbackLog.record`` appends one row to a ``questions.jsonl`` file in the dataset format
(the prompt, and for the model that answered a ``score`` in [0, 1], its output tokens and
latency), so ``routoo train --train feedback.jsonl --models models.json`` refits the predictor on
real traffic, alone or concatenated with labelled data.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from routoo_shared.data.formats import ModelResult, Question, read_questions
from routoo_shared.routing.messages import to_turns

ROLES = {"human": "user", "ai": "assistant", "chatbot": "assistant", "function": "tool"}


class FeedbackLog:
    """An append-only feedback file; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(
        self,
        prompt_or_messages: Any,
        model: str,
        *,
        score: float | None = None,
        thumbs_up: bool | None = None,
        output_tokens: int | None = None,
        latency_s: float | None = None,
    ) -> Question:
        """Append the outcome of ``model``'s answer to a prompt (text or messages of any framework).

        Give ``score`` in [0, 1] or ``thumbs_up`` (1 or 0). Raises ``ValueError`` for neither or both,
        and pydantic's ``ValidationError`` for a score outside [0, 1].
        """
        if (score is None) == (thumbs_up is None):
            raise ValueError("give exactly one of score (0 to 1) or thumbs_up (True/False)")
        value = float(thumbs_up) if thumbs_up is not None else score
        turns = to_turns(prompt_or_messages)
        row: dict[str, Any] = {"id": f"feedback-{uuid.uuid4().hex[:16]}"}
        if isinstance(prompt_or_messages, str):
            row["prompt"] = prompt_or_messages
        else:
            row["messages"] = [{"role": ROLES.get(role, role if role in ("system", "user", "assistant", "tool") else "user"), "content": text} for role, text in turns]
        row["results"] = {model: ModelResult(score=value, output_tokens=output_tokens, latency_s=latency_s)}
        question = Question.model_validate(row)
        self._append(question)
        return question

    def _append(self, question: Question) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(question.model_dump_json(exclude_none=True) + "\n")

    def record_response(
        self, prompt_or_messages: Any, response: Any, *, score: float | None = None, thumbs_up: bool | None = None,
        latency_s: float | None = None,
    ) -> Question:
        """Like ``record``, reading the model that answered and its output tokens from a
        ``RoutooChatModel`` message or a ``RoutooLLM`` response."""
        metadata = getattr(response, "response_metadata", None)
        if metadata is None:  # LlamaIndex: the decision travels in additional_kwargs
            metadata = getattr(response, "additional_kwargs", None) or {}
        decision = metadata.get("routoo") if isinstance(metadata, dict) else None
        if not decision or not decision.get("answered_by"):
            raise ValueError("the response carries no Routoo decision with 'answered_by' (was it routed by Routoo?)")
        usage = getattr(response, "usage_metadata", None) or {}
        output_tokens = usage.get("output_tokens") if usage else metadata.get("completion_tokens")
        return self.record(
            prompt_or_messages, decision["answered_by"], score=score, thumbs_up=thumbs_up,
            output_tokens=output_tokens, latency_s=latency_s,
        )

    def read(self) -> list[Question]:
        """Every recorded row (``DatasetError`` if the file is missing or damaged)."""
        return read_questions(self.path)
