"""The bundled datasets: each is valid in the documented format and ships a vector for every prompt."""

import numpy as np
import pytest

from routoo_shared.data import Outcomes, bundled, check_results, load_questions, read_models, write_questions
from routoo_shared.datasets import BUNDLED_DATASETS
from routoo_shared.predictors.encoder import EmbeddingCache, PromptEncoder


@pytest.mark.parametrize("dataset", BUNDLED_DATASETS)
def test_each_bundled_dataset_is_valid_and_has_its_prompt_vectors(dataset):
    questions, sheet = load_questions(bundled(dataset)), read_models(bundled(dataset, "models.json"))
    check_results(questions, sheet.names)
    scores = Outcomes.from_questions(questions, sheet.names).correct
    seen = np.isfinite(scores)
    assert seen.any(axis=0).all(), "every listed model has results"
    assert ((scores[seen] >= 0) & (scores[seen] <= 1)).all()
    cache = EmbeddingCache(PromptEncoder().name)
    assert all(cache.get(q.prompt) is not None for q in questions)


def test_answers_soft_scores_and_missing_results_round_trip(tmp_path):
    reasoning = load_questions(bundled("reasoning_mix"))[:3]
    assert all(r.answer is not None for q in reasoning for r in q.results.values() if r.score == 1)
    arena = load_questions(bundled("arena_bench"))
    assert any(0 < r.score < 1 for q in arena for r in q.results.values())  # judge grades are soft
    assert any(len(q.results) < 13 for q in arena)  # a model absent from a row is no error
    write_questions(reasoning + arena[:3], tmp_path / "rows.jsonl")
    again = load_questions(tmp_path / "rows.jsonl")
    assert [q.model_dump() for q in again] == [q.model_dump() for q in reasoning + arena[:3]]
