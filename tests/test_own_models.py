"""Your own models: the dataset format and its errors, prices and windows, long prompts, priors,
feedback, calibration prompts, and a CLI that answers bad input in one line (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

from routoo_shared.predictors.calibration import LETTER, calibration_questions, question_bank
from routoo_shared.cli import app, printable
from routoo_shared.data.formats import Outcomes, Question, bundled, check_results, check_trainable, load_questions, write_questions
from routoo_shared.routing.models_file import DatasetError, load_pool, read_models
from routoo_shared.data.feedback import FeedbackLog
from routoo_shared.routing.messages import routing_text
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.router import Router
from routoo_shared.routing.tokens import count_tokens

ROOT = Path(__file__).resolve().parents[1]
STRONG, WEAK = "Meta-Llama-3_1-70B-Instruct", "Phi-3-mini-4k-instruct"


def sheet(path: Path, *entries: dict) -> Path:
    path.write_text(json.dumps({"models": list(entries)}))
    return path


def entry(name: str, **fields) -> dict:
    return {"name": name, "price_in_per_mtok": 1.0, "price_out_per_mtok": 2.0, "context_window": 8192, **fields}


def rows(path: Path, *items: dict) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def bundled_rows(n: int, models: list[str], soft: bool = False) -> list[dict]:
    """``n`` bundled prompts (their vectors ship with the package) with the models' real scores."""
    out = []
    for q in load_questions(bundled("mmlu_pro"), split="train")[:n]:
        results = {m: {"score": (0.25 + 0.5 * q.results[m].score) if soft else q.results[m].score,
                       "output_tokens": q.results[m].output_tokens} for m in models}
        out.append({"id": q.id, "prompt": q.prompt, "results": results})
    return out


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


# ----- the format and its errors


def test_bundled_files_read_correct_as_score(tmp_path):
    q = load_questions(bundled("mmlu_pro"))[0]
    assert set(q.results[WEAK].model_dump()) == {"score", "output_tokens", "latency_s", "answer"}
    assert q.prompt.endswith("Answer:") and q.answer and q.options
    write_questions([q], tmp_path / "one.jsonl")
    again = load_questions(tmp_path / "one.jsonl")[0]
    assert again == q and '"score"' in (tmp_path / "one.jsonl").read_text()


def test_prompts_as_text_or_messages(tmp_path):
    path = rows(
        tmp_path / "q.jsonl",
        {"id": "a", "prompt": "What is 2 + 2?", "answer": "4"},
        {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]},
        {"id": "c", "prompt": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]},
    )
    a, b, c = load_questions(path)
    assert a.conversation() == [{"role": "user", "content": "What is 2 + 2?"}]
    assert b.prompt.startswith("Capital of France?") and b.conversation()[0]["role"] == "system"
    assert c.prompt == "Hi there" and c.messages is not None


def test_unknown_key_in_models_json_names_model_field_and_guess(tmp_path):
    path = sheet(tmp_path / "models.json", entry("ok"), {**entry("typo"), "context_windw": 4096})
    with pytest.raises(DatasetError, match=r"model 'typo': unknown field 'context_windw' \(did you mean 'context_window'\?\)"):
        read_models(path)


def test_unknown_key_in_a_question_names_line_and_field(tmp_path):
    path = rows(tmp_path / "q.jsonl", {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "results": {"m": {"scroe": 1}}})
    with pytest.raises(DatasetError, match=r"line 2: .*unknown field 'results.m.scroe' \(did you mean 'score'\?\)"):
        load_questions(path)


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"id": "a", "prompt": "x", "results": {"m": {"score": 1.5}}}, r"results.m.score: Input should be less than or equal to 1"),
        ({"id": "a", "prompt": "x", "results": {"m": {"score": 1, "correct": 1}}}, "either 'score' or 'correct'"),
        ({"id": "a"}, "no prompt"),
        ({"prompt": "x"}, "id: Field required"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, problem):
    with pytest.raises(DatasetError, match=problem):
        load_questions(rows(tmp_path / "q.jsonl", row))


def test_repeated_ids_and_broken_json_are_named(tmp_path):
    with pytest.raises(DatasetError, match="line 2: id 'a' appears twice"):
        load_questions(rows(tmp_path / "q.jsonl", {"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}))
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": \n')
    with pytest.raises(DatasetError, match="bad.jsonl line 2: not JSON"):
        load_questions(tmp_path / "bad.jsonl")


def test_results_naming_models_not_in_models_json(tmp_path):
    questions = [Question(id="a", prompt="x", results={"known": {"score": 1}, "gpt-17": {"score": 0}})]
    with pytest.raises(DatasetError, match=r"not in models.json: 'gpt-17' \(1 rows\)"):
        check_results(questions, ["known"])


def test_model_without_labels_is_refused_unless_it_declares_a_prior(tmp_path):
    fit = [Question(id=f"q{i}", prompt=f"p{i}", results={"a": {"score": i % 2}}) for i in range(30)]
    dev = fit[:5]
    pool = load_pool(sheet(tmp_path / "m.json", entry("a"), entry("b")))
    with pytest.raises(DatasetError, match=r"model\(s\) \['b'\] are in models.json but have no labels"):
        check_trainable(fit, dev, pool)
    check_trainable(fit, dev, load_pool(sheet(tmp_path / "p.json", entry("a"), entry("b", prior_quality=0.6))))


def test_too_few_rows_to_train():
    few = [Question(id=f"q{i}", prompt=f"p{i}", results={"a": {"score": 1}}) for i in range(10)]
    pool = ModelPool(models=[ModelSpec(**entry("a"))])
    with pytest.raises(DatasetError, match="too few rows to train: 10 training and 10 dev questions; need at least 24"):
        check_trainable(few, few, pool)


# ----- the CLI: every command answers bad input in one line with exit status 2


def test_cli_own_models_without_models_json_is_one_line(tmp_path):
    path = rows(tmp_path / "q.jsonl", {"id": "q1", "prompt": "p", "results": {"my-model": {"score": 1}}})
    code, output = cli("train", "--train", str(path), "--dev", str(path), "--out", str(tmp_path / "p"))
    assert code == 2 and output.strip() == (
        "error: the training questions have results for model(s) not in mmlu_pro's bundled models.json "
        "(pass --models for your own models): 'my-model' (2 rows); add them to models.json or remove their results"
    )


@pytest.mark.parametrize(
    "args, problem",
    [
        (["train", "--train", "{missing}", "--models", "{models}", "--out", "{tmp}/p"], "questions file not found"),
        (["train", "--train", "{questions}", "--models", "{typo}", "--out", "{tmp}/p"], "unknown field 'context_windw'"),
        (["train", "--train", "{questions}", "--models", "{models}", "--pool", "nope", "--out", "{tmp}/p"], "unknown model(s) ['nope']"),
        (["evaluate", "--train", "{questions}", "--test", "{questions}"], "too few rows to train"),
        (["split", "--questions", "{missing}", "--out", "{tmp}/s"], "questions file not found"),
        (["label", "--prompts", "{questions}", "--models", "{models}", "--out", "{tmp}/l.jsonl", "--grader", "vibes"], "unknown --grader 'vibes'"),
        (["label", "--prompts", "{questions}", "--models", "{models}", "--out", "{tmp}/l.jsonl", "--grader", "judge"], "needs --judge"),
        (["label", "--prompts", "{questions}", "--models", "{models}", "--out", "{tmp}/l.jsonl", "--limit", "0"], "--limit must be at least 1"),
        (["add-model", "nope", "--models", "{models}", "--out", "{tmp}/a"], "unknown model(s) ['nope']"),
        (["add-model", WEAK, "--models", "{models}", "--out", "{tmp}/a", "--labels", "5"], "--labels must be 0"),
        (["add-model", "new", "--models", "{new}", "--out", "{tmp}/a", "--labels", "0"], "needs a declared prior"),
        (["route", "hi", "--predictor", "{tmp}"], "predictor file missing"),
        (["route", "hi", "--tradeoff", "-1"], "quality_cost_tradeoff: Input should be greater than or equal to 0"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, problem):
    files = {
        "tmp": str(tmp_path),
        "missing": str(tmp_path / "missing.jsonl"),
        "questions": str(rows(tmp_path / "q.jsonl", *bundled_rows(30, [WEAK]))),
        "models": str(bundled("mmlu_pro", "models.json")),
        "typo": str(sheet(tmp_path / "typo.json", {**entry(WEAK), "context_windw": 1})),
        "new": str(sheet(tmp_path / "new.json", entry("new"))),
    }
    code, output = cli(*(a.format(**files) for a in args))
    assert code == 2, output
    assert output.count("\n") == 1 and output.startswith("error: ") and problem in output


def test_cli_warns_in_one_line_once_and_never_about_a_rejected_entry(tmp_path):
    questions = str(rows(tmp_path / "q.jsonl", *bundled_rows(10, [WEAK])))
    windowless = {k: v for k, v in entry(WEAK).items() if k != "context_window"}
    misspelt = sheet(tmp_path / "typo.json", {**windowless, "context_windw": 4096})
    code, output = cli("train", "--train", questions, "--models", str(misspelt), "--out", str(tmp_path / "p"))
    assert code == 2 and output.startswith("error: ") and "warning" not in output, output

    accepted = sheet(tmp_path / "ok.json", windowless)
    code, output = cli("train", "--train", questions, "--models", str(accepted), "--out", str(tmp_path / "p"))
    warning, error = output.splitlines()
    assert code == 2 and error.startswith("error: too few rows"), output
    assert warning.startswith(f"warning: context window of model '{WEAK}' is unknown") and ".py" not in warning


def test_cli_corrupt_predictor_is_one_line(tmp_path):
    (tmp_path / "predictor.json").write_text("{not json")
    (tmp_path / "predictor.safetensors").write_bytes(b"junk")
    code, output = cli("route", "hi", "--predictor", str(tmp_path))
    assert code == 2 and output.startswith("error: corrupt predictor config") and output.count("\n") == 1


def test_cli_escapes_control_characters_from_files(tmp_path):
    evil = "\x1b]0;owned\x07model"
    labelled = [{"id": f"q{i}", "prompt": f"p{i}", "results": {evil: {"score": 1}}} for i in range(30)]
    code, output = cli("train", "--train", str(rows(tmp_path / "q.jsonl", *labelled)),
                       "--models", str(sheet(tmp_path / "m.json", entry(WEAK))), "--out", str(tmp_path / "p"))
    assert code == 2 and "\x1b" not in output and "\\x1b]0;owned\\x07model" in output
    assert printable("a\x1bb\nc") == "a\\x1bb\\nc"


def test_cli_imports_nothing_heavy():
    code = "import sys, routoo_shared.cli; print(sorted(m for m in ('torch', 'transformers', 'langchain_core', 'llama_index.core', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_cli_route_json():
    result = CliRunner().invoke(app, ["route", "What is the derivative of x^3?", "--pool", f"{WEAK},{STRONG}", "--json"])
    decision = json.loads(result.stdout)
    assert result.exit_code == 0 and decision["model"] in (WEAK, STRONG) and len(decision["candidates"]) == 2


@pytest.mark.slow
def test_cli_trains_on_soft_scores_and_declares_unlabelled_models(tmp_path):
    models = sheet(tmp_path / "m.json", entry(WEAK), entry(STRONG), entry("new-model", prior_like=STRONG))
    path = rows(tmp_path / "q.jsonl", *bundled_rows(120, [WEAK, STRONG], soft=True))
    code, output = cli("train", "--train", str(path), "--models", str(models), "--out", str(tmp_path / "p"))
    assert code == 0, output
    assert "unlabelled (routed on their declared prior): new-model" in output
    router = Router.from_directory(tmp_path / "p")
    assert router.pool.names == [WEAK, STRONG, "new-model"] and router.predictor.models == [WEAK, STRONG]
    decision = router.route("Prove that there are infinitely many primes.")
    new = decision.candidate("new-model")
    assert new.unlabelled and new.predicted_quality == pytest.approx(decision.candidate(STRONG).predicted_quality)


# ----- prices, tiers, windows, capabilities


def test_provider_prices_are_a_typical_request_and_tiers_apply_only_to_long_prompts():
    sonnet = ModelSpec(name="claude-sonnet-4-5", provider="anthropic")
    gemini = ModelSpec(name="gemini-2.5-pro", provider="google", context_window=1_048_576)
    assert (sonnet.price_in_per_mtok, sonnet.price_out_per_mtok, sonnet.context_window) == (3.0, 15.0, 200_000)
    assert (gemini.price_in_per_mtok, gemini.price_out_per_mtok) == (1.25, 10.0)
    assert sonnet.cost(1_000, 100) == pytest.approx((1_000 * 3 + 100 * 15) / 1e6)
    assert sonnet.cost(200_000, 100) == pytest.approx((200_000 * 3 + 100 * 15) / 1e6)  # at the threshold: base
    assert sonnet.cost(250_000, 100) == pytest.approx((250_000 * 6 + 100 * 22.5) / 1e6)
    assert gemini.cost(300_000, 0) == pytest.approx(300_000 * 2.5 / 1e6)
    pool = ModelPool(models=[sonnet, gemini])
    matrix = pool.cost_matrix(np.array([1_000, 250_000]))
    assert matrix[1, 0] == pytest.approx(sonnet.cost(250_000)) and matrix[0, 1] == pytest.approx(gemini.cost(1_000))


def test_context_window_comes_from_a_source_or_warns():
    assert ModelSpec(name="gpt-4o", provider="openai").context_window == 128_000
    with pytest.warns(UserWarning, match="context window of model 'mine' is unknown; assuming 8,192"):
        assert ModelSpec(name="mine", price_in_per_mtok=1, price_out_per_mtok=1).context_window == 8192


def test_spec_from_a_langchain_chat_model_reads_its_profile():
    from langchain_openai import ChatOpenAI

    spec = ModelSpec.from_chat_model(ChatOpenAI(model="gpt-4o-mini", api_key="unused"))
    assert (spec.name, spec.provider, spec.price_in_per_mtok, spec.price_out_per_mtok) == ("gpt-4o-mini", "openai", 0.15, 0.6)
    assert spec.context_window == 128_000 and spec.max_output_tokens == 16_384
    assert spec.supports_tools and spec.supports_structured_output


# ----- long prompts


CONTEXT = " ".join(
    f"Section {i}. The {['north', 'south', 'east', 'west'][i % 4]} warehouse shipped {37 * i % 500} crates of "
    f"{['apples', 'steel bolts', 'printer paper', 'vaccines'][i % 4]} in week {i % 52}." for i in range(160)
)


def test_rag_prompts_keep_the_question_and_the_start_of_the_context():
    arithmetic = f"Context:\n{CONTEXT}\n\nQuestion: How many crates did the north warehouse ship in week 12? Show the calculation."
    poem = f"Context:\n{CONTEXT}\n\nQuestion: Write a sonnet about the printer paper."
    text = routing_text(arithmetic)
    assert text.startswith("Context:\nSection 0.") and text.endswith("Show the calculation.")
    assert routing_text(poem).endswith("sonnet about the printer paper.") and count_tokens(text) < 200
    assert routing_text("What is 2 + 2?") == "What is 2 + 2?"  # short prompts are read whole, as in training
    conversation = [{"role": "system", "content": f"Answer from this context:\n{CONTEXT}"},
                    {"role": "user", "content": "Which warehouse shipped vaccines?"}]
    assert routing_text(conversation).startswith("Which warehouse shipped vaccines?")


def test_two_questions_after_the_same_long_context_get_different_predictions():
    router = Router.from_directory(pool_names="open")
    maths = f"{CONTEXT}\n\nQuestion: compute the derivative of x^3 sin(x) and integrate it from 0 to pi."
    law = f"{CONTEXT}\n\nQuestion: which legal doctrine lets a court void a contract signed under duress?"
    assert router.route(maths).input_tokens > 2_400
    first, second = (np.array([c.predicted_quality for c in router.route(p).candidates]) for p in (maths, law))
    assert np.abs(first - second).max() > 0.01


def test_a_message_with_only_an_image_routes_on_empty_text():
    router = Router.from_directory(pool_names=[WEAK, STRONG])
    decision = router.route([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])
    assert decision.model in (WEAK, STRONG)


# ----- priors, feedback, calibration


def test_unlabelled_models_route_on_their_prior():
    bundled_router = Router.from_directory(pool_names=[WEAK])
    pool = ModelPool(models=[
        bundled_router.pool[WEAK],
        ModelSpec(name="brand-new", price_in_per_mtok=0.01, price_out_per_mtok=0.01, context_window=8192, prior_quality=0.99),
    ])
    decision = Router(pool, bundled_router.predictor).route("What is the derivative of x^3?")
    assert decision.model == "brand-new" and decision.candidate("brand-new").unlabelled
    assert not decision.candidate(WEAK).unlabelled and "prior quality (unlabelled) 0.99" in decision.explain()
    with pytest.raises(KeyError, match="prior_like names model"):
        Router(ModelPool(models=[ModelSpec(**entry("x", prior_like="gpt-17"))]), bundled_router.predictor)
    with pytest.raises(ValueError, match="not both"):
        ModelSpec(**entry("x", prior_like=WEAK, prior_quality=0.5))


def test_feedback_rows_are_a_dataset_that_training_accepts(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.record("What is 2 + 2?", WEAK, thumbs_up=True, output_tokens=3)
    log.record([{"role": "user", "content": "Summarise the memo."}], STRONG, score=0.75, latency_s=1.5)
    reply = AIMessage(content="4", response_metadata={"routoo": {"answered_by": WEAK}},
                      usage_metadata={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6})
    log.record_response("And 3 + 3?", reply, thumbs_up=False)
    first, second, third = log.read()
    assert first.results[WEAK].score == 1.0 and second.results[STRONG].score == 0.75 and second.messages
    assert third.results[WEAK].score == 0.0 and third.results[WEAK].output_tokens == 1
    with pytest.raises(ValueError, match="exactly one"):
        log.record("x", WEAK)
    with pytest.raises(ValueError, match="no Routoo decision"):
        log.record_response("x", AIMessage(content="y"), score=1)
    check_results(log.read(), load_pool(bundled("mmlu_pro", "models.json")).names)
    scores = Outcomes.from_questions(log.read(), [WEAK, STRONG]).correct
    assert scores[1, 1] == 0.75 and np.isnan(scores[0, 1])


def test_calibration_prompts_are_distinct_and_gradable():
    bank = question_bank()
    predictor = Router.from_directory(pool_names=[WEAK]).predictor
    chosen = calibration_questions(predictor, 25, bank)
    assert len({q.id for q in chosen}) == 25 and all(q.answer and len(q.answer) == 1 for q in chosen)
    assert calibration_questions(predictor, 25, bank) == chosen  # deterministic
    import re

    assert re.search(LETTER, "The answer is C.").group(1) == "C"


def test_strata_cover_the_difficulty_range_evenly():
    from routoo_shared.predictors.calibration import select_prompts

    difficulty = np.random.default_rng(0).random(1000)
    picks = select_prompts(np.zeros((1000, 1)), difficulty, 10, "strata")
    ranks = np.sort(np.argsort(np.argsort(difficulty))[picks])  # each pick's rank by difficulty
    assert all(100 * i <= rank < 100 * (i + 1) for i, rank in enumerate(ranks))  # one from each tenth
    with pytest.raises(ValueError, match="cannot pick 0"):
        select_prompts(np.zeros((5, 1)), difficulty[:5], 0)


def test_add_model_from_calibration_asks_grades_and_learns(tmp_path):
    from langchain_core.language_models import GenericFakeChatModel

    from routoo_shared.predictors.calibration import add_model_from_calibration
    from routoo_shared.predictors.predictor import Predictor
    from routoo_shared.routing.router import BUNDLED_PREDICTOR

    predictor = Predictor.load(BUNDLED_PREDICTOR)
    always_c = GenericFakeChatModel(messages=iter([AIMessage(content="The answer is C.")] * 30))
    spec = ModelSpec(**entry("always-c"))
    report = add_model_from_calibration(predictor, spec, always_c, n=30, cache=str(tmp_path / "c.jsonl"), progress=False)
    asked = [q for q in report.questions if "always-c" in q.results]
    assert len(asked) == 30 and {q.results["always-c"].score for q in asked} == {float(q.answer == "C") for q in asked}
    assert predictor.models[-1] == "always-c" and predictor.predict(["What is 2 + 2?"], ["always-c"]).shape == (1, 1)


def test_cli_add_model_on_a_declared_prior(tmp_path):
    models = sheet(tmp_path / "m.json", entry("newcomer", prior_like=STRONG))
    code, output = cli("add-model", "newcomer", "--models", str(models), "--out", str(tmp_path / "p"), "--labels", "0")
    assert code == 0, output
    router = Router.from_directory(tmp_path / "p", pool_names=[WEAK, "newcomer"])
    assert router.route("Prove Fermat's little theorem.").candidate("newcomer").unlabelled
