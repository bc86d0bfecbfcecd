"""Run the two local LLMs on MMLU questions and record which they answer correctly.

The labels ship with the package, so the demo pool's predictor learns these two models with
``Predictor.add_model`` (a few hundred labelled prompts each) without running them again.
Labelling goes through ``routoo_shared.labeling`` (answer letter matched against the reference).

    python scripts/label_local_models.py [--questions 240] [--out PATH]
"""

import argparse
import json
from pathlib import Path

from langchain_routoo.local import LocalChatModel
from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.data.formats import bundled, load_questions
from routoo_shared.data.labeling import Labeler, Match
from routoo_shared.local.llm import local_pool

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=240)
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / "local_llm_labels.json")
    args = parser.parse_args()
    train = load_questions(bundled("mmlu_routellm"), split="train")
    answered = sorted((q for q in train if q.answer), key=lambda q: q.id)
    step = len(train) // args.questions  # every step-th answered question, as the shipped labels were picked
    picked = [q.model_copy(update={"results": {}}) for q in answered[::step][: args.questions]]
    pool = local_pool()
    models = {name: LocalChatModel(model=name, max_tokens=4) for name in pool.names}
    report = Labeler(pool, Match(pattern=r"\b([ABCD])\b", ignore_case=False), models=models, max_concurrency=2).label(picked)
    labels = {name: {q.id: int(q.results[name].score) for q in report.questions if name in q.results} for name in pool.names}
    for name, scores in labels.items():
        print(name, sum(scores.values()), "/", len(scores), "correct")
    args.out.write_text(json.dumps(labels, indent=0))
