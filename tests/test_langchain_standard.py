"""LangChain's own standard suites: unit tests on a scripted pool, integration tests on real local LLMs."""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_routoo import LocalChatModel, RoutooChatModel
from tests.conftest import TRIO, ScriptedChatModel, cached_local_router, trio_router


class TestRoutooChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return RoutooChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"models": {name: ScriptedChatModel(name=name) for name in TRIO}, "router": trio_router()}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return TRIO[0]


@pytest.mark.slow
class TestRoutooChatModelIntegration(ChatModelIntegrationTests):
    """Routes between SmolLM2-135M-Instruct and Gemma-3-270m, both running locally."""

    @property
    def chat_model_class(self):
        return RoutooChatModel

    @property
    def chat_model_params(self) -> dict:
        router = cached_local_router()
        return {"models": {name: LocalChatModel(model=name, max_tokens=24) for name in router.pool.names}, "router": router}

    @property
    def has_tool_calling(self) -> bool:
        return False  # neither 135M/270M model can call tools; tool routing is tested in test_langchain.py

    @property
    def has_structured_output(self) -> bool:
        return False  # structured output needs tool calling or JSON mode, which these models lack

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def model_override_value(self) -> str:
        return "gemma-3-270m"
