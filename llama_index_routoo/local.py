"""Real local components for LlamaIndex: the small GGUF LLMs and the bundled MiniLM embedding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from routoo_shared.local.llm import LocalLLM
from routoo_shared.routing.messages import content_text


class LocalGGUFLLM(CustomLLM):
    """Greedy generation with ``smollm2-135m-instruct`` or ``gemma-3-270m``, offline."""

    model: str = "smollm2-135m-instruct"
    max_tokens: int = 48
    context_window: int = 2048

    @classmethod
    def class_name(cls) -> str:
        return "LocalGGUFLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.max_tokens, is_chat_model=True, model_name=self.model)

    def _llm(self) -> LocalLLM:
        return LocalLLM(self.model, self.max_tokens)

    @staticmethod
    def _turns(messages: Sequence[ChatMessage]) -> list[dict]:
        turns = [{"role": m.role.value if m.role.value in ("system", "assistant") else "user", "content": content_text(m.blocks)} for m in messages]
        return [t for t in turns if t["content"]] or [{"role": "user", "content": " "}]

    def _usage(self, prompt: str, text: str) -> dict[str, int]:
        llm = self._llm()
        return {"prompt_tokens": llm.count_tokens(prompt), "completion_tokens": llm.count_tokens(text) if text else 0}

    def _completion(self, prompt: str, stop: list[str] | None) -> CompletionResponse:
        text = self._llm().generate([{"role": "user", "content": prompt}], stop)
        return CompletionResponse(text=text, additional_kwargs=self._usage(prompt, text))

    def _completion_stream(self, prompt: str, stop: list[str] | None) -> CompletionResponseGen:
        text = ""
        for piece in self._llm().stream([{"role": "user", "content": prompt}], stop):
            text += piece
            yield CompletionResponse(text=text, delta=piece)

    def _chat(self, messages: Sequence[ChatMessage], stop: list[str] | None) -> ChatResponse:
        turns = self._turns(messages)
        text = self._llm().generate(turns, stop)
        usage = self._usage("\n".join(t["content"] for t in turns), text)
        return ChatResponse(message=ChatMessage(role="assistant", content=text), additional_kwargs=usage)

    def _chat_stream(self, messages: Sequence[ChatMessage], stop: list[str] | None) -> ChatResponseGen:
        text = ""
        for piece in self._llm().stream(self._turns(messages), stop):
            text += piece
            yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta=piece)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion(prompt, kwargs.get("stop"))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._completion_stream(prompt, kwargs.get("stop"))

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs.get("stop"))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_stream(messages, kwargs.get("stop"))

    # async forms generate in a worker thread: the event loop keeps running meanwhile
    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._completion, prompt, kwargs.get("stop"))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return _in_thread(self._completion_stream(prompt, kwargs.get("stop")))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs.get("stop"))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return _in_thread(self._chat_stream(messages, kwargs.get("stop")))


async def _in_thread(pieces: Iterator[Any]) -> AsyncIterator[Any]:
    """A sync generator as an async one, each step in a worker thread."""
    end = object()
    while (piece := await asyncio.to_thread(next, pieces, end)) is not end:
        yield piece


class MiniLMEmbedding(BaseEmbedding):
    """The bundled all-MiniLM-L6-v2 as a LlamaIndex embedding (same encoder and cache as the router)."""

    model_name: str = "all-MiniLM-L6-v2"

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _encoder(self):
        if getattr(self, "_cached_encoder", None) is None:
            from routoo_shared.predictors.encoder import PromptEncoder  # torch: loaded when first embedding

            object.__setattr__(self, "_cached_encoder", PromptEncoder())
        return self._cached_encoder

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder().encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder().encode(texts).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
