"""The bundled general predictor: every bundled model known, one registry of names, no torch on a call."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from routoo_shared.cli import app
from routoo_shared.predictors.predictor import Predictor
from routoo_shared.predictors.static_encoder import StaticEncoder
from routoo_shared.routing.known_models import canonical, resolve
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router

PROMPTS = ["What is the derivative of x^3?", "Janet's ducks lay 16 eggs per day. How many dozen is that in a week?"]


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load(BUNDLED_PREDICTOR)


def test_registry_names_one_model_however_it_is_spelt():
    known = ["Meta-Llama-3_1-70B-Instruct", "gpt-4o-mini-2024-07-18", "Mixtral-8x7B-Instruct-v0.1"]
    assert resolve("Meta-Llama-3.1-70B-Instruct", known) == "Meta-Llama-3_1-70B-Instruct"
    assert resolve("meta-llama/Meta-Llama-3.1-70B-Instruct", known) == "Meta-Llama-3_1-70B-Instruct"
    assert resolve("gpt-4o-mini", known) == "gpt-4o-mini-2024-07-18"
    assert resolve("mistralai/Mixtral-8x7B-Instruct-v0.1", known) == "Mixtral-8x7B-Instruct-v0.1"
    assert resolve("gpt-4o-2024-05-13", known) is None  # a dated snapshot is its own model
    assert canonical("llama-3.1-8b-instruct") == "Meta-Llama-3_1-8B-Instruct"


def test_a_provider_pool_is_predicted_from_real_labels(predictor):
    pool = ModelPool(models=[
        ModelSpec(name="gpt-4o-mini", provider="openai"),
        ModelSpec(name="my-sonnet", provider="anthropic", provider_model="claude-3-5-sonnet-20241022"),
    ])
    router = Router(pool, predictor)
    decision = router.route(PROMPTS[1])
    assert not any(c.unlabelled for c in decision.candidates)
    expected = predictor.predict(PROMPTS[1:], ["gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20241022"])[0]
    assert [decision.candidate(n).predicted_quality for n in pool.names] == pytest.approx(expected.tolist())
    with pytest.raises(KeyError, match="no labels"):
        Router(ModelPool(models=[ModelSpec(name="gpt-17", provider="openai", price_in_per_mtok=1, price_out_per_mtok=1)]), predictor)


def test_pools_keep_the_callers_names_and_read_their_datasets_columns(predictor):
    router = Router.from_directory(pool_names=["Meta-Llama-3.1-70B-Instruct", "Meta-Llama-3_1-8B-Instruct"])
    assert router.pool.names == ["Meta-Llama-3.1-70B-Instruct", "Meta-Llama-3_1-8B-Instruct"]
    assert len(Router.from_directory().pool) == 29 and len(Router.from_directory(pool_names="open").pool) == 24
    reasoning = Router.from_directory(pool_names="reasoning_mix").pool.names
    assert "claude-3-5-sonnet-20241022" in reasoning and len(reasoning) == 28
    # a pool measured together on one dataset is read on that dataset's columns
    both = predictor.predict(PROMPTS, ["Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"])
    probabilities, categories = predictor.column_probabilities(predictor.inputs(PROMPTS))
    shared = [j for j, d in enumerate(predictor.column_datasets) if d in ("mmlu_routellm", "routellm_gsm8k")]
    assert np.isfinite(both).all() and len(shared) == 4 and ((both > 0) & (both < 1)).all()


def test_routoo_models_lists_datasets_and_label_counts():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    known = json.loads(result.output)
    assert known["Mixtral-8x7B-Instruct-v0.1"]["datasets"]["mmlu_pro"] > 1000
    assert {"mmlu_pro", "reasoning_mix"} <= set(known["Meta-Llama-3_1-70B-Instruct"]["datasets"])
    assert "Meta-Llama-3.1-70B-Instruct" in known["Meta-Llama-3_1-70B-Instruct"]["aliases"]
    assert "gpt-4o-mini" in known["gpt-4o-mini-2024-07-18"]["aliases"]
    table = CliRunner().invoke(app, ["models"]).output
    assert "claude-3-5-sonnet-20241022" in table and "reasoning_mix" in table


def test_numpy_head_computes_what_the_torch_network_does(predictor):
    import torch

    x = predictor.inputs(PROMPTS)
    with torch.no_grad():
        torch_logits = torch.stack([n(torch.from_numpy(x)) for n in predictor.networks]).mean(0).numpy()
    probabilities, _ = predictor.column_probabilities(x)
    np.testing.assert_allclose(probabilities, torch.sigmoid(torch.from_numpy(torch_logits) / predictor.temperature).numpy(), atol=1e-5)


def test_static_encoder_gives_model2vecs_vectors():
    model2vec = pytest.importorskip("model2vec")
    encoder = StaticEncoder()
    reference = model2vec.StaticModel.from_pretrained(str(encoder.directory)).encode(PROMPTS + ["naïve café 東京"])
    np.testing.assert_allclose(encoder.encode(PROMPTS + ["naïve café 東京"]), reference, atol=2e-3)


def test_routing_in_a_fresh_process_loads_no_torch():
    script = (
        "import sys\n"
        "from routoo_shared.router import Router\n"
        "Router.from_directory(pool_names='open').route('What is the derivative of x^3?')\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'routing loaded torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
