"""An in-process OpenAI chat-completions endpoint for real provider classes (no network).

``FakeOpenAI`` is an httpx ``MockTransport`` handler: pass ``httpx.Client(transport=fake.transport())``
(and an ``AsyncClient``) to ``ChatOpenAI`` or LlamaIndex's ``OpenAI``. It answers in JSON or, when the
request asks ``stream=True``, in server-sent events word by word with a usage chunk; when tools are
offered and the last message is not a tool result it calls the tool ``tool_choice`` names, else the
first tool (every offered tool when ``parallel``); with a ``response_format`` it answers ``structured``
as JSON; ``reply`` may be a function of the request body; ``filtered`` answers HTTP 200 with no choices
(a content filter's reply). ``requests`` keeps every request body; ``status`` makes it fail with that HTTP status (and
``retry_after`` seconds); ``max_prompt_tokens`` rejects longer prompts as a provider does (HTTP 400).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from routoo_shared.routing.tokens import count_tokens

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class FakeOpenAI:
    reply: str | Callable[[dict], str] = "Paris is the capital of France."
    tool_args: dict = field(default_factory=lambda: {"a": 1, "b": 2})
    parallel: bool = False
    structured: dict | None = None
    filtered: bool = False
    max_prompt_tokens: int | None = None
    status: int | None = None
    retry_after: float | None = None
    requests: list[dict] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def clients(self) -> dict:
        """Keyword arguments for ``ChatOpenAI`` / LlamaIndex ``OpenAI``: sync and async clients."""
        return {"http_client": httpx.Client(transport=self.transport()),
                "http_async_client": httpx.AsyncClient(transport=self.transport())}

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status is not None:
            headers = {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}
            return httpx.Response(self.status, headers=headers, json={"error": {"message": f"fake status {self.status}",
                                                                               "type": "fake", "code": str(self.status)}})
        if self.filtered:
            return httpx.Response(200, json={"id": "", "object": "", "created": 0, "model": "", "choices": [],
                                             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                                                 "violence": {"filtered": True, "severity": "medium"}}}]})
        prompt = sum(count_tokens(str(m.get("content") or "")) for m in body["messages"])
        if self.max_prompt_tokens is not None and prompt > self.max_prompt_tokens:
            return httpx.Response(400, json={"error": {"message": f"context_length_exceeded: {prompt} tokens",
                                                       "type": "invalid_request_error", "code": "context_length_exceeded"}})
        calls, text = self._tool_calls(body), self._text(body)
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._events(body, text, calls))
        message = {"role": "assistant", "content": None if calls else text, **({"tool_calls": calls} if calls else {})}
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": USAGE,
        })

    def _tool_calls(self, body: dict) -> list[dict]:
        names = [tool["function"]["name"] for tool in body.get("tools") or []]
        if not names or body["messages"][-1].get("role") == "tool":
            return []
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            names = [choice["function"]["name"]]
        called = names if self.parallel else names[:1]
        return [{"id": f"call_{i + 1}", "type": "function", "function": {"name": name, "arguments": json.dumps(self.tool_args)}}
                for i, name in enumerate(called)]

    def _text(self, body: dict) -> str:
        if body.get("response_format") and self.structured is not None:
            return json.dumps(self.structured)
        return self.reply(body) if callable(self.reply) else self.reply

    def _events(self, body: dict, text: str, calls: list[dict]) -> bytes:
        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
            payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": body["model"], "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        if calls:
            events += [chunk({"tool_calls": [{"index": i, **call}]}) for i, call in enumerate(calls)]
        else:
            words = text.split(" ")
            events += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
        events.append(chunk({}, finish="tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk({}, usage=USAGE))
        events.append("data: [DONE]\n\n")
        return "".join(events).encode()
