"""The ``routoo`` command: label, train, add models, route and evaluate, on the bundled data or your own.

Bad input (a missing or corrupt file, an unknown model, an out-of-range value) prints one line
naming the problem and exits with status 2; text from files is printed with control characters
escaped. Heavy libraries (torch, transformers, LangChain) load only in the commands that use them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)

DatasetOption = Annotated[str, typer.Option(help="bundled dataset used where no file is given: mmlu_pro, mmlu_routellm, reasoning_mix, task_mix, routellm_gsm8k or arena_bench")]
PoolOption = Annotated[Optional[str], typer.Option(help="comma-separated model names (aliases resolve: gpt-4o-mini); 'open' = mmlu_pro's open-weight models; with the bundled predictor, a dataset's name = its models")]
ModelsOption = Annotated[Optional[Path], typer.Option(help="models.json: the pool's models and prices (required with your own data)")]
RepresentationOption = Annotated[
    str, typer.Option(help="prompt representation: static (MiniLM distilled, fastest), minilm or lm-reader (SmolLM2 hidden states, slowest)")
]
PredictorOption = Annotated[Optional[Path], typer.Option(help="trained predictor folder (default: the bundled general predictor)")]
TradeoffOption = Annotated[float, typer.Option(help="quality given up per unit of the priciest model's cost")]
MaxCostOption = Annotated[Optional[float], typer.Option(help="USD ceiling per query")]
MinQualityOption = Annotated[Optional[float], typer.Option(help="cheapest model predicted at least this good")]
MaxLatencyOption = Annotated[Optional[float], typer.Option(help="seconds")]
DenyOption = Annotated[Optional[str], typer.Option(help="comma-separated models to exclude")]
EngineOption = Annotated[str, typer.Option(help="local (this process; needs no Ray) or ray (Ray Data actors; RAY_ADDRESS joins a cluster)")]
WorkersOption = Annotated[int, typer.Option(help="--engine ray: worker actors, one CPU each (a local cluster gets one more CPU for reads)")]
EXIT_BAD_INPUT = 2


@app.callback()
def _one_line_warnings() -> None:
    """Warnings print as one ``warning: ...`` line each, once, without Python source lines."""
    import warnings

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = "warning: " + " ".join(str(message).split())
        if text not in shown:
            shown.add(text)
            say(text, err=True)

    warnings.showwarning = show


def printable(text: str) -> str:
    """``text`` with control characters (escape sequences, bells, newlines) shown as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def say(text: str = "", err: bool = False) -> None:
    """Echo ``text`` line by line with control characters escaped (names come from files)."""
    typer.echo("\n".join(printable(line) for line in text.split("\n")), err=err)


def _settings(tradeoff: float, max_cost: Optional[float], min_quality: Optional[float], max_latency: Optional[float],
              deny: Optional[str]):
    """Routing constraints from the command line; bad values fail here, before the predictor loads."""
    from routoo_shared.routing.selector import Constraints

    return Constraints().merged(
        quality_cost_tradeoff=tradeoff, max_cost_per_query=max_cost, min_quality=min_quality,
        max_latency_s=max_latency, denied_models=deny.split(",") if deny else None,
    )


def _encode_on(engine: str, workers: int, encoders: list, questions: list) -> None:
    """``--engine ray``: the prompts each encoder's cache lacks, embedded on Ray Data first (then read
    from the cache); nothing to do on the local engine, which embeds as it trains."""
    from routoo_shared.batch.engines import engine_named

    chosen = engine_named(engine, workers)  # an unknown engine fails here, before any training
    if chosen.name == "local":
        return
    from routoo_shared.batch.encoding import encode_into_cache

    for encoder in encoders:
        count = encode_into_cache(encoder, [q.prompt for q in questions], chosen)
        say(f"embedded {count} prompts on {engine} ({encoder.name})", err=True)


def _one_line(error: BaseException) -> str:
    from pydantic import ValidationError

    from routoo_shared.data.formats import describe

    if isinstance(error, ValidationError):
        return describe(error)
    if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
        return error.args[0]
    return str(error) or type(error).__name__


def friendly(command: Callable) -> Callable:
    """Run ``command``; bad input (``ValueError`` incl. validation errors, ``KeyError``, ``LookupError``,
    ``OSError``) prints ``error: <one line>`` and exits with status 2 instead of a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, LookupError, OSError) as error:
            say(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return run


# ----- shared loading


def _questions(path: Optional[Path], dataset: str, split: str):
    """A file as given, or the bundled dataset's split (deterministic by id)."""
    from routoo_shared.data.formats import bundled, load_questions

    return load_questions(path) if path else load_questions(bundled(dataset), split=split)


def _train_and_dev(train: Optional[Path], dev: Optional[Path], dataset: str):
    """Training questions and dev questions; without --dev, dev is carved from --train by id."""
    return _train_files(str(train) if train else None, dev, dataset, [], [])


def _train_files(train: Optional[str], dev: Optional[Path], dataset: str, test_questions: list, names: list[str]):
    """``evaluate``'s training and dev questions from one file or several (comma-separated);
    without --dev, dev is carved from them by id.

    Questions that are test questions (same id or same prompt text) are left out. From several
    files (a router trained on some datasets, tested on another), only the results of the pool
    sheet's ``names`` are kept, and rows with none of them are dropped; an id in two files is an error.
    """
    from routoo_shared.data.formats import DatasetError, carve_dev, load_questions

    files = [Path(part.strip()) for part in train.split(",") if part.strip()] if train else []
    rows, seen = [], {}
    for path in files:
        for question in load_questions(path):
            if question.id in seen:
                raise DatasetError(f"question id {question.id!r} is in both {seen[question.id]} and {path}")
            seen[question.id] = path
            if len(files) > 1:
                question = question.model_copy(update={"results": {m: r for m, r in question.results.items() if m in names}})
            if question.results or len(files) == 1:
                rows.append(question)
    test_ids, test_prompts = {q.id for q in test_questions}, {q.prompt for q in test_questions}
    rows = [q for q in (rows if files else _questions(None, dataset, "train")) if q.id not in test_ids and q.prompt not in test_prompts]
    return carve_dev(rows) if files and dev is None else (rows, _questions(dev, dataset, "dev"))


def _sheet(models: Optional[Path], dataset: str, questions: list, source: str = "the questions") -> Path:
    """The models.json to use (``--models``, else the bundled dataset's), checked against ``questions``."""
    from routoo_shared.data.formats import bundled, check_results
    from routoo_shared.routing.models_file import read_models

    sheet = models or bundled(dataset, "models.json")
    described = "models.json" if models else f"{dataset}'s bundled models.json (pass --models for your own models)"
    check_results(questions, read_models(sheet).names, source=source, sheet=described)
    return sheet


def _pool(sheet: Path, pool: Optional[str]):
    from routoo_shared.routing.models_file import load_pool, pool_names, read_models

    return load_pool(sheet, pool_names(pool, read_models(sheet).names))


@app.command()
@friendly
def split(
    out: Annotated[Path, typer.Option(help="folder for train/dev/test .jsonl.gz")],
    questions: Annotated[Optional[Path], typer.Option(help="questions file (default: the bundled dataset)")] = None,
    dataset: DatasetOption = "mmlu_pro",
) -> None:
    """Write the deterministic train/dev/test split (by a hash of each id) as three files."""
    from routoo_shared.data.formats import SPLITS, bundled, load_questions, split_of, write_questions

    rows = load_questions(questions or bundled(dataset))
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        part = [q for q in rows if split_of(q.id) == name]
        write_questions(part, out / f"{name}.jsonl.gz")
        say(f"{name}: {len(part)} questions -> {out / f'{name}.jsonl.gz'}")


@app.command()
@friendly
def train(
    out: Annotated[Path, typer.Option(help="folder to save the predictor and its pool in")],
    train: Annotated[Optional[Path], typer.Option(help="training questions (default: bundled train split)")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="dev questions for early stopping and calibration")] = None,
    models: ModelsOption = None,
    dataset: DatasetOption = "mmlu_pro",
    pool: PoolOption = None,
    representation: RepresentationOption = "static",
    engine: EngineOption = "local",
    workers: WorkersOption = 2,
) -> None:
    """Train the performance predictor on scores in [0, 1] and report its dev-split quality per model.

    Models declared with a prior (prior_quality / prior_like) and no labels join the saved pool unlabelled.
    """
    from routoo_shared.data.formats import Outcomes, check_trainable
    from routoo_shared.routing.pool import ModelPool

    fit, held = _train_and_dev(train, dev, dataset)
    sheet = _sheet(models, dataset, fit + held, source="the training questions")
    model_pool = _pool(sheet, pool)
    check_trainable(fit, held, model_pool)  # every input is checked before torch loads
    from routoo_shared.evaluation.harness import make_encoder, train_head, with_expected_output

    labelled = {name for q in fit for name in q.results}
    learned = with_expected_output(ModelPool(models=[m for m in model_pool.models if m.name in labelled]), fit)
    names = learned.names
    dev_scores = Outcomes.from_questions(held, names).correct
    encoder = make_encoder(representation)
    _encode_on(engine, workers, [encoder], fit + held)
    predictor = train_head(learned, fit, held, encoder=encoder)
    predictor.save(out)
    saved = ModelPool(models=[next((m for m in learned.models if m.name == s.name), s) for s in model_pool.models])
    (out / "pool.json").write_text(saved.model_dump_json(indent=1))
    report = predictor.report([q.prompt for q in held], dev_scores)
    say(f"{'model (dev split)':32s} {'log-loss':>8s} {'AUC':>6s} {'Brier':>6s} {'ECE':>6s}")
    for name, row in report.items():
        say(f"{name:32s} {row['log_loss']:8.4f} {row['auc']:6.3f} {row['brier']:6.3f} {row['ece']:6.3f}")
    unlabelled = [m.name for m in model_pool.models if m.name not in labelled]
    if unlabelled:
        say(f"unlabelled (routed on their declared prior): {', '.join(unlabelled)}")
    say(f"saved to {out} (temperature {predictor.temperature:.2f})")


@app.command()
@friendly
def route(
    prompt: Annotated[str, typer.Argument(help="the prompt to route")],
    predictor: PredictorOption = None,
    pool: PoolOption = None,
    tradeoff: TradeoffOption = 0.0,
    max_cost: MaxCostOption = None,
    min_quality: MinQualityOption = None,
    max_latency: MaxLatencyOption = None,
    deny: DenyOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the decision as JSON")] = False,
) -> None:
    """Print the routing decision table for one prompt (or the decision as JSON)."""
    from routoo_shared.routing.router import Router

    settings = _settings(tradeoff, max_cost, min_quality, max_latency, deny)
    router = Router.from_directory(predictor, pool_names=pool)
    decision = router.route(prompt, **settings.model_dump(exclude_defaults=True))
    if json_out:
        typer.echo(decision.model_dump_json(indent=1))  # JSON escapes control characters itself
        return
    say(f"chosen: {decision.explain()}  [{decision.input_tokens} input tokens; predictor {decision.predictor}]")
    say(f"{'rank':>4s} {'model':32s} {'P(correct)':>10s} {'USD/1k calls':>12s}  excluded by")
    for rank, candidate in enumerate(decision.candidates, 1):
        flag = " (prior)" if candidate.unlabelled else ""
        say(
            f"{rank:4d} {candidate.model + flag:32s} {candidate.predicted_quality:10.3f} "
            f"{candidate.estimated_cost_usd * 1000:12.4f}  {candidate.excluded_by or ''}"
        )


@app.command("route-batch")
@friendly
def route_batch(
    prompts: Annotated[Path, typer.Argument(help="JSONL, one {\"prompt\": \"...\", \"id\": ...} a line (id optional)")],
    out: Annotated[Path, typer.Option(help="JSONL of decisions, one a prompt, in the prompts' order")],
    budget_usd: Annotated[Optional[float], typer.Option(help="total USD for the whole file, planned together: the decisions' estimated cost stays within it")] = None,
    engine: EngineOption = "local",
    workers: WorkersOption = 2,
    predictor: PredictorOption = None,
    pool: PoolOption = None,
    tradeoff: TradeoffOption = 0.0,
    max_cost: MaxCostOption = None,
    min_quality: MinQualityOption = None,
    max_latency: MaxLatencyOption = None,
    deny: DenyOption = None,
) -> None:
    """Route every prompt of a file (streamed in batches), or plan them all under one budget."""
    from routoo_shared.batch.engines import engine_named
    from routoo_shared.batch.route_batch import route_batch as run

    settings = _settings(tradeoff, max_cost, min_quality, max_latency, deny)
    summary = run(prompts, out, engine_named(engine, workers), budget_usd, str(predictor) if predictor else None,
                  pool, **settings.model_dump(exclude_defaults=True))
    say(json.dumps(summary, indent=1))


@app.command()
@friendly
def evaluate(
    train: Annotated[Optional[str], typer.Option(
        help="training questions: a file, or several comma-separated (only the pool's results are read from them; "
        "default: bundled train split)")] = None,
    test: Annotated[Optional[Path], typer.Option(help="test questions (default: bundled test split)")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="dev questions (default: carved from --train by id)")] = None,
    models: ModelsOption = None,
    dataset: DatasetOption = "mmlu_pro",
    pool: PoolOption = None,
    predictor: Annotated[Optional[Path], typer.Option(help="use this trained predictor instead of training one")] = None,
    reference: Annotated[Optional[str], typer.Option(help="comma-separated models to compare against in the table")] = None,
    points: Annotated[int, typer.Option(min=20, help="operating points per router curve")] = 40,
    representations: Annotated[
        Optional[str], typer.Option(help="comma-separated: static, minilm, lm-reader (default: the predictor's, else static)")
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples for the AIQ intervals")] = 1000,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the report as JSON here")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", help="write the accuracy/cost PNG here")] = None,
    engine: EngineOption = "local",
    workers: WorkersOption = 2,
) -> None:
    """Train Routoo and the baselines, trace cost/accuracy curves on the test split, print the table."""
    from routoo_shared.data.formats import check_trainable

    from routoo_shared.routing.models_file import read_models

    test_questions = _questions(test, dataset, "test")
    several = train is not None and "," in train
    sheet = _sheet(models, dataset, test_questions) if several else None
    fit, held = _train_files(train, dev, dataset, test_questions, read_models(sheet).names if sheet else [])
    sheet = sheet or _sheet(models, dataset, fit + held + test_questions)
    model_pool = _pool(sheet, pool)
    if predictor is None:
        check_trainable(fit, held, model_pool)
    references = reference.split(",") if reference else []
    for name in references:
        model_pool[name]  # unknown reference -> clear KeyError before any training
    from routoo_shared.evaluation.harness import Evaluation, format_table, make_encoder, plot
    from routoo_shared.predictors.predictor import Predictor

    evaluation = Evaluation(
        model_pool, fit, held, test_questions, predictor=Predictor.load(predictor) if predictor else None, points=points,
        representations=representations.split(",") if representations else None, bootstrap=bootstrap,
    )
    _encode_on(engine, workers, [make_encoder(r) for r in evaluation.representations], fit + held + test_questions)
    report = evaluation.run(reference_models=references)
    say(format_table(report, evaluation.extras, references))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.model_dump_json(indent=1))
        say(f"\nJSON: {json_out}")
    if plot_out:
        plot_out.parent.mkdir(parents=True, exist_ok=True)
        plot(report, str(plot_out), title=f"{dataset}: {len(model_pool)} models, {evaluation.extras.test_questions} test questions")
        say(f"plot: {plot_out}")


@app.command()
@friendly
def label(
    prompts: Annotated[Path, typer.Option(help="questions file: prompts (text or messages), optional reference 'answer'")],
    models: Annotated[Path, typer.Option(help="models.json of the pool to label (provider + name, or provider 'local')")],
    out: Annotated[Path, typer.Option(help="labelled questions file to write (.jsonl or .jsonl.gz)")],
    pool: PoolOption = None,
    grader: Annotated[str, typer.Option(help="match (reference answer), judge (LLM judge, 1-5 rubric) or pairwise (vs --reference-model)")] = "match",
    pattern: Annotated[Optional[str], typer.Option(help="match: compare the first group of this regex in the answer, e.g. '\\b([A-D])\\b'")] = None,
    judge: Annotated[Optional[str], typer.Option(help="judge/pairwise: the judging model, an entry of --models")] = None,
    reference_model: Annotated[Optional[str], typer.Option(help="the answer to judge against where a prompt has no reference, and pairwise's opponent (default: priciest)")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="answer cache, JSONL (default: OUT.cache.jsonl): an interrupted run resumes")] = None,
    concurrency: Annotated[int, typer.Option(help="calls in flight at once")] = 4,
    retries: Annotated[int, typer.Option(help="retries of a failed call (exponential back-off)")] = 2,
    limit: Annotated[Optional[int], typer.Option(help="label only the first N prompts")] = None,
) -> None:
    """Run every pool model on the prompts, grade the answers and write the dataset 'routoo train' reads."""
    from routoo_shared.data.formats import load_questions, write_questions
    from routoo_shared.routing.models_file import load_pool
    from routoo_shared.data.labeling import Judge, Labeler, LLMJudge, Match, PairwisePreference, chat_model_for

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    rows = load_questions(prompts)[:limit]
    model_pool = _pool(models, pool)
    if grader == "match":
        chosen = Match(pattern=pattern)
    elif grader in ("judge", "pairwise"):
        if judge is None:
            raise ValueError(f"--grader {grader} needs --judge: a model of {models}")
        spec = load_pool(models, [judge]).models[0]
        judging = Judge(model=chat_model_for(spec), name=judge, spec=spec)
        chosen = LLMJudge(judge=judging) if grader == "judge" else PairwisePreference(judge=judging)
    else:
        raise ValueError(f"unknown --grader {grader!r}; use match, judge or pairwise")
    labeler = Labeler(
        model_pool, chosen, reference_model=reference_model, cache=cache or out.with_name(out.name + ".cache.jsonl"),
        max_concurrency=concurrency, max_retries=retries,
    )
    report = labeler.label(rows)
    write_questions(report.questions, out)
    say(f"labelled {len(rows)} prompts x {len(model_pool)} models -> {out}")
    say(f"calls: {report.new_calls} made, {report.cached_calls} from the cache; ungraded answers: {report.ungraded}")
    for name, usd in sorted(report.cost_usd.items()):
        say(f"  spent {usd:.6f} USD on {name}")
    say(f"  total {report.total_cost_usd:.6f} USD this run")
    for failure in report.failures[:10]:
        say(f"  failed: {failure}")
    if report.failures:
        say(f"{len(report.failures)} calls failed after retries; run the same command again to retry them")
    say(f"next: routoo train --train {out} --models {models} --out PREDICTOR_DIR")


@app.command()
@friendly
def models(
    predictor: Annotated[Optional[Path], typer.Option(help="trained predictor folder (default: the bundled general predictor)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the list as JSON")] = False,
) -> None:
    """List the models a predictor knows: the datasets and label counts behind each, and their other names."""
    from routoo_shared.predictors.predictor import Predictor
    from routoo_shared.routing.known_models import aliases_of
    from routoo_shared.routing.router import BUNDLED_PREDICTOR

    folder = predictor or BUNDLED_PREDICTOR
    known = Predictor.load(folder).models
    facts_file = folder / "known_models.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    rows = {m: {"datasets": facts.get(m, {}).get("datasets", {}), "aliases": facts.get(m, {}).get("aliases", aliases_of(m))}
            for m in known}
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    say(f"{len(known)} models known to {folder}")
    say(f"{'model':34s} {'labels':>7s}  {'datasets (labels)':44s} also known as")
    for name, row in rows.items():
        datasets = ", ".join(f"{d} {n:,}" for d, n in row["datasets"].items()) or "-"
        say(f"{name:34s} {sum(row['datasets'].values()):7,d}  {datasets:44s} {', '.join(row['aliases'])}")


@app.command("add-model")
@friendly
def add_model(
    name: Annotated[str, typer.Argument(help="the new model: an entry of --models")],
    models: Annotated[Path, typer.Option(help="models.json with the new model's entry (provider + name, or provider 'local')")],
    out: Annotated[Path, typer.Option(help="folder for the predictor and pool with the new model")],
    predictor: Annotated[Optional[Path], typer.Option(help="trained predictor folder (default: the bundled general predictor)")] = None,
    labels: Annotated[int, typer.Option(help="calibration questions to ask it (0: join on its declared prior)")] = 100,
    cache: Annotated[Optional[Path], typer.Option(help="answer cache, JSONL: an interrupted run resumes")] = None,
    concurrency: Annotated[int, typer.Option(help="calls in flight at once")] = 4,
) -> None:
    """Add a model to a trained predictor from a few automatically graded calibration questions."""
    from routoo_shared.routing.models_file import load_pool
    from routoo_shared.routing.pool import ModelPool
    from routoo_shared.predictors.errors import PredictorFileError
    from routoo_shared.predictors.predictor import Predictor
    from routoo_shared.routing.router import BUNDLED_PREDICTOR

    if labels != 0 and labels < 20:
        raise ValueError(f"--labels must be 0 (declared prior) or at least 20, got {labels}")
    spec = load_pool(models, [name]).models[0]
    source = predictor or BUNDLED_PREDICTOR
    pool_file = source / "pool.json"
    if not pool_file.exists():
        raise PredictorFileError(f"no pool.json next to the predictor in {source}")
    existing = ModelPool.model_validate_json(pool_file.read_text())
    if name in existing.names:
        raise ValueError(f"model {name!r} is already in {pool_file}")
    trained = Predictor.load(source)
    if labels == 0:
        if not spec.has_prior:
            raise ValueError(f"--labels 0 needs a declared prior: give {name!r} prior_quality or prior_like in {models}")
        if spec.prior_like and spec.prior_like not in trained.models:
            raise KeyError(f"prior_like {spec.prior_like!r} is not a model the predictor knows: {trained.models}")
    else:
        from routoo_shared.predictors.calibration import add_model_from_calibration

        report = add_model_from_calibration(trained, spec, n=labels, cache=str(cache) if cache else None, max_concurrency=concurrency)
        graded = [q.results[name] for q in report.questions if name in q.results]
        spec = spec.model_copy(update={"expected_output_tokens": sum(r.output_tokens or 0 for r in graded) / len(graded)})
        say(f"{name}: {len(graded)} graded answers, mean score {sum(r.score for r in graded) / len(graded):.3f}, "
            f"spent {report.total_cost_usd:.6f} USD ({report.cached_calls} answers from the cache)")
    trained.save(out)
    (out / "pool.json").write_text(ModelPool(models=existing.models + [spec]).model_dump_json(indent=1))
    say(f"saved to {out}: {len(existing) + 1} models" + (" (the new one unlabelled, on its prior)" if labels == 0 else ""))


@app.command("build-pool")
@friendly
def build_pool(
    k: Annotated[int, typer.Option(min=1, help="at most this many models in the pool")] = 5,
    max_price: Annotated[Optional[float], typer.Option(help="leave out models priced above this (USD per 1M tokens, input or output)")] = None,
    universe: Annotated[Optional[str], typer.Option(help="comma-separated candidate models; 'open' = mmlu_pro's open-weight models (default: all)")] = None,
    train: Annotated[Optional[Path], typer.Option(help="training questions (default: bundled train split)")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="dev questions the pool is chosen on (default: carved from --train by id)")] = None,
    test: Annotated[Optional[Path], typer.Option(help="test questions whose AIQ is shown per step, never used to choose")] = None,
    models: Annotated[Optional[Path], typer.Option(help="models.json price sheet")] = None,
    dataset: DatasetOption = "mmlu_pro",
    predictor: Annotated[Optional[Path], typer.Option(help="trained predictor folder that knows every universe model (default: train one)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the construction as JSON here")] = None,
) -> None:
    """Choose the pool of at most k models that maximises the router's dev AIQ (greedy forward selection)."""
    from routoo_shared.data.formats import load_questions
    from routoo_shared.evaluation.harness import train_head, with_expected_output
    from routoo_shared.evaluation.pool_construction import build_pool as construct, format_construction
    from routoo_shared.predictors.predictor import Predictor

    fit, held = _train_and_dev(train, dev, dataset)
    test_questions = load_questions(test) if test else None
    sheet = _sheet(models, dataset, fit + held + (test_questions or []))
    candidates = _pool(sheet, universe)
    trained = Predictor.load(predictor) if predictor else train_head(with_expected_output(candidates, fit), fit, held)
    construction = construct(candidates, fit, held, trained, k, max_price, test_questions)
    say(format_construction(construction))
    say(f"pool: {','.join(construction.pool)}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(construction.model_dump_json(indent=1))
        say(f"JSON: {json_out}")


@app.command()
@friendly
def serve(
    config: Annotated[Optional[Path], typer.Option(help="routoo.yaml: pool, presets, keys, limits")] = None,
    pool: Annotated[Optional[str], typer.Option(help="'local': serve the two bundled local LLMs (no key, offline)")] = None,
    host: Annotated[str, typer.Option(help="address to bind; another than loopback needs keys in the config")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes (more than one needs --store)")] = 1,
    store: Annotated[Optional[str], typer.Option(help="redis://host:port/db: keys' budgets and models' cooldowns shared by every worker and host")] = None,
) -> None:
    """Serve the OpenAI API (POST /v1/chat/completions, GET /v1/models, /health, /metrics), routing every call."""
    from routoo_shared.server.app import serve as run
    from routoo_shared.server.config import ServerConfig

    if config is None and pool is None:
        raise ValueError("give --config routoo.yaml, or --pool local")
    if pool not in (None, "local"):
        raise ValueError(f"--pool takes 'local' (the bundled local LLMs), got {pool!r}; put other pools in --config")
    loaded = ServerConfig.load(config) if config else ServerConfig()
    run(loaded.model_copy(update={"pool": "local"}) if pool else loaded, host, port, workers, store)


keys_app = typer.Typer(help="API keys of 'routoo serve', kept in the config as SHA-256 digests", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
@friendly
def keys_add(
    name: Annotated[str, typer.Argument(help="the key's name (in metrics and records; letters, digits, _.-)")],
    config: Annotated[Path, typer.Option(help="routoo.yaml to add the key to (created if missing)")] = Path("routoo.yaml"),
    budget_usd: Annotated[Optional[float], typer.Option(help="USD this key may spend (none: no budget)")] = None,
    renew: Annotated[Optional[str], typer.Option(help="'daily': a fresh budget every UTC day")] = None,
    rpm: Annotated[Optional[int], typer.Option(help="requests per minute")] = None,
    models: Annotated[Optional[str], typer.Option(help="comma-separated pool models the key may use (default: all)")] = None,
    presets: Annotated[Optional[str], typer.Option(help="comma-separated model values such as routoo,routoo/cheap (default: all)")] = None,
) -> None:
    """Add an API key; its secret is printed once and stored nowhere."""
    from routoo_shared.server.keys import add_key

    secret = add_key(config, name, budget_usd=budget_usd, renew=renew, requests_per_minute=rpm,
                     allowed_models=models.split(",") if models else None, allowed_presets=presets.split(",") if presets else None)
    say(f"added key {name!r} to {config} (its SHA-256 only). The key, shown once:", err=True)
    typer.echo(secret)


if __name__ == "__main__":
    app()
