"""Turn a prompt or a conversation (OpenAI dicts, LangChain or LlamaIndex messages) into routing text.

Content blocks are read for their text parts; images, audio and other parts are skipped, never
an error (a message with only an image routes on an empty text). The encoder reads 256 tokens, so
the routing text puts first what decides the answer: a conversation's latest user turn, then the
turns before it (most recent first); and a text longer than the encoder reads keeps its start
(where an instruction usually sits) and its end (where a RAG prompt asks its question), instead of
the first 256 tokens only. On the 191 long MMLU-Pro dev prompts (read whole in training) this
costs the bundled predictor 0.011 log-loss (0.523 -> 0.534, AUC 0.730 -> 0.727); 96 + 96 tokens
was the best of the cuts tried that always fits the encoder's 256 word pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from routoo_shared.routing.tokens import encoding, token_ids

TEXT_PART_TYPES = {"text", "input_text", "output_text"}
IMAGE_PART_TYPES = {"image", "image_url", "input_image"}
USER_ROLES = {"user", "human"}
PER_MESSAGE_TOKENS = 4  # role and separators, as chat formats add them
LONG_TEXT_TOKENS = 256  # texts up to this length (tiktoken) are read whole, as in training
HEAD_TOKENS, TAIL_TOKENS = 96, 96  # what a longer text keeps: its start and its end
ELISION = "\n[...]\n"


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


def _parts(content: Any) -> list[Any]:
    if content is None or isinstance(content, str):
        return []
    return list(content) if isinstance(content, Sequence) else [content]


def _is_text_part(part: Any) -> bool:
    if isinstance(part, dict):
        return part.get("type", "text") in TEXT_PART_TYPES
    return isinstance(getattr(part, "text", None), str)  # LlamaIndex TextBlock and similar objects


def to_turns(prompt_or_messages: Any) -> list[tuple[str, str]]:
    """(role, text) pairs from a string, a message, or a sequence of messages.

    Raises ``ValueError`` ("empty prompt") when there is nothing at all: no text and no other part
    (a message with only an image, audio or a file routes on an empty text).
    """
    if isinstance(prompt_or_messages, str):
        messages = [("user", prompt_or_messages)]
    elif isinstance(prompt_or_messages, (dict, tuple)) or not isinstance(prompt_or_messages, Sequence):
        messages = [(_role(prompt_or_messages), _content(prompt_or_messages))]
    else:
        messages = [(_role(m), _content(m)) for m in prompt_or_messages]
    turns = [(role, content_text(content)) for role, content in messages]
    media = any(not _is_text_part(part) for _, content in messages for part in _parts(content))
    if not any(text.strip() for _, text in turns) and not media:
        raise ValueError("empty prompt: the messages contain no text or other content to route on")
    return turns


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


def focus(text: str) -> str:
    """A text the encoder can read whole: unchanged up to ``LONG_TEXT_TOKENS`` tokens, else its first
    ``HEAD_TOKENS`` and last ``TAIL_TOKENS``, so different questions after one long context differ."""
    ids = token_ids(text)
    if len(ids) <= LONG_TEXT_TOKENS:
        return text
    decode = encoding().decode
    return decode(ids[:HEAD_TOKENS]).strip() + ELISION + decode(ids[-TAIL_TOKENS:]).strip()


def routing_text(prompt_or_messages: Any) -> str:
    """The text the predictor reads: a single turn as is (as in training) when short; the latest user
    turn first otherwise, each long text cut by ``focus``. Empty for a message with only media."""
    turns = [(role, text) for role, text in to_turns(prompt_or_messages) if text.strip()]
    if not turns:  # media only: the predictor reads an empty prompt
        return ""
    if len(turns) == 1:
        return focus(turns[0][1])
    last_user = max((i for i, (role, _) in enumerate(turns) if role in USER_ROLES), default=len(turns) - 1)
    earlier = [f"{role}: {focus(text)}" for role, text in reversed(turns[:last_user] + turns[last_user + 1 :])]
    return focus(turns[last_user][1]) + "\n\nConversation so far (most recent first):\n" + "\n".join(earlier)


def prompt_tokens(prompt_or_messages: Any, count) -> int:
    """Input tokens a model is billed for: every turn's text plus a small per-message overhead."""
    turns = to_turns(prompt_or_messages)
    if len(turns) == 1:
        return count(turns[0][1])
    return sum(count(text) + PER_MESSAGE_TOKENS for _, text in turns)
