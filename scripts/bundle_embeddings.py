"""Precompute the encoder's vectors for the bundled datasets and write them next to the data.

Run once after changing the prompt layout or the encoder; the package ships the result so
training on the bundled data needs no embedding pass (~10 minutes on 2 cores).
"""

from routoo_shared.datasets import BUNDLED_DIR
from routoo_shared.data.formats import load_questions
from routoo_shared.predictors.encoder import BUNDLED_EMBEDDINGS, PromptEncoder

if __name__ == "__main__":
    encoder = PromptEncoder()
    for dataset in ("mmlu_routellm", "mmlu_pro"):
        texts = [q.prompt for q in load_questions(BUNDLED_DIR / dataset / "questions.jsonl.gz")]
        encoder.encode(texts, progress=True, persist=True)
        encoder.cache.export(texts, BUNDLED_EMBEDDINGS / f"{dataset}.{encoder.name}.npz")
        print(dataset, len(texts), "vectors written")
