"""Regenerate the LM reader's vectors for the bundled datasets (``routoo_shared/predictors/lm_reader.py``).

Two steps, run in order:

    python scripts/read_bundled_prompts.py read --raw-dir RAW [--split train,dev] [--dataset mmlu_pro]
    python scripts/read_bundled_prompts.py export --raw-dir RAW

``read`` runs SmolLM2-135M-Instruct over every prompt and stores the raw reads of the candidate
layers (float16, chunks of 256 questions; an interrupted run resumes where it stopped). It is the
slow part: about 0.7 CPU-seconds a prompt (MMLU-Pro prompts truncated to 128 tokens, one thread),
i.e. hours for both datasets; split it across processes with ``--split``/``--dataset``. ``export`` keeps
the reader's chosen layers, fits the projection on the training split's reads, and writes the
projected float16 vectors of every question read so far, and the projection, next to the MiniLM
vectors in ``routoo_shared/datasets/embeddings/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from routoo_shared.data.formats import bundled, load_questions, split_of
from routoo_shared.predictors.lm_reader import UNCERTAINTY, LMReader, ReaderEncoder, fit_projection

CANDIDATE_LAYERS = (4, 8, 12, 16, 20, 24, 30)
DATASETS = ("mmlu_pro", "mmlu_routellm")
CHUNK = 256


def read(raw_dir: Path, datasets: list[str], splits: list[str], stride: int = 1, offset: int = 0) -> None:
    """Raw reads of every ``stride``-th chunk from ``offset`` (processes with other offsets share the work)."""
    reader = LMReader(layers=CANDIDATE_LAYERS, max_length=ReaderEncoder.max_length)
    for dataset in datasets:
        questions = [q for q in load_questions(bundled(dataset)) if split_of(q.id) in splits]
        for split in splits:
            part = [q for q in questions if split_of(q.id) == split]
            for start in range(CHUNK * offset, len(part), CHUNK * stride):
                path = raw_dir / dataset / f"{split}_{start // CHUNK:04d}.npz"
                if path.exists():
                    continue
                chunk = part[start : start + CHUNK]
                vectors = reader.read([q.prompt for q in chunk]).astype(np.float16)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path.with_suffix(".tmp.npz"), ids=np.array([q.id for q in chunk]), vectors=vectors)
                path.with_suffix(".tmp.npz").replace(path)
                print(f"{dataset} {split} {start + len(chunk)}/{len(part)}", flush=True)


def raw_reads(raw_dir: Path, dataset: str, layers: tuple[int, ...], hidden: int) -> dict[str, np.ndarray]:
    """id -> raw read restricted to ``layers`` (float32), from the chunks ``read`` wrote."""
    columns = np.concatenate(
        [np.arange(i * 2 * hidden, (i + 1) * 2 * hidden) for i, layer in enumerate(CANDIDATE_LAYERS) if layer in layers]
        + [np.arange(len(CANDIDATE_LAYERS) * 2 * hidden, len(CANDIDATE_LAYERS) * 2 * hidden + len(UNCERTAINTY))]
    )
    out = {}
    for path in sorted((raw_dir / dataset).glob("*_[0-9][0-9][0-9][0-9].npz")):
        with np.load(path) as archive:
            out.update(zip(archive["ids"].tolist(), archive["vectors"][:, columns].astype(np.float32)))
    return out


def export(raw_dir: Path) -> None:
    """Project and bundle every question read so far (the projection is fitted on the training split's reads)."""
    encoder = ReaderEncoder()
    reads, texts = {}, {}
    for dataset in DATASETS:
        questions = load_questions(bundled(dataset))
        reads[dataset] = raw_reads(raw_dir, dataset, encoder.reader.layers, hidden=576)
        texts[dataset] = {q.id: q.prompt for q in questions}
        print(f"{dataset}: {len(reads[dataset])} of {len(questions)} questions read")
    train = np.stack([v for d in DATASETS for i, v in reads[d].items() if split_of(i) == "train"])
    fit_projection(train, encoder.components).save(encoder.projection_path)
    for dataset in DATASETS:
        ids = sorted(reads[dataset])
        if not ids:
            continue
        vectors = encoder.projection(np.stack([reads[dataset][i] for i in ids]))
        for i, vector in zip(ids, vectors):
            encoder.cache.put(texts[dataset][i], vector)
        encoder.cache.export([texts[dataset][i] for i in ids], encoder.bundled_path(dataset))
        print(dataset, len(ids), "vectors written to", encoder.bundled_path(dataset))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("read", "export"))
    parser.add_argument("--raw-dir", type=Path, required=True)
    parser.add_argument("--dataset", default=",".join(DATASETS))
    parser.add_argument("--split", default="train,dev,test")
    parser.add_argument("--stride", type=int, default=1, help="with --offset: this process reads chunks offset, offset+stride, ...")
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    if args.step == "read":
        read(args.raw_dir, args.dataset.split(","), args.split.split(","), args.stride, args.offset)
    else:
        export(args.raw_dir)
