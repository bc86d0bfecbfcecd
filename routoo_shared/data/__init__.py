"""Data: the dataset format (prompts with per-model scores), labelling and production feedback.

The names below are the format's public surface (``routoo_shared.data.X``, as before the layout).
"""

from routoo_shared.data.formats import (
    MIN_DEV_ROWS,
    MIN_TRAIN_ROWS,
    SPLITS,
    Message,
    ModelResult,
    Outcomes,
    Question,
    bundled,
    carve_dev,
    check_results,
    check_trainable,
    describe,
    load_questions,
    prompt_text,
    read_questions,
    split_of,
    write_questions,
)
from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.routing.models_file import (
    CLOSED_OR_EXCLUDED,
    DatasetError,
    ModelEntry,
    ModelsFile,
    load_pool,
    pool_names,
    read_models,
)

__all__ = [
    "BUNDLED_DIR", "CLOSED_OR_EXCLUDED", "MIN_DEV_ROWS", "MIN_TRAIN_ROWS", "SPLITS", "DatasetError", "Message",
    "ModelEntry", "ModelResult", "ModelsFile", "Outcomes", "Question", "bundled", "carve_dev", "check_results",
    "check_trainable", "describe", "load_pool", "load_questions", "pool_names", "prompt_text", "read_models",
    "read_questions", "split_of", "write_questions",
]
