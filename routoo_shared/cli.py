"""The ``routoo`` command: split, train, route and evaluate on the bundled data or your own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from routoo_shared.data import SPLITS, Question, bundled, carve_dev, load_questions, pool_names, split_of, write_questions
from routoo_shared.pool import ModelPool

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

DatasetOption = Annotated[str, typer.Option(help="bundled dataset used where no file is given: mmlu_pro or mmlu_routellm")]
PoolOption = Annotated[Optional[str], typer.Option(help="comma-separated model names; 'open' = mmlu_pro's open-weight models")]
RepresentationOption = Annotated[
    str, typer.Option(help="prompt representation: minilm (fast) or lm-reader (SmolLM2 hidden states, slower)")
]


def _questions(path: Optional[Path], dataset: str, split: str) -> list[Question]:
    """A file as given, or the bundled dataset's split (deterministic by id)."""
    return load_questions(path) if path else load_questions(bundled(dataset), split=split)


def _train_and_dev(train: Optional[Path], dev: Optional[Path], dataset: str, exclude: set[str] = frozenset()):
    """Training questions and dev questions; without --dev, dev is carved from --train by id."""
    if train and not dev:
        return carve_dev([q for q in load_questions(train) if q.id not in exclude])
    fit = [q for q in _questions(train, dataset, "train") if q.id not in exclude]
    return fit, _questions(dev, dataset, "dev")


def _pool(models: Optional[Path], dataset: str, pool: Optional[str]) -> ModelPool:
    sheet = models or bundled(dataset, "models.json")
    available = [m["name"] for m in json.loads(Path(sheet).read_text())["models"]]
    return ModelPool.from_models_json(sheet, pool_names(pool, available))


@app.command()
def split(
    out: Annotated[Path, typer.Option(help="folder for train/dev/test .jsonl.gz")],
    questions: Annotated[Optional[Path], typer.Option(help="questions file (default: the bundled dataset)")] = None,
    dataset: DatasetOption = "mmlu_pro",
) -> None:
    """Write the deterministic train/dev/test split (by a hash of each id) as three files."""
    rows = load_questions(questions or bundled(dataset))
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        part = [q for q in rows if split_of(q.id) == name]
        write_questions(part, out / f"{name}.jsonl.gz")
        typer.echo(f"{name}: {len(part)} questions -> {out / f'{name}.jsonl.gz'}")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="folder to save the predictor and its pool in")],
    train: Annotated[Optional[Path], typer.Option(help="training questions (default: bundled train split)")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="dev questions for early stopping and calibration")] = None,
    models: Annotated[Optional[Path], typer.Option(help="models.json price sheet")] = None,
    dataset: DatasetOption = "mmlu_pro",
    pool: PoolOption = None,
    representation: RepresentationOption = "minilm",
) -> None:
    """Train the performance predictor and report its dev-split quality per model."""
    from routoo_shared.data import Outcomes
    from routoo_shared.evaluation import make_encoder, train_head, with_expected_output

    fit, held = _train_and_dev(train, dev, dataset)
    model_pool = with_expected_output(_pool(models, dataset, pool), fit)
    predictor = train_head(model_pool, fit, held, encoder=make_encoder(representation))
    predictor.save(out)
    (out / "pool.json").write_text(model_pool.model_dump_json(indent=1))
    report = predictor.report([q.prompt for q in held], Outcomes.from_questions(held, model_pool.names).correct)
    typer.echo(f"{'model (dev split)':32s} {'log-loss':>8s} {'AUC':>6s} {'Brier':>6s} {'ECE':>6s}")
    for name, row in report.items():
        typer.echo(f"{name:32s} {row['log_loss']:8.4f} {row['auc']:6.3f} {row['brier']:6.3f} {row['ece']:6.3f}")
    typer.echo(f"saved to {out} (temperature {predictor.temperature:.2f})")


@app.command()
def route(
    prompt: Annotated[str, typer.Argument(help="the prompt to route")],
    predictor: Annotated[Optional[Path], typer.Option(help="trained predictor folder (default: bundled mmlu_pro)")] = None,
    pool: PoolOption = None,
    tradeoff: Annotated[float, typer.Option(help="quality given up per unit of the priciest model's cost")] = 0.0,
    max_cost: Annotated[Optional[float], typer.Option(help="USD ceiling per query")] = None,
    min_quality: Annotated[Optional[float], typer.Option(help="cheapest model predicted at least this good")] = None,
    max_latency: Annotated[Optional[float], typer.Option(help="seconds")] = None,
    deny: Annotated[Optional[str], typer.Option(help="comma-separated models to exclude")] = None,
) -> None:
    """Print the routing decision table for one prompt."""
    from routoo_shared.router import Router

    router = Router.from_directory(predictor, pool_names=pool)
    decision = router.route(
        prompt,
        quality_cost_tradeoff=tradeoff,
        max_cost_per_query=max_cost,
        min_quality=min_quality,
        max_latency_s=max_latency,
        denied_models=deny.split(",") if deny else None,
    )
    typer.echo(f"chosen: {decision.explain()}  [{decision.input_tokens} input tokens; predictor {decision.predictor}]")
    typer.echo(f"{'rank':>4s} {'model':32s} {'P(correct)':>10s} {'USD/1k calls':>12s}  excluded by")
    for rank, candidate in enumerate(decision.candidates, 1):
        typer.echo(
            f"{rank:4d} {candidate.model:32s} {candidate.predicted_quality:10.3f} "
            f"{candidate.estimated_cost_usd * 1000:12.4f}  {candidate.excluded_by or ''}"
        )


@app.command()
def evaluate(
    train: Annotated[Optional[Path], typer.Option(help="training questions (default: bundled train split)")] = None,
    test: Annotated[Optional[Path], typer.Option(help="test questions (default: bundled test split)")] = None,
    dev: Annotated[Optional[Path], typer.Option(help="dev questions (default: carved from --train by id)")] = None,
    models: Annotated[Optional[Path], typer.Option(help="models.json price sheet")] = None,
    dataset: DatasetOption = "mmlu_pro",
    pool: PoolOption = None,
    predictor: Annotated[Optional[Path], typer.Option(help="use this trained predictor instead of training one")] = None,
    reference: Annotated[Optional[str], typer.Option(help="comma-separated models to compare against in the table")] = None,
    points: Annotated[int, typer.Option(min=20, help="operating points per router curve")] = 40,
    representations: Annotated[
        Optional[str], typer.Option(help="comma-separated: minilm, lm-reader (default: the predictor's, else minilm)")
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples for the AIQ intervals")] = 1000,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the report as JSON here")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", help="write the accuracy/cost PNG here")] = None,
) -> None:
    """Train Routoo and the baselines, trace cost/accuracy curves on the test split, print the table."""
    from routoo_shared.evaluation import Evaluation, format_table, plot
    from routoo_shared.predictor import Predictor

    test_questions = _questions(test, dataset, "test")
    fit, held = _train_and_dev(train, dev, dataset, exclude={q.id for q in test_questions})
    model_pool = _pool(models, dataset, pool)
    references = reference.split(",") if reference else []
    for name in references:
        model_pool[name]  # unknown reference -> clear KeyError before any training
    evaluation = Evaluation(
        model_pool, fit, held, test_questions, predictor=Predictor.load(predictor) if predictor else None, points=points,
        representations=representations.split(",") if representations else None, bootstrap=bootstrap,
    )
    report = evaluation.run(reference_models=references)
    typer.echo(format_table(report, evaluation.extras, references))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(report.model_dump_json(indent=1))
        typer.echo(f"\nJSON: {json_out}")
    if plot_out:
        plot_out.parent.mkdir(parents=True, exist_ok=True)
        plot(report, str(plot_out), title=f"{dataset}: {len(model_pool)} models, {evaluation.extras.test_questions} test questions")
        typer.echo(f"plot: {plot_out}")


@app.command("build-pool")
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
    from routoo_shared.data import Outcomes
    from routoo_shared.pool_construction import build_pool as construct, format_construction
    from routoo_shared.predictor import Predictor

    fit, held = _train_and_dev(train, dev, dataset)
    candidates = _pool(models, dataset, universe)
    if predictor:
        trained = Predictor.load(predictor)
    else:
        trained = Predictor.train(
            [q.prompt for q in fit], Outcomes.from_questions(fit, candidates.names).correct, candidates.names,
            [q.prompt for q in held], Outcomes.from_questions(held, candidates.names).correct,
        )
    test_questions = load_questions(test) if test else None
    construction = construct(candidates, fit, held, trained, k, max_price, test_questions)
    typer.echo(format_construction(construction))
    typer.echo(f"pool: {','.join(construction.pool)}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(construction.model_dump_json(indent=1))
        typer.echo(f"JSON: {json_out}")


if __name__ == "__main__":
    app()
