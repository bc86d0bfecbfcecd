"""Turn a prompt or a conversation (OpenAI dicts, LangChain or LlamaIndex messages) into routing text.

Content blocks are read for their text parts; images, audio and other parts are skipped, never
an error. A conversation is routed on its latest user turn first, then the turns before it
(most recent first), so the encoder's length limit cuts the oldest context, not the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

TEXT_PART_TYPES = {"text", "input_text", "output_text"}
IMAGE_PART_TYPES = {"image", "image_url", "input_image"}
USER_ROLES = {"user", "human"}
PER_MESSAGE_TOKENS = 4  # role and separators, as chat formats add them


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        kind = content.get("type", "text")
        return content.get("text") or "" if kind in TEXT_PART_TYPES else ""
    if isinstance(content, Sequence):
        return "\n".join(filter(None, (content_text(part) for part in content)))
    text = getattr(content, "text", None)  # LlamaIndex TextBlock and similar objects
    return text if isinstance(text, str) else ""


def _role(message: Any) -> str:
    if isinstance(message, dict):
        role = message.get("role") or message.get("type") or "user"
    elif isinstance(message, tuple):
        role = message[0]
    else:
        role = getattr(message, "role", None) or getattr(message, "type", None) or "user"
    return str(role.value if isinstance(role, Enum) else role).lower()


def _content(message: Any) -> Any:
    if isinstance(message, dict):
        return message.get("content")
    if isinstance(message, tuple):
        return message[1]
    blocks = getattr(message, "blocks", None)  # LlamaIndex keeps content as blocks
    return blocks if blocks is not None else getattr(message, "content", None)


def to_turns(prompt_or_messages: Any) -> list[tuple[str, str]]:
    """(role, text) pairs from a string, a message, or a sequence of messages."""
    if isinstance(prompt_or_messages, str):
        turns = [("user", prompt_or_messages)]
    elif isinstance(prompt_or_messages, (dict, tuple)) or not isinstance(prompt_or_messages, Sequence):
        turns = [(_role(prompt_or_messages), content_text(_content(prompt_or_messages)))]
    else:
        turns = [(_role(m), content_text(_content(m))) for m in prompt_or_messages]
    if not any(text.strip() for _, text in turns) and not has_image(prompt_or_messages):
        raise ValueError("empty prompt: the messages contain no text to route on")
    return turns


def _parts(content: Any) -> list[Any]:
    if content is None or isinstance(content, str):
        return []
    return list(content) if isinstance(content, Sequence) else [content]


def has_image(prompt_or_messages: Any) -> bool:
    """True when a message holds an image part (OpenAI/LangChain blocks or a LlamaIndex ImageBlock)."""
    if isinstance(prompt_or_messages, str):
        return False
    messages = prompt_or_messages if isinstance(prompt_or_messages, Sequence) and not isinstance(
        prompt_or_messages, (dict, tuple)) else [prompt_or_messages]
    for message in messages:
        for part in _parts(_content(message)):
            kind = part.get("type") if isinstance(part, dict) else getattr(part, "block_type", None)
            if kind in IMAGE_PART_TYPES:
                return True
    return False


def routing_text(prompt_or_messages: Any) -> str:
    """The text the predictor reads. A single turn is used as is, as in training."""
    turns = [(role, text) for role, text in to_turns(prompt_or_messages) if text.strip()]
    if not turns:  # images only: the predictor reads an empty prompt
        return ""
    if len(turns) == 1:
        return turns[0][1]
    last_user = max((i for i, (role, _) in enumerate(turns) if role in USER_ROLES), default=len(turns) - 1)
    earlier = [f"{role}: {text}" for role, text in reversed(turns[:last_user] + turns[last_user + 1 :])]
    return turns[last_user][1] + "\n\nConversation so far (most recent first):\n" + "\n".join(earlier)


def prompt_tokens(prompt_or_messages: Any, count) -> int:
    """Input tokens a model is billed for: every turn's text plus a small per-message overhead."""
    turns = to_turns(prompt_or_messages)
    if len(turns) == 1:
        return count(turns[0][1])
    return sum(count(text) + PER_MESSAGE_TOKENS for _, text in turns)
