"""The traced (TorchScript) encoder computes the same vectors as eager PyTorch and the shipped ones."""

from __future__ import annotations

import numpy as np
import pytest

from routoo_shared.data.formats import bundled, load_questions
from routoo_shared.predictors.encoder import EmbeddingCache, PromptEncoder


@pytest.fixture(scope="module")
def prompts():
    return [q.prompt for q in load_questions(bundled("mmlu_pro"), split="dev")[:12]]


def uncached(encoder: PromptEncoder, tmp_path) -> PromptEncoder:
    encoder.cache = EmbeddingCache("test-empty", tmp_path)  # recompute: the shipped vectors are not read
    return encoder


def test_traced_vectors_match_eager_and_the_shipped_float_vectors(prompts, tmp_path):
    traced = uncached(PromptEncoder(), tmp_path)
    eager = uncached(PromptEncoder(torchscript=False), tmp_path)
    texts = prompts + ["", "a", "word " * 300]  # empty, one token, truncated at 256
    for batch_size in (1, 8):
        traced.batch_size = eager.batch_size = batch_size
        np.testing.assert_allclose(traced.encode(texts), eager.encode(texts), atol=1e-5)
    shipped = PromptEncoder().encode(prompts)  # the bundled cache, made with the eager float encoder
    np.testing.assert_allclose(traced.encode(prompts), shipped, atol=1e-3)  # float16 storage
