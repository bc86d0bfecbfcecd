"""The predictor's head, its category classifier, the LM reader, and load-time validation of predictor files."""

from __future__ import annotations

import json
import math
import shutil
import struct

import numpy as np
import pytest

from routoo_shared.evaluation.baselines import category_lookup_quality
from routoo_shared.data.formats import Outcomes, bundled, load_questions, split_of
from routoo_shared.predictors.predictor import Predictor, PredictorFileError, TrainConfig
from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router

PROMPTS = ["What is the derivative of x^3?", "Which court decides disputes between two US states?"]


@pytest.fixture(scope="module")
def bundled_predictor() -> Predictor:
    return Predictor.load(BUNDLED_PREDICTOR)


@pytest.fixture()
def predictor_copy(tmp_path):
    folder = tmp_path / "predictor"
    shutil.copytree(BUNDLED_PREDICTOR, folder)
    return folder


def _mutate(folder, change) -> None:
    config = json.loads((folder / "predictor.json").read_text())
    change(config)
    (folder / "predictor.json").write_text(json.dumps(config))


BAD_VALUES = {
    "temperature": [-1.0, 0, "hot", float("nan"), float("inf"), 1000.0, None],
    "feature_mean": [[5.0], ["a", "b", "c"], [float("nan"), 0.0, 0.0], "0,0,0"],
    "feature_std": [[0.0, 0.0, 0.0], [-1.0, 1.0, 1.0], [float("inf"), 1.0, 1.0], [1.0, 1.0]],
    "in_dim": ["387", -5, 0, 1.5, 999],
    "models": [[], ["a", "a"], "Llama", [1, 2]],
    "categories": [["math", "math"], [""], None],
    "encoder.max_length": ["256/..", -1, 0, 100000, 2.5],
    "encoder.kind": ["gpt", None],
    "train_config.ensemble": [0, -1, "3", 100],
    "train_config.hidden": [0, "many"],
    "train_config.dropout": [1.5, -0.1],
    "train_config.unknown_setting": [1],
    "version": [1, "2"],
}


@pytest.mark.parametrize(
    "field,value", [(field, value) for field, values in BAD_VALUES.items() for value in values],
    ids=lambda v: repr(v)[:20],
)
def test_every_bad_config_value_is_rejected_at_load_naming_its_field(predictor_copy, field, value):
    *parents, leaf = field.split(".")

    def change(config):
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value

    _mutate(predictor_copy, change)
    with pytest.raises(PredictorFileError) as error:
        Predictor.load(predictor_copy)
    assert leaf in str(error.value) or "version" in str(error.value)


def test_missing_keys_and_non_object_configs_are_rejected(predictor_copy):
    _mutate(predictor_copy, lambda config: config.pop("temperature"))
    with pytest.raises(PredictorFileError, match="temperature"):
        Predictor.load(predictor_copy)
    (predictor_copy / "predictor.json").write_text("[1, 2]")
    with pytest.raises(PredictorFileError, match="not a routoo-predictor"):
        Predictor.load(predictor_copy)


def test_a_nan_weight_loads_and_shows_as_nan_in_its_model_column(predictor_copy, bundled_predictor):
    blob = bytearray((predictor_copy / "predictor.safetensors").read_bytes())
    header_len = struct.unpack("<Q", blob[:8])[0]
    start = 8 + header_len + json.loads(blob[8 : 8 + header_len])["0.embedding"]["data_offsets"][0]
    blob[start : start + 4] = struct.pack("<f", float("nan"))
    (predictor_copy / "predictor.safetensors").write_bytes(bytes(blob))
    quality = Predictor.load(predictor_copy).predict(PROMPTS)
    assert np.isnan(quality[:, 0]).all() and np.isfinite(quality[:, 1:]).all()


def test_weights_that_do_not_match_the_ensemble_size_are_rejected(predictor_copy, bundled_predictor):
    _mutate(predictor_copy, lambda c: c["train_config"].update(ensemble=c["train_config"]["ensemble"] + 1))
    with pytest.raises(PredictorFileError, match="ensemble"):
        Predictor.load(predictor_copy)


def test_bundled_head_reads_the_category_and_records_itself(bundled_predictor):
    dev = load_questions(bundled("mmlu_pro"), split="dev")[:300]
    probs = bundled_predictor.predict_categories([q.prompt for q in dev])
    assert probs.shape == (300, len(bundled_predictor.categories)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the general predictor's categories are "dataset:category"; an mmlu_pro model reads mmlu_pro's
    own = [i for i, c in enumerate(bundled_predictor.categories) if c.startswith("mmlu_pro:")]
    predicted = [bundled_predictor.categories[own[i]] for i in probs[:, own].argmax(1)]
    assert np.mean([p == f"mmlu_pro:{q.category}" for p, q in zip(predicted, dev)]) > 0.7
    decision = Router.from_directory(pool_names="open").route(PROMPTS[0])
    assert decision.predictor == bundled_predictor.name and math.isfinite(decision.predicted_quality)


def test_add_model_takes_soft_scores_and_rejects_bad_ones(bundled_predictor, tmp_path):
    predictor = Predictor.load(bundled_predictor.save(tmp_path / "p"))
    rows = load_questions(bundled("mmlu_pro"), split="dev")[:200]
    soft = np.array([0.9 if q.results["Meta-Llama-3_1-70B-Instruct"].correct else 0.2 for q in rows])
    for bad in (soft * 2, np.where(np.arange(200) == 3, np.nan, soft)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            predictor.add_model("judge-scored", [q.prompt for q in rows], bad)
    predictor.add_model("judge-scored", [q.prompt for q in rows], soft)
    quality = predictor.predict(PROMPTS, ["judge-scored"])
    assert ((quality > 0) & (quality < 1)).all()
    reloaded = Predictor.load(predictor.save(tmp_path / "q"))
    np.testing.assert_allclose(reloaded.predict(PROMPTS), predictor.predict(PROMPTS), rtol=1e-5)


def test_a_new_model_scored_like_a_known_one_is_predicted_like_it(bundled_predictor, tmp_path):
    """add_model starts at the known model whose predictions fit the scores best and keeps its profile."""
    predictor = Predictor.load(bundled_predictor.save(tmp_path / "p"))
    prompts = [q.prompt for q in load_questions(bundled("mmlu_pro"), split="dev")[:200]]
    twin = "Phi-3-mini-4k-instruct"
    predictor.add_model("twin", prompts, predictor.predict(prompts, [twin])[:, 0])  # soft scores
    test = [q.prompt for q in load_questions(bundled("mmlu_pro"), split="test")[:300]]
    quality = predictor.predict(test, [twin, "twin"])
    assert np.corrcoef(quality.T)[0, 1] > 0.995  # starting from zero offsets: 0.989


def test_category_head_and_lookup_table_train_on_a_slice():
    """A short training run on a slice: the head learns offsets and a classifier (not a quality claim)."""
    questions = load_questions(bundled("mmlu_pro"))
    train = [q for q in questions if split_of(q.id) == "train"][:1200]
    dev = [q for q in questions if split_of(q.id) == "dev"][:300]
    models = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-70B-Instruct"]
    y, dev_y = (Outcomes.from_questions(qs, models).correct for qs in (train, dev))
    predictor = Predictor.train(
        [q.prompt for q in train], y, models, [q.prompt for q in dev], dev_y,
        TrainConfig(ensemble=1, epochs=8, temperature_by="log_loss"), categories=[q.category for q in train],
    )
    assert predictor.categories == sorted({q.category for q in train})
    assert np.abs(predictor.networks[0].offsets.detach().numpy()).max() > 0.01
    predicted = predictor.predict_categories([q.prompt for q in dev]).argmax(1)
    accuracy = np.mean([predictor.categories[c] == q.category for c, q in zip(predicted, dev)])
    assert accuracy > 0.35  # 14 categories: chance is about 0.1
    x = {part: predictor.encoder.encode([q.prompt for q in qs]) for part, qs in (("train", train), ("dev", dev))}
    table = category_lookup_quality(x["train"], y, [q.category for q in train], x["dev"], [q.category for q in dev], x["dev"])
    assert table.shape == dev_y.shape and ((table > 0) & (table < 1)).all()


def test_lm_reader_reads_two_prompts_with_its_uncertainty():
    from routoo_shared.predictors.lm_reader import UNCERTAINTY, LMReader

    reader = LMReader(layers=(8, 30), max_length=48)
    long_prompt = "Explain the proof. " * 40 + "\nA. yes\nB. no\nAnswer:"
    ids = reader.token_ids(long_prompt)
    tokenizer = reader._load()[0]
    assert len(ids) == 48 and "Answer:" in tokenizer.decode(ids[-12:])  # head and tail kept
    reads = reader.read([PROMPTS[0], long_prompt])
    assert reads.shape == (2, 2 * 2 * 576 + len(UNCERTAINTY)) and np.isfinite(reads).all()
    mean_nll, entropy, top = reads[:, -3:].T
    assert (mean_nll > 0).all() and (entropy >= 0).all() and ((top > 0) & (top <= 1)).all()
    assert not np.allclose(reads[0, :576], reads[1, :576])
