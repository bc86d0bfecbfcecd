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

import base64
import io
import json
import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

from routoo_shared.routing.tokens import Tokenizer, encoding, token_ids

TEXT_PART_TYPES = {"text", "input_text", "output_text"}
IMAGE_PART_TYPES = {"image", "image_url", "input_image"}
USER_ROLES = {"user", "human"}
PER_MESSAGE_TOKENS = 4  # role and separators, as chat formats add them (OpenAI: 3 and the role)
REPLY_PRIMING_TOKENS = 3  # OpenAI primes every reply with <|start|>assistant<|message|>
OPENAI_TOOLS = {"function": 7, "gpt-4-function": 10, "properties": 3, "property": 3, "enum": -3, "enum_item": 3, "end": 12}
ANTHROPIC_TOOL_SYSTEM_TOKENS = 346  # the system prompt Anthropic adds when tools are offered
TOOL_CALL_TOKENS = 3  # a tool call's framing in the history, besides its name and arguments
IMAGE_TOKENS_BOUND = 1600  # an image of unknown size: OpenAI high detail is at most 1,445, Anthropic ~1,600
TOOL_CALL_TYPES = {"tool_use", "tool_call", "function_call"}
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


def prompt_tokens(prompt_or_messages: Any, tokenizer: Tokenizer, tools: Sequence[Any] | None = None) -> int:
    """Prompt tokens a provider bills for a call: every message's text and content parts, tool calls
    and tool results in the history, images, the chat template's per-message overhead, and the tool
    schemas offered (OpenAI-style ``{"type": "function", "function": {...}}`` dicts or bare function
    dicts with ``parameters`` or ``input_schema``).

    OpenAI models follow OpenAI's published counting rule (messages, tools); the others count
    cl100k_base tokens of the same text and JSON schemas, times ``tokenizer.margin``, plus Anthropic's
    tool-use system prompt. Images count by the provider's rule when their size can be read (inline
    base64), else ``IMAGE_TOKENS_BOUND``. Raises ``ValueError`` for an empty prompt (``to_turns``).
    """
    to_turns(prompt_or_messages)  # the same "empty prompt" error as routing
    messages = _messages(prompt_or_messages)
    functions = [_function(tool) for tool in tools or ()]
    openai = tokenizer.family == "openai"
    text = images = 0
    for message in messages:
        role, texts, pictures = _pieces(message)
        text += sum(tokenizer.count(t) for t in texts) + PER_MESSAGE_TOKENS
        images += sum(_image_tokens(picture, tokenizer.family) for picture in pictures)
    if openai:
        tool_tokens = _openai_tool_tokens(functions, tokenizer) if functions else 0
        return text + images + REPLY_PRIMING_TOKENS + tool_tokens
    tool_tokens = tokenizer.count(json.dumps(functions)) if functions else 0
    system = ANTHROPIC_TOOL_SYSTEM_TOKENS if functions and tokenizer.family == "anthropic" else 0
    return tokenizer.scaled(text + tool_tokens) + images + system


def _messages(prompt_or_messages: Any) -> list[Any]:
    if isinstance(prompt_or_messages, str):
        return [("user", prompt_or_messages)]
    if isinstance(prompt_or_messages, (dict, tuple)) or not isinstance(prompt_or_messages, Sequence):
        return [prompt_or_messages]
    return list(prompt_or_messages)


def _pieces(message: Any) -> tuple[str, list[str], list[Any]]:
    """(role, texts, image parts) of one message: its content's text, tool calls and tool results."""
    texts: list[str] = []
    images: list[Any] = []
    _collect(_content(message), texts, images)
    if not any(_kind(part) in TOOL_CALL_TYPES for part in _parts(_content(message))):
        for tool_call in _message_tool_calls(message):
            texts.extend(_tool_call_texts(tool_call))
    if isinstance(message, dict) and message.get("name"):
        texts.append(str(message["name"]))
    return _role(message), texts, images


def _kind(part: Any) -> str | None:
    return part.get("type") if isinstance(part, dict) else getattr(part, "block_type", None)


def _collect(content: Any, texts: list[str], images: list[Any]) -> None:
    """Texts and images of a content value: a string, a block, or a list of blocks (any framework's)."""
    if content is None:
        return
    if isinstance(content, str):
        texts.append(content)
        return
    if isinstance(content, Sequence):
        for part in content:
            _collect(part, texts, images)
        return
    kind = _kind(content)
    if kind in IMAGE_PART_TYPES:
        images.append(content)
    elif kind in TOOL_CALL_TYPES:
        texts.extend(_tool_call_texts(content))
    elif kind == "tool_result":
        _collect(content.get("content") if isinstance(content, dict) else getattr(content, "content", None), texts, images)
    elif isinstance(content, dict):
        texts.append(content.get("text") or content.get("thinking") or "")
    else:  # LlamaIndex TextBlock, ThinkingBlock and similar objects
        value = getattr(content, "text", None) or getattr(content, "content", None)
        texts.append(value if isinstance(value, str) else "")


def _message_tool_calls(message: Any) -> list[Any]:
    """Tool calls a message carries beside its content: OpenAI dicts, LangChain ``tool_calls``,
    LlamaIndex ``additional_kwargs["tool_calls"]``."""
    if isinstance(message, dict):
        return list(message.get("tool_calls") or []) + ([message["function_call"]] if message.get("function_call") else [])
    calls = getattr(message, "tool_calls", None)
    if calls:
        return list(calls)
    extra = getattr(message, "additional_kwargs", None) or {}
    return list(extra.get("tool_calls") or [])


def _tool_call_texts(tool_call: Any) -> list[str]:
    """A tool call's name and arguments (OpenAI ``function``, LangChain ``args``, Anthropic ``input``,
    LlamaIndex ``tool_name``/``tool_kwargs``), as the provider replays them."""
    get = tool_call.get if isinstance(tool_call, dict) else lambda key: getattr(tool_call, key, None)
    function = get("function")
    if function is not None:
        fget = function.get if isinstance(function, dict) else lambda key: getattr(function, key, None)
        name, arguments = fget("name"), fget("arguments")
    else:
        name = get("name") or get("tool_name")
        arguments = next((a for a in (get("arguments"), get("args"), get("input"), get("tool_kwargs")) if a is not None), "")
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return [str(name or ""), arguments, " " * TOOL_CALL_TOKENS]  # the framing counts as single spaces


def _function(tool: Any) -> dict[str, Any]:
    """The function part of a tool schema (OpenAI's ``{"type": "function", "function": ...}`` or bare)."""
    if not isinstance(tool, dict):
        raise TypeError(f"tool schemas are measured as dicts (convert tools first), got {type(tool).__name__}")
    return tool.get("function", tool)


def _openai_tool_tokens(functions: list[dict[str, Any]], tokenizer: Tokenizer) -> int:
    """OpenAI's published rule for tool definitions (the cookbook's ``num_tokens_for_tools``), with
    nested object properties counted like top-level ones."""
    costs = OPENAI_TOOLS
    start = costs["gpt-4-function"] if tokenizer.encoding_name == "cl100k_base" else costs["function"]

    def properties(schema: dict[str, Any]) -> int:
        props = schema.get("properties") or {}
        total = costs["properties"] if props else 0
        for key, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            total += costs["property"] + tokenizer.count(f"{key}:{prop.get('type', 'object')}:{_strip(prop.get('description'))}")
            if "enum" in prop:
                total += costs["enum"] + sum(costs["enum_item"] + tokenizer.count(str(item)) for item in prop["enum"])
            total += properties(prop) + properties(prop.get("items") if isinstance(prop.get("items"), dict) else {})
        return total

    tokens = costs["end"]
    for function in functions:
        schema = function.get("parameters") or function.get("input_schema") or {}
        tokens += start + tokenizer.count(f"{function.get('name', '')}:{_strip(function.get('description'))}") + properties(schema)
    return tokens


def _strip(description: Any) -> str:
    text = str(description or "")
    return text[:-1] if text.endswith(".") else text


def _image_tokens(part: Any, family: str) -> int:
    """An image's prompt tokens by its provider's rule, when its size can be read; else the bound."""
    size = _image_size(part)
    detail = _image_detail(part)
    if family == "openai" and detail == "low":
        return 85
    if size is None:
        return IMAGE_TOKENS_BOUND
    width, height = size
    if family == "openai":  # fit in 2048x2048, shortest side to 768, 170 a 512px tile plus 85
        scale = min(1.0, 2048 / max(width, height))
        width, height = width * scale, height * scale
        scale = min(1.0, 768 / min(width, height))
        return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    if family == "google":  # 258 a 768px tile; small images are one tile
        return 258 if max(width, height) <= 384 else 258 * math.ceil(width / 768) * math.ceil(height / 768)
    return min(IMAGE_TOKENS_BOUND, math.ceil(width * height / 750))  # Anthropic's rule (and the bound for others)


def _image_detail(part: Any) -> str | None:
    if isinstance(part, dict):
        url = part.get("image_url")
        return (url.get("detail") if isinstance(url, dict) else None) or part.get("detail")
    return getattr(part, "detail", None)


def _image_size(part: Any) -> tuple[int, int] | None:
    """(width, height) of an inline image (base64 data, a data URL, or LlamaIndex bytes), else None."""
    data: Any = None
    if isinstance(part, dict):
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        source = part.get("source") if isinstance(part.get("source"), dict) else {}
        data = part.get("base64") or part.get("data") or source.get("data") or url
    else:  # LlamaIndex ImageBlock: bytes, or a (data) URL
        url = getattr(part, "url", None)
        data = getattr(part, "image", None) or (str(url) if url else None)
    if isinstance(data, str):
        if data.startswith("data:"):
            data = data.partition(",")[2]
        elif data.startswith(("http://", "https://")):
            return None
    if not data:
        return None
    try:
        from PIL import Image

        raw = data if isinstance(data, bytes) else base64.b64decode(data)
        try:
            raw = base64.b64decode(raw, validate=True)  # LlamaIndex keeps images base64-encoded
        except ValueError:
            pass
        with Image.open(io.BytesIO(raw)) as image:
            return image.size
    except Exception:  # not an image we can read: the bound applies
        return None
