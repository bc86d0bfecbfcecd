"""An in-process OpenAI chat-completions endpoint: the real OpenAI SDK (and the framework classes built
on it) talk to it through an httpx ``MockTransport``, with JSON and SSE answers and no network.

It answers like a tool-calling model: when tools are offered it calls the one ``tool_choice`` names, or
every offered tool (as a parallel-calling model does); after a tool result it reports the result; with
a ``response_format`` it returns ``structured`` as JSON; otherwise ``text`` (or ``reply(body)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from routoo_shared.tokens import count_tokens


class OpenAIEndpoint:
    """``requests`` holds every request body received; ``usage`` is what each answer reports."""

    def __init__(
        self,
        text: str = "Hello from the endpoint.",
        reply: Callable[[dict], str] | None = None,
        tool_args: dict[str, dict] | None = None,
        structured: dict | None = None,
        usage: tuple[int, int] = (11, 7),
        status: int = 200,
        max_prompt_tokens: int | None = None,
    ):
        self.text, self.reply, self.tool_args, self.structured = text, reply, tool_args or {}, structured
        self.usage, self.status, self.max_prompt_tokens = usage, status, max_prompt_tokens
        self.requests: list[dict] = []

    def clients(self) -> dict[str, Any]:
        """``http_client``/``async_http_client`` keyword arguments for an OpenAI SDK-based class."""
        transport = httpx.MockTransport(self)
        return {"http_client": httpx.Client(transport=transport), "async_http_client": httpx.AsyncClient(transport=transport)}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status != 200:
            return httpx.Response(self.status, headers={"retry-after": "30"}, json={"error": {"message": f"status {self.status}"}})
        prompt = sum(count_tokens(str(m.get("content") or "")) for m in body["messages"])
        if self.max_prompt_tokens is not None and prompt > self.max_prompt_tokens:
            error = {"message": f"context_length_exceeded: {prompt} > {self.max_prompt_tokens}", "code": "context_length_exceeded"}
            return httpx.Response(400, json={"error": error})
        content, calls = self._answer(body)
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=self._sse(body, content, calls))
        message = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}
        return httpx.Response(200, json={**self._envelope(body, "chat.completion"), "choices": [choice], "usage": self._usage()})

    def _answer(self, body: dict) -> tuple[str, list[dict]]:
        last = body["messages"][-1]
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        if tools and last["role"] != "tool":
            choice = body.get("tool_choice")
            named = choice["function"]["name"] if isinstance(choice, dict) else None
            return "", [self._call(i, name) for i, name in enumerate([named] if named else tools)]
        if last["role"] == "tool":
            return f"The tool returned {last['content']}.", []
        if body.get("response_format") and self.structured is not None:
            return json.dumps(self.structured), []
        return (self.reply(body) if self.reply else self.text), []

    def _call(self, index: int, name: str) -> dict:
        arguments = json.dumps(self.tool_args.get(name, {}))
        return {"id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": arguments}}

    def _usage(self) -> dict[str, int]:
        prompt, completion = self.usage
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @staticmethod
    def _envelope(body: dict, kind: str) -> dict:
        return {"id": "chatcmpl-fake", "object": kind, "created": 0, "model": body["model"]}

    def _sse(self, body: dict, content: str, calls: list[dict]) -> bytes:
        """A role chunk, the content word by word (or the tool calls), a finish chunk, then usage when
        the request asked for it (``stream_options.include_usage``)."""
        deltas = [{"role": "assistant", "content": ""}]
        words = content.split(" ") if content else []
        deltas += [{"content": word if i == 0 else " " + word} for i, word in enumerate(words)]
        deltas += [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls)]
        chunks = [{"index": 0, "delta": delta, "finish_reason": None} for delta in deltas]
        chunks.append({"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"})
        events = [{**self._envelope(body, "chat.completion.chunk"), "choices": [chunk]} for chunk in chunks]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**self._envelope(body, "chat.completion.chunk"), "choices": [], "usage": self._usage()})
        return "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode() + b"data: [DONE]\n\n"
