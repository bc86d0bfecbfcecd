"""An in-process OpenAI chat-completions endpoint for real provider classes (no network).

``FakeOpenAI`` is an httpx ``MockTransport`` handler: pass ``httpx.Client(transport=fake.transport())``
(and an ``AsyncClient``) to ``ChatOpenAI`` or LlamaIndex's ``OpenAI``. It answers in JSON or, when the
request asks ``stream=True``, in server-sent events word by word with a usage chunk; when tools are
offered and the last message is not a tool result it calls the first tool. ``requests`` keeps every
request body; ``status`` makes it fail with that HTTP status (and ``retry_after`` seconds).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class FakeOpenAI:
    reply: str = "Paris is the capital of France."
    tool_args: dict = field(default_factory=lambda: {"a": 1, "b": 2})
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
        tools = body.get("tools") or []
        last = body["messages"][-1]
        call = None
        if tools and last.get("role") != "tool":
            call = {"id": "call_1", "type": "function",
                    "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps(self.tool_args)}}
        text = None if call else self.reply
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._events(body, text, call))
        message = {"role": "assistant", "content": text, **({"tool_calls": [call]} if call else {})}
        return httpx.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
            "usage": USAGE,
        })

    def _events(self, body: dict, text: str | None, call: dict | None) -> bytes:
        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
            payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": body["model"], "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        if call:
            events.append(chunk({"tool_calls": [{"index": 0, **call}]}))
        else:
            words = text.split(" ")
            events += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
        events.append(chunk({}, finish="tool_calls" if call else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk({}, usage=USAGE))
        events.append("data: [DONE]\n\n")
        return "".join(events).encode()
