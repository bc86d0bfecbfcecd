"""OpenAI chat-completions shapes in and out: the request model, LangChain messages, responses, chunks.

The request model forbids unknown fields and non-finite numbers, so a typo or a NaN is a 400 naming
the field; OpenAI fields Routoo does not support are refused with the reason (``UNSUPPORTED``), never
silently dropped. Messages become LangChain messages with ``convert_to_messages`` and answers become
OpenAI messages with ``convert_to_openai_messages``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages, convert_to_openai_messages
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from routoo_shared.server.config import RoutingSettings

UNION_MEMBER = re.compile(r"^(str|int|float|bool|dict|list|none)$|\[")  # pydantic's tags in an error's location
FINISH_REASONS = {"max_tokens": "length", "MAX_TOKENS": "length", "end_turn": "stop", "stop_sequence": "stop",
                  "STOP": "stop", "tool_use": "tool_calls"}
# OpenAI request fields that are refused, with why (the README lists them too).
UNSUPPORTED = {
    "n": "one answer per request: each choice could be routed to a different model",
    "logprobs": "not every pool model returns log-probabilities, and a routed answer's would not be comparable",
    "top_logprobs": "see logprobs",
    "logit_bias": "token ids differ between the pool's models",
    "seed": "not portable across providers",
    "frequency_penalty": "not portable across providers (LangChain chat models take it under different names)",
    "presence_penalty": "see frequency_penalty",
    "functions": "deprecated by OpenAI: use tools",
    "function_call": "deprecated by OpenAI: use tool_choice",
    "audio": "text answers only",
    "modalities": "text answers only",
    "prediction": "predicted outputs are an OpenAI-only feature",
    "web_search_options": "an OpenAI-hosted tool",
    "store": "OpenAI-hosted storage",
    "metadata": "OpenAI-hosted storage",
    "service_tier": "an OpenAI billing option",
    "reasoning_effort": "not portable across providers",
    "verbosity": "not portable across providers",
    "prompt_cache_key": "an OpenAI caching option",
    "safety_identifier": "an OpenAI abuse-monitoring option",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCall(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _tool_result_has_id(self) -> "Message":
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self


class FunctionDefinition(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDefinition


class JSONSchema(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema")
        return self


class StreamOptions(Strict):
    include_usage: bool | None = None


class ChatCompletionRequest(Strict):
    """``POST /v1/chat/completions``. ``routoo`` (an extra field) holds per-request routing settings."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    routoo: RoutingSettings | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ChatCompletionRequest":
        if self.tools and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("tools together with response_format are not supported: send one or the other")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def messages_for_langchain(self) -> list[BaseMessage]:
        """LangChain messages; ``RequestError`` for one LangChain cannot read."""
        dicts = [{"content": "", **m.model_dump(exclude_none=True)} for m in self.messages]
        try:
            return convert_to_messages(dicts)
        except (ValueError, NotImplementedError) as error:
            raise RequestError(f"messages: {error}", "messages") from None

    def call_options(self) -> dict[str, Any]:
        """What the chosen model receives: output bound, stop strings, sampling (passed through)."""
        options = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        return {k: v for k, v in options.items() if v is not None}

    def tool_options(self) -> dict[str, Any]:
        options = {"tool_choice": self.tool_choice, "parallel_tool_calls": self.parallel_tool_calls}
        return {k: v for k, v in options.items() if v is not None}


class RequestError(ValueError):
    """A request that cannot be served as sent (HTTP 400); ``param`` names the field when there is one."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.param = param
        self.code = code


def parse_request(data: Any) -> ChatCompletionRequest:
    """The validated request; ``RequestError`` naming the first bad, unknown or unsupported field."""
    if not isinstance(data, dict):
        raise RequestError(f"the body must be a JSON object, got {type(data).__name__}")
    for name, why in UNSUPPORTED.items():
        if name in data and not (name == "n" and data[name] == 1):
            raise RequestError(f"{name} is not supported by Routoo: {why}", name, "unsupported_parameter")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        errors = error.errors()  # an unknown field is named before a union's other members' complaints
        first = max(errors, key=lambda e: (e["type"] == "extra_forbidden", len(e["loc"])))
        field = ".".join(str(part) for part in first["loc"] if not UNION_MEMBER.search(str(part))) or None
        code = "unknown_parameter" if first["type"] == "extra_forbidden" else "invalid_value"
        message = f"unknown field {field!r}" if code == "unknown_parameter" else f"{field or 'request'}: {first['msg']}"
        raise RequestError(message, field, code) from None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_of(message: BaseMessage) -> dict[str, int] | None:
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    return {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"]}


def finish_reason(message: BaseMessage) -> str:
    """OpenAI's finish reason for an answer, from the provider's own (Anthropic's, Gemini's names mapped)."""
    if getattr(message, "tool_calls", None) or getattr(message, "tool_call_chunks", None):
        return "tool_calls"
    reason = message.response_metadata.get("finish_reason") or message.response_metadata.get("stop_reason")
    return FINISH_REASONS.get(reason, reason or "stop")


def completion(message: AIMessage, answered_by: str, record: dict, structured: bool = False) -> dict[str, Any]:
    """A ``chat.completion`` body for a routed answer (``structured``: the parsed JSON as its content)."""
    openai_message = convert_to_openai_messages(message)
    if structured:  # the parsed value (the chosen model may have answered with a tool call), else its text
        parsed = message.additional_kwargs.get("parsed")
        openai_message = {"role": "assistant", "content": message.text if parsed is None else json.dumps(parsed)}
    openai_message.setdefault("content", None)
    if openai_message.get("tool_calls") and not openai_message["content"]:
        openai_message["content"] = None
    body = {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": answered_by,
        "choices": [{"index": 0, "message": openai_message, "finish_reason": "stop" if structured else finish_reason(message),
                     "logprobs": None}],
        "routoo": record,
    }
    usage = usage_of(message)
    if usage is not None:
        body["usage"] = usage
    return body


class ChunkWriter:
    """``chat.completion.chunk`` events for one stream: one id, the model that answered, tool-call
    deltas by index, a final chunk with the finish reason, then usage when asked."""

    def __init__(self, answered_by: str, include_usage: bool):
        self.id = completion_id()
        self.created = int(time.time())
        self.model = answered_by
        self.include_usage = include_usage
        self.first = True
        self.called_tools = False

    def _event(self, choices: list[dict], **extra: Any) -> str:
        payload = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                   "choices": choices, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    def delta(self, chunk: AIMessageChunk) -> str | None:
        delta: dict[str, Any] = {"role": "assistant"} if self.first else {}
        text = chunk.text
        if text or self.first:
            delta["content"] = text
        calls = [{"index": c.get("index") or 0, **({"id": c["id"], "type": "function"} if c.get("id") else {}),
                  "function": {k: v for k, v in (("name", c.get("name")), ("arguments", c.get("args") or "")) if v is not None}}
                 for c in chunk.tool_call_chunks]
        if calls:
            delta["tool_calls"] = calls
            self.called_tools = True
        if not delta:
            return None
        self.first = False
        return self._event([{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}])

    def whole(self, text: str) -> str:
        """A structured answer, which arrives whole: one content delta."""
        self.first = False
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])

    def end(self, reason: str, usage: dict | None, record: dict) -> list[str]:
        """The closing events; the last one carries the routing record (``routoo``)."""
        reason = "tool_calls" if self.called_tools else reason
        if not self.include_usage:
            return [self._event([{"index": 0, "delta": {}, "finish_reason": reason, "logprobs": None}], routoo=record)]
        return [self._event([{"index": 0, "delta": {}, "finish_reason": reason, "logprobs": None}]),
                self._event([], usage=usage, routoo=record)]
