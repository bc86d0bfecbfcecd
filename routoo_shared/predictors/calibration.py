"""Calibration prompts for a new model: the few labels that teach the predictor the most.

``Predictor.add_model`` learns a new model's bias, difficulty slope and embedding from labelled
prompts. Which prompts are labelled matters at 25-100 labels. Three ways to choose them:

- ``strata``: the bank sorted by difficulty (the known models' mean score) and cut into n strata
  of equal size, one random question from each: stratified sampling, so the level (bias) is
  estimated without the bias of an unrepresentative pick and the slope sees the whole range;
- ``anchors``: the questions clustered and the one nearest each centre asked ("anchor points",
  Polo et al., 2024, "tinyBenchmarks: evaluating LLMs with fewer examples"), questions described
  by how the known models fared on them joined with their prompt vectors;
- ``random``.

``benchmarks/new_model_labels.py`` compares them on the dev split, each mmlu_pro model held out in
turn. At the default 100 labels ``anchors`` was best (AUC 0.691 vs 0.686 random and 0.685 strata,
log-loss 0.599 for both it and strata, 0.600 random), so it is the default; at 25-50 labels
``strata`` gives better calibrated levels (log-loss 0.644 vs 0.699 at 25) at a lower AUC.

The bank is the bundled MMLU-Pro training split: multiple-choice questions with reference
answers, so a new model's answers are graded automatically (``Match`` on the answer letter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from routoo_shared.data.formats import Outcomes, Question, bundled, load_questions

if TYPE_CHECKING:  # imported where used: selecting prompts needs neither torch nor LangChain
    from routoo_shared.predictors.encoder import PromptEncoder
    from routoo_shared.data.labeling import LabelReport
    from routoo_shared.routing.pool import ModelSpec
    from routoo_shared.predictors.predictor import Predictor

Strategy = Literal["strata", "anchors", "random"]
BANK_DATASET = "mmlu_pro"
LETTER = r"\b([A-J])\b"  # the first standalone option letter in an answer
PCA_DIMENSIONS = 32


def question_bank() -> list[Question]:
    """The bundled calibration questions: MMLU-Pro's training split (7,629 questions, 29 models' results)."""
    return load_questions(bundled(BANK_DATASET), split="train")


def describe_questions(bank: list[Question], known_models: list[str], encoder: "PromptEncoder") -> np.ndarray:
    """Questions x features: the known models' scores (missing ones at the model's mean), centred,
    joined with the prompt vectors scaled to the same total weight."""
    scores = Outcomes.from_questions(bank, known_models).correct
    means = np.nanmean(scores, axis=0)
    scores = np.where(np.isfinite(scores), scores, means) - means
    vectors = encoder.encode([q.prompt for q in bank])
    weight = np.sqrt((scores**2).sum(1).mean() / max((vectors**2).sum(1).mean(), 1e-12))
    return np.concatenate([scores, weight * vectors], axis=1)


def question_difficulty(bank: list[Question], known_models: list[str]) -> np.ndarray:
    """Each question's mean score over the known models that answered it (higher = easier)."""
    scores = Outcomes.from_questions(bank, known_models).correct
    answered = np.isfinite(scores)
    return np.where(answered, scores, 0).sum(1) / np.maximum(answered.sum(1), 1)


def select_prompts(
    features: np.ndarray, difficulty: np.ndarray, n: int, strategy: Strategy = "anchors", seed: int = 0
) -> np.ndarray:
    """Row indices of ``n`` calibration questions by ``strategy`` (see the module docstring);
    ``features`` from ``describe_questions``, ``difficulty`` from ``question_difficulty``."""
    if not 1 <= n <= len(features):
        raise ValueError(f"cannot pick {n} calibration prompts from a bank of {len(features)}")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return np.sort(rng.choice(len(features), size=n, replace=False))
    if strategy == "strata":
        strata = np.array_split(np.argsort(difficulty, kind="stable"), n)
        return np.sort(np.array([rng.choice(stratum) for stratum in strata]))
    if strategy != "anchors":
        raise ValueError(f"unknown strategy {strategy!r}; known: strata, anchors, random")
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    features = PCA(min(PCA_DIMENSIONS, *features.shape), random_state=seed).fit_transform(features)  # 40x faster k-means
    kmeans = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(features)
    own = ((features - kmeans.cluster_centers_[kmeans.labels_]) ** 2).sum(1)  # distance to its own centre
    picks = [np.flatnonzero(kmeans.labels_ == c)[own[kmeans.labels_ == c].argmin()] for c in range(n)]
    return np.sort(np.array(picks))


def calibration_questions(
    predictor: "Predictor", n: int = 100, bank: list[Question] | None = None, strategy: Strategy = "anchors", seed: int = 0
) -> list[Question]:
    """The ``n`` bank questions to label a new model on, judged by the models ``predictor`` knows."""
    bank = bank or question_bank()
    known = [m for m in predictor.models if any(m in q.results for q in bank)]
    if not known:  # a predictor of models the bank has never seen: the bank's own models
        known = sorted({m for q in bank for m in q.results})
    features = describe_questions(bank, known, predictor.encoder) if strategy == "anchors" else np.zeros((len(bank), 1))
    return [bank[i] for i in select_prompts(features, question_difficulty(bank, known), n, strategy, seed)]


def add_model_from_calibration(
    predictor: "Predictor",
    spec: "ModelSpec",
    chat_model: Any | None = None,
    n: int = 100,
    cache: str | None = None,
    max_concurrency: int = 4,
    progress: bool = True,
) -> "LabelReport":
    """Ask a new model ``n`` calibration questions, grade its answers against the reference letters
    and learn it with ``Predictor.add_model``. ``chat_model`` defaults to ``chat_model_for(spec)``.

    Returns the labelling report (cost in USD, failures). Raises ``LabelingError`` when fewer than
    20 answers could be graded (``add_model``'s minimum).
    """
    from routoo_shared.data.labeling import Labeler, LabelingError, Match
    from routoo_shared.routing.pool import ModelPool

    questions = [q.model_copy(update={"results": {}}) for q in calibration_questions(predictor, n)]
    labeler = Labeler(
        ModelPool(models=[spec]),
        Match(pattern=LETTER),
        models={spec.name: chat_model} if chat_model is not None else None,
        cache=cache,
        max_concurrency=max_concurrency,
        progress=progress,
    )
    report = labeler.label(questions)
    graded = [q for q in report.questions if spec.name in q.results]
    if len(graded) < 20:
        raise LabelingError(
            f"only {len(graded)} of {n} calibration answers of {spec.name!r} could be graded "
            f"({len(report.failures)} calls failed, e.g. {report.failures[:1]}); add_model needs at least 20"
        )
    scores = np.array([q.results[spec.name].score for q in graded], dtype=np.float32)
    predictor.add_model(spec.name, [q.prompt for q in graded], scores)
    return report
