"""In-process provider endpoints that bill as the providers do, for the real provider classes (no network).

Each is an httpx ``MockTransport`` handler (``httpx2`` for the Google GenAI SDK) that keeps every request
body in ``requests`` and every usage it reported in ``billed``, and answers in the provider's own JSON or
server-sent events with the usage record that provider sends:

- ``OpenAIChat``: chat completions; prompt tokens by OpenAI's published counting rule (the cookbook's
  ``num_tokens_from_messages`` and ``num_tokens_for_tools``, o200k_base), ``cached`` prompt tokens and
  ``reasoning`` tokens in the details; on streams usage only when asked (``stream_options.include_usage``);
- ``OpenAIResponses``: the Responses API (usage in ``response.completed`` on streams);
- ``AnthropicMessages``: Messages API with ``cache_read_input_tokens``/``cache_creation_input_tokens``
  (``input_tokens`` counts the uncached rest), streams ending in ``message_delta`` with the usage;
- ``Gemini``: ``generateContent``/``streamGenerateContent`` with ``usageMetadata`` (``thoughtsTokenCount``),
  writing as many tokens as ``maxOutputTokens`` allows when ``fill`` is set.

``delay_s`` makes an answer slow (sleeping in the handler: sync clients block, async ones await).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from routoo_shared.routing.tokens import count_tokens


def openai_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens as OpenAI bills a chat-completions request (the cookbook's rule, o200k_base)."""
    count = lambda text: count_tokens(text, "o200k_base")  # noqa: E731
    tokens = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in body["messages"]:
        tokens += 3 + count(message["role"])
        content = message.get("content")
        parts = [content] if isinstance(content, str) else content or []
        for part in parts:
            if isinstance(part, str):
                tokens += count(part)
            elif part.get("type") == "text":
                tokens += count(part["text"])
            elif part.get("type") == "image_url":
                tokens += _openai_image_tokens(part["image_url"])
        for call in message.get("tool_calls") or []:
            tokens += count(call["function"]["name"]) + count(call["function"]["arguments"])
        if message.get("name"):
            tokens += 1 + count(message["name"])
    tools = body.get("tools") or []
    if tools:
        tokens += 12  # func_end
        for tool in tools:
            function = tool["function"]
            tokens += 7 + count(f"{function['name']}:{function.get('description', '').removesuffix('.')}")
            properties = (function.get("parameters") or {}).get("properties") or {}
            if properties:
                tokens += 3
                for key, prop in properties.items():
                    tokens += 3 + count(f"{key}:{prop.get('type', 'object')}:{prop.get('description', '').removesuffix('.')}")
                    if "enum" in prop:
                        tokens += -3 + sum(3 + count(str(item)) for item in prop["enum"])
    return tokens


def _openai_image_tokens(image_url: dict[str, Any]) -> int:
    if image_url.get("detail") == "low":
        return 85
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(image_url["url"].partition(",")[2]))) as image:
        width, height = image.size
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


def png(width: int, height: int) -> str:
    """A PNG of that size, base64-encoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _sse(events: list[tuple[str | None, dict[str, Any]]], done: bool = False) -> bytes:
    lines = [(f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n" for name, data in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


@dataclass
class Endpoint:
    """What every fake shares: the recorded requests, the usage it billed, a delay."""

    output_tokens: int = 20
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    billed: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.ahandle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.delay_s)
        return self.answer(request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay_s)
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError


@dataclass
class OpenAIChat(Endpoint):
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tool_call: bool = False

    def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        prompt = openai_prompt_tokens(body)
        usage = {"prompt_tokens": prompt, "completion_tokens": self.output_tokens, "total_tokens": prompt + self.output_tokens,
                 "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt)},
                 "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}
        self.billed.append(usage)
        calls = []
        if self.tool_call and body.get("tools") and body["messages"][-1]["role"] != "tool":
            name = body["tools"][0]["function"]["name"]
            calls = [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}]
        text = None if calls else "The answer is 42."
        head = {"id": "chatcmpl-1", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}
            return httpx.Response(200, json={**head, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}]})
        chunk = {**head, "object": "chat.completion.chunk"}
        delta = {"tool_calls": [{"index": 0, **calls[0]}]} if calls else {"content": text}
        events = [(None, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": None}]}),
                  (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]})]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(events, done=True))


@dataclass
class OpenAIResponses(Endpoint):
    prompt_tokens: int = 50
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        usage = {"input_tokens": self.prompt_tokens, "input_tokens_details": {"cached_tokens": self.cached_tokens},
                 "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                 "total_tokens": self.prompt_tokens + self.output_tokens}
        self.billed.append(usage)
        item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "The answer is 42.", "annotations": []}]}
        response = {"id": "resp_1", "object": "response", "created_at": 0, "model": body["model"], "status": "completed",
                    "output": [item], "usage": usage, "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
        if not body.get("stream"):
            return httpx.Response(200, json=response)
        events = [
            ("response.created", {"type": "response.created", "sequence_number": 0,
                                  "response": {**response, "status": "in_progress", "output": [], "usage": None}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
                                            "output_index": 0, "content_index": 0, "delta": "The answer is 42.", "logprobs": []}),
            ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": response}),
        ]
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(events))


@dataclass
class AnthropicMessages(Endpoint):
    """``input_tokens`` is the uncached prompt; ``cache_read``/``cache_write`` come on top, as Anthropic bills."""

    input_tokens: int = 20
    cache_read: int = 0
    cache_write: int = 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                 "cache_creation_input_tokens": self.cache_write, "cache_read_input_tokens": self.cache_read}
        self.billed.append(usage)
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [{"type": "text", "text": "The answer is 42."}], "stop_reason": "end_turn",
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return httpx.Response(200, json=message)
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "The answer is 42."}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(events))


@dataclass
class Gemini(Endpoint):
    """Answers ``generateContent`` and ``streamGenerateContent`` (``httpx2`` transports)."""

    prompt_tokens: int = 100
    thoughts_tokens: int = 0
    fill: bool = False  # write as many tokens as maxOutputTokens allows

    def transport(self):
        import httpx2

        return httpx2.MockTransport(self.handle)

    def async_transport(self):
        import httpx2

        return httpx2.MockTransport(self.ahandle)

    def answer(self, request) -> Any:
        import httpx2

        body = json.loads(request.content)
        self.requests.append(body)
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        written = limit if self.fill and limit else self.output_tokens
        usage = {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": written,
                 "thoughtsTokenCount": self.thoughts_tokens,
                 "totalTokenCount": self.prompt_tokens + written + self.thoughts_tokens}
        self.billed.append(usage)
        answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": "word " * max(written, 1)}]},
                                  "finishReason": "STOP"}], "usageMetadata": usage, "modelVersion": "gemini"}
        if "streamGenerateContent" not in str(request.url):
            return httpx2.Response(200, json=answer)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=_sse([(None, answer)]))


def chat_openai(model: str, endpoint: OpenAIChat, **fields: Any):
    """LangChain's ``ChatOpenAI`` talking to ``endpoint``."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, api_key="sk-test", max_retries=0, http_client=httpx.Client(transport=endpoint.transport()),
                      http_async_client=httpx.AsyncClient(transport=endpoint.async_transport()), **fields)


def llama_openai(model: str, endpoint: OpenAIChat, **fields: Any):
    """LlamaIndex's ``OpenAI`` talking to ``endpoint``."""
    from llama_index.llms.openai import OpenAI

    return OpenAI(model=model, api_key="sk-test", max_retries=0, http_client=httpx.Client(transport=endpoint.transport()),
                  async_http_client=httpx.AsyncClient(transport=endpoint.async_transport()), **fields)
