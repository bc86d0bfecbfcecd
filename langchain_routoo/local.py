"""LocalChatModel: a real LangChain chat model over the small GGUF LLMs (offline demos and tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from routoo_shared.local.llm import LocalLLM
from routoo_shared.routing.messages import content_text

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}


class LocalChatModel(BaseChatModel):
    """Greedy generation with ``smollm2-135m-instruct`` or ``gemma-3-270m``; no tool calling."""

    model: str = "smollm2-135m-instruct"
    max_tokens: int = 48

    @property
    def _llm_type(self) -> str:
        return "routoo-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="local", ls_model_name=self.model, ls_model_type="chat", ls_max_tokens=self.max_tokens)

    def _llm(self) -> LocalLLM:
        return LocalLLM(self.model, self.max_tokens)

    @staticmethod
    def _turns(messages: list[BaseMessage]) -> list[dict]:
        turns = [{"role": ROLES.get(m.type, "user"), "content": content_text(m.content)} for m in messages]
        return [t for t in turns if t["content"]] or [{"role": "user", "content": " "}]

    def _usage(self, turns: list[dict], text: str) -> UsageMetadata:
        llm = self._llm()
        prompt = sum(llm.count_tokens(t["content"]) for t in turns)
        output = llm.count_tokens(text) if text else 0
        return UsageMetadata(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turns = self._turns(messages)
        text = self._llm().generate(turns, stop, kwargs.get("max_tokens"))
        message = AIMessage(
            content=text, usage_metadata=self._usage(turns, text), response_metadata={"model_name": self.model}
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        turns = self._turns(messages)
        text = ""
        for piece in self._llm().stream(turns, stop, kwargs.get("max_tokens")):
            text += piece
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        usage = self._usage(turns, text)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, response_metadata={"model_name": self.model}, chunk_position="last")
        )
