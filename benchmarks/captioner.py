"""The demo captioner on fresh images: beam search against top-k sampling, and against a baseline
captioner, on the same images in one run.

Each row captions the same ``--n`` freshly generated images (seed 20261130, never used for
training) and reports the share of one-object images whose colour and shape words are right,
the share of two-object images with both objects right, corpus BLEU-4 (with NLTK installed)
and the time per image. Times depend on the machine's load: compare the rows of one run.

    python benchmarks/captioner.py
    # against the captioner shipped before the 30-epoch recipe (a model folder from git):
    mkdir -p /tmp/oldcap && for f in open_clip_config.json open_clip_model.safetensors; do
        git show 54b7639:retrieval/models/demo-captioner/$f > /tmp/oldcap/$f; done
    python benchmarks/captioner.py --baseline local-dir:/tmp/oldcap
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from retrieval.encoders.generation import GenerationOptions
from retrieval.training.demo_captioner import evaluate_captions


def rows(model: str, baseline: str | None, n: int) -> list[tuple[str, Any]]:
    runs: list[tuple[str, str, GenerationOptions | None]] = []
    if baseline:
        runs.append((f"{baseline}, beam search", baseline, None))
    runs += [(f"{model}, beam search (default)", model, None),
             (f"{model}, top_k", model, GenerationOptions("top_k"))]
    return [(name, evaluate_captions(spec, n=n, options=opts)) for name, spec, opts in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-captioner")
    ap.add_argument("--baseline", default=None, help="another captioner to compare with")
    ap.add_argument("--n", type=int, default=400, help="fresh images")
    ap.add_argument("--json", default=None, help="also write the reports here")
    args = ap.parse_args()
    results = rows(args.model, args.baseline, args.n)
    beam = next(r.seconds_per_image for name, r in results if name.endswith("(default)"))
    for name, r in results:
        print(f"{name:48s} one-object {r.one_object_correct:.3f} (shape "
              f"{r.one_object_shape:.3f}) two-object {r.two_object_correct:.3f} BLEU-4 "
              f"{r.bleu4} {r.seconds_per_image:.3f} s/image ({r.seconds_per_image / beam:.2f}x "
              "the default)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: asdict(r) for name, r in results}, f, indent=1)


if __name__ == "__main__":
    main()
