"""Run the two local LLMs on MMLU questions and record which they answer correctly.

The labels ship with the package, so the demo pool's predictor learns these two models with
``Predictor.add_model`` (a few hundred labelled prompts each) without running them again.
"""

import json
import re

from routoo_shared.data import BUNDLED_DIR, bundled, load_questions
from routoo_shared.local_llm import LOCAL_MODELS, LocalLLM

QUESTIONS = 240

if __name__ == "__main__":
    rows = {q.id: q for q in load_questions(bundled("mmlu_routellm"), split="train")}
    raw = [json.loads(line) for line in __import__("gzip").open(bundled("mmlu_routellm"), "rt")]
    answers = {r["id"]: r["answer"] for r in raw if r["answer"]}
    picked = [rows[i] for i in sorted(rows) if i in answers][:: len(rows) // QUESTIONS][:QUESTIONS]
    labels = {}
    for name in LOCAL_MODELS:
        llm = LocalLLM(name, max_new_tokens=4)
        labels[name] = {}
        for question in picked:
            reply = llm.generate([{"role": "user", "content": question.prompt}])
            letter = re.search(r"\b([ABCD])\b", reply)
            labels[name][question.id] = int(bool(letter) and letter.group(1) == answers[question.id])
        print(name, sum(labels[name].values()), "/", len(picked), "correct")
    (BUNDLED_DIR / "local_llm_labels.json").write_text(json.dumps(labels, indent=0))
