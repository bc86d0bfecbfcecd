"""``models.json``: the pool's price sheet, one ``ModelSpec`` a model plus documentation fields.

Validated where it is read: unknown keys (with a guess for a misspelt one), bad numbers and
repeated names are ``DatasetError``s that name the file, the model and the field.
"""

from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from routoo_shared.routing.known_models import resolve
from routoo_shared.routing.pool import ModelPool, ModelSpec


class DatasetError(ValueError):
    """A dataset file or its contents cannot be used; the message names the file, line and field."""


class ModelEntry(ModelSpec):
    """A ``models.json`` entry: a ``ModelSpec`` plus fields that only document the model."""

    model_config = ConfigDict(extra="forbid")

    params_b: float | None = Field(default=None, ge=0, description="parameters, billions")
    active_params_b: float | None = Field(default=None, ge=0, description="active parameters, billions")
    price_source: str | None = None


class ModelsFile(BaseModel):
    """``models.json``: the pool's price sheet (USD per 1M tokens)."""

    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD"] = "USD"
    unit: Literal["per 1M tokens"] = "per 1M tokens"
    models: list[ModelEntry] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


_KNOWN_FIELDS = sorted({*ModelEntry.model_fields, *ModelsFile.model_fields})


def describe_error(error: ValidationError, known_fields: list[str], names: list[str] | None = None) -> str:
    """A pydantic error as short text: the field path and the problem, with a guess for a misspelt key.

    ``known_fields`` are the field names a misspelt key is matched against; ``names`` are the models of a ``models.json``, so that ``models.3.x`` reads ``model 'name': x``.
    """
    parts = []
    for item in error.errors():
        loc = list(item["loc"])
        prefix = ""
        if names and len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and loc[1] < len(names):
            prefix, loc = f"model {names[loc[1]]!r}: ", loc[2:]
        where = ".".join(str(part) for part in loc) or "entry"
        if item["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(str(loc[-1]), known_fields, n=1)
            parts.append(f"{prefix}unknown field {where!r}" + (f" (did you mean {guess[0]!r}?)" if guess else ""))
        else:
            parts.append(f"{prefix}{where}: {item['msg']}")
    return "; ".join(parts)


def read_models(path: str | Path) -> ModelsFile:
    """A validated ``models.json``: unknown keys, bad numbers and repeated names are ``DatasetError``s.

    Warnings (an unknown context window, say) are given only once the whole file is accepted, so a
    rejected entry brings its error alone.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"models file not found: {path}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sheet = ModelsFile.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        raise DatasetError(f"{path}: {describe_error(error, _KNOWN_FIELDS, _entry_names(path))}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None
    repeated = sorted({n for n in sheet.names if sheet.names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{path}: model names must be unique; repeated: {repeated}")
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    return sheet


def _entry_names(path: Path) -> list[str]:
    """Model names as the file gives them, to name the entry an error belongs to."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("models", [])
        return [str(e.get("name")) if isinstance(e, dict) else "?" for e in entries]
    except (ValueError, AttributeError, TypeError):
        return []


def load_pool(path: str | Path, names: list[str] | None = None) -> ModelPool:
    """The pool of a ``models.json`` file, optionally a subset in the given order."""
    sheet = read_models(path)
    entries = {m.name: m for m in sheet.models}
    unknown = [n for n in names or [] if n not in entries]
    if unknown:
        raise DatasetError(f"unknown model(s) {unknown}: {path} lists {sheet.names}")
    fields = set(ModelSpec.model_fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read_models has given them
        return ModelPool(models=[ModelSpec(**entries[n].model_dump(include=fields)) for n in names or sheet.names])


# The open-weight pool of the evaluation issue: every mmlu_pro model but the hosted/proprietary ones.
CLOSED_OR_EXCLUDED = ("gemini-", "c4ai-command-r", "jamba", "DeepSeek")


def pool_names(spec: str | None, available: list[str], groups: dict[str, list[str]] | None = None) -> list[str]:
    """Expand a ``--pool`` value: comma-separated names or ``groups`` names, where ``open`` stands for the
    open-weight models unless ``groups`` defines it; a name the model registry resolves to an
    ``available`` one (``Meta-Llama-3.1-70B-Instruct`` for ``Meta-Llama-3_1-70B-Instruct``) counts as it.
    Raises KeyError naming unknown models."""
    groups = groups or {}
    if not spec:
        return list(available)
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if item in groups:
            names += groups[item]
        elif item == "open":
            names += [m for m in available if not m.startswith(CLOSED_OR_EXCLUDED)]
        elif item:
            names.append(resolve(item, available) or item)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; the data has {available}")
    if not names:
        raise KeyError(f"--pool {spec!r} names no model; the data has {available}")
    return list(dict.fromkeys(names))
