"""``routoo.yaml``: the pool and its upstreams, routing settings and presets, API keys, limits.

Read once at start-up and validated where it enters: an unknown key, a bad number or a preset that
names an unknown setting is a ``ValueError`` naming the file and the field. The pool is a list of
``ModelSpec`` entries, each with the LangChain chat model that serves it (``init_chat_model``'s
provider names, or ``openai_compatible`` for vLLM, Ollama, llama.cpp or any OpenAI-compatible
server), or ``local`` for the two bundled local LLMs.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.routed_calls import SETTINGS, RoutedCalls

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
PER_REQUEST_FIELDS = (*SETTINGS, "timeout_s", "max_fallbacks")

def _optional(field: FieldInfo) -> FieldInfo:
    optional = copy.copy(field)
    optional.default = None
    return optional


# The integrations' own field definitions (ranges, NaN refused), so a preset or a request's ``routoo``
# field is validated exactly as ``RoutooChatModel(quality_cost_tradeoff=...)`` is.
# Every setting is optional here: an unset one keeps the value of the level below (request < preset < default).
RoutingSettings = create_model(
    "RoutingSettings",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    **{name: (RoutedCalls.model_fields[name].annotation | None, _optional(RoutedCalls.model_fields[name]))
       for name in PER_REQUEST_FIELDS if name in RoutedCalls.model_fields},
)


class OpenAICompatible(BaseModel):
    """An upstream that speaks the OpenAI API (vLLM, Ollama, llama.cpp, another Routoo...)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, description="environment variable holding the upstream's key")
    model: str | None = Field(default=None, description="the upstream's model id (default: provider_model, else name)")


class PoolModel(BaseModel):
    """One pool entry: the routing spec and the chat model that answers for it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    spec: ModelSpec
    openai_compatible: OpenAICompatible | None = None

    @classmethod
    def parse(cls, entry: Any, where: str) -> "PoolModel":
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping of ModelSpec fields, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(ModelSpec.model_fields) - {"openai_compatible"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: ModelSpec fields and openai_compatible")
        entry = dict(entry)
        upstream = entry.pop("openai_compatible", None)
        return cls(spec=ModelSpec(**entry), openai_compatible=upstream)

    def chat_model(self):
        """The LangChain chat model for this entry (built, not called: no network at start-up); a
        ``ValueError`` naming the model when it cannot be built (a missing API key or provider package)."""
        try:
            return self._build()
        except ValueError:
            raise
        except Exception as error:  # the provider class's own complaint, e.g. openai.OpenAIError, ImportError
            raise ValueError(f"pool model {self.spec.name!r}: cannot build its chat model: {error}") from error

    def _build(self):
        spec = self.spec
        if spec.provider == "local":
            from langchain_routoo import LocalChatModel

            return LocalChatModel(model=spec.name)
        if self.openai_compatible is not None:
            from langchain_openai import ChatOpenAI

            upstream = self.openai_compatible
            key = os.environ.get(upstream.api_key_env, "") if upstream.api_key_env else "none"
            if upstream.api_key_env and not key:
                raise ValueError(f"pool model {spec.name!r}: environment variable {upstream.api_key_env} is not set")
            return ChatOpenAI(model=upstream.model or spec.provider_model or spec.name, base_url=upstream.base_url,
                              api_key=key, max_retries=0, stream_usage=True)
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec.provider_model or spec.name, model_provider=spec.provider)


class KeyEntry(BaseModel):
    """An API key as the config stores it: its SHA-256, never the secret."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    budget_usd: float | None = Field(default=None, gt=0, description="USD this key may spend (per day with renew: daily)")
    renew: Literal["daily"] | None = Field(default=None, description="a fresh budget every UTC day")
    allowed_presets: list[str] | None = Field(default=None, description="'routoo' is the default preset")
    allowed_models: list[str] | None = None
    requests_per_minute: int | None = Field(default=None, gt=0)


class ServerConfig(BaseModel):
    """What ``routoo serve`` runs. ``pool`` is ``"local"`` or a list of pool entries (``PoolModel``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    pool: Literal["local"] | list[PoolModel] = "local"
    predictor: Path | None = Field(default=None, description="a 'routoo train' folder (default: the bundled predictor)")
    settings: RoutingSettings = Field(default_factory=RoutingSettings, description="what model 'routoo' routes with")
    presets: dict[str, RoutingSettings] = Field(default_factory=dict, description="model 'routoo/<name>'")
    sticky: bool = Field(default=False, description="a conversation keeps the model of its first turn")
    keys: list[KeyEntry] = Field(default_factory=list)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)

    @classmethod
    def from_data(cls, data: Any, where: str = "the config") -> "ServerConfig":
        """Validate a parsed YAML document; ``ValueError`` naming ``where`` and the field."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        if isinstance(data.get("pool"), list):
            data["pool"] = [PoolModel.parse(entry, f"{where}: pool[{i}]") for i, entry in enumerate(data["pool"])]
        try:
            config = cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: {field}: {first['msg']}") from None
        repeated = sorted(name for name, count in Counter(key.name for key in config.keys).items() if count > 1)
        if repeated:
            raise ValueError(f"{where}: keys: repeated name(s) {repeated}")
        return config

    @classmethod
    def load(cls, path: str | Path) -> "ServerConfig":
        """Read ``routoo.yaml``; a relative ``predictor`` is read from the file's folder."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        config = cls.from_data(data, str(path))
        if config.predictor is not None and not config.predictor.is_absolute():
            config = config.model_copy(update={"predictor": path.parent / config.predictor})
        return config

    def router(self):
        """The router over this pool: the bundled (or given) predictor; ``local``: the local models' router."""
        if self.pool == "local":
            from routoo_shared.local.llm import local_router

            return local_router()
        from routoo_shared.predictors.predictor import Predictor
        from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router

        router = Router(ModelPool(models=[entry.spec for entry in self.pool]), Predictor.load(self.predictor or BUNDLED_PREDICTOR))
        router.directory = self.predictor
        return router

    def chat_models(self) -> dict[str, Any]:
        """Pool name -> LangChain chat model."""
        if self.pool == "local":
            from langchain_routoo import LocalChatModel
            from routoo_shared.local.llm import LOCAL_MODELS

            return {name: LocalChatModel(model=name) for name in LOCAL_MODELS}
        return {entry.spec.name: entry.chat_model() for entry in self.pool}
