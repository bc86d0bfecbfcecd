"""Copy the routing datasets into the package, validated, and write their prompt vectors.

    python scripts/bundle_datasets.py [--source ../shared/data] [--datasets reasoning_mix,task_mix]

Each dataset's ``questions.jsonl.gz`` and ``models.json`` are copied byte for byte into
``routoo_shared/datasets/<name>/`` after they pass the format's checks (every result names a listed
model, scores in [0, 1]); then the MiniLM vectors of every bundled prompt are computed (cached, so
only new prompts are encoded: ~50 ms a prompt on 2 cores) and written as float16 to
``routoo_shared/datasets/embeddings/<name>.all-MiniLM-L6-v2-256.npz``. Sources and licences:
``routoo_shared/datasets/ATTRIBUTION.md``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from routoo_shared.data import check_results, read_models, read_questions
from routoo_shared.datasets import BUNDLED_DATASETS, BUNDLED_DIR
from routoo_shared.predictors.encoder import BUNDLED_EMBEDDINGS, PromptEncoder

FILES = ("questions.jsonl.gz", "models.json")


def copy_validated(source: Path, name: str) -> None:
    questions, sheet = read_questions(source / FILES[0]), read_models(source / FILES[1])
    check_results(questions, sheet.names, str(source / FILES[0]), str(source / FILES[1]))
    (BUNDLED_DIR / name).mkdir(exist_ok=True)
    for file in FILES:
        shutil.copyfile(source / file, BUNDLED_DIR / name / file)
    print(f"{name}: {len(questions)} questions x {len(sheet.names)} models copied")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="folder of dataset folders (default: vectors only)")
    parser.add_argument("--datasets", default=",".join(BUNDLED_DATASETS))
    args = parser.parse_args()
    encoder = PromptEncoder()
    for name in args.datasets.split(","):
        if args.source:
            copy_validated(args.source / name, name)
        texts = [q.prompt for q in read_questions(BUNDLED_DIR / name / FILES[0])]
        encoder.encode(texts, progress=True, persist=True)
        encoder.cache.export(texts, BUNDLED_EMBEDDINGS / f"{name}.{encoder.name}.npz")
        print(f"{name}: {len(set(texts))} prompt vectors written")


if __name__ == "__main__":
    main()
