"""Retrieval quality through the full engine, next to brute-force exact scoring, same model.

On freshly generated held-out images with captions (``retrieval.training.synthetic``), measures
text-to-image recall@1/5/10 (each caption should find its image) and image-to-text recall@1/5/10
(each image should find its caption) twice in one run:

* engine: ``retrieval index`` the folder (captions come in as sidecars), then
  ``Collection.search`` per query, exactly as users do;
* exact: embed the same images and captions with the same encoder and rank by brute force.

and prints both and their ratio (engine / exact; >= 0.99 expected while the index is exact).
Also prints the demo-model quality bar (attribute precision@10, image-to-text accuracy).

    python benchmarks/quality.py                      # the shipped demo model
    python benchmarks/quality.py --model local-dir:/path/to/model --n 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

KS = (1, 5, 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--n", type=int, default=500, help="held-out images")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from retrieval import Collection
    from retrieval.media import load_image
    from retrieval.training.demo import IMAGE_SIZE, evaluate_quality
    from retrieval.training.model import retrieval_recall
    from retrieval.training.synthetic import read_scenes, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "held-out"
        write_dataset(folder, args.n, seed=args.seed, size=IMAGE_SIZE)
        scenes = read_scenes(folder)
        paths = sorted(scenes)
        captions = [Path(p).with_suffix(".txt").read_text().strip() for p in paths]

        col = Collection(Path(tmp) / "collection", model=args.model)
        t0 = time.perf_counter()
        col.index([folder])
        index_s = time.perf_counter() - t0

        # Engine: every query goes through Collection.search.
        t0 = time.perf_counter()
        engine: dict[str, float] = {}
        kmax = max(KS)
        t2i_ranks, i2t_ranks = [], []
        for path, caption in zip(paths, captions, strict=True):
            hits = col.search(caption, k=kmax)
            t2i_ranks.append(next((r for r, h in enumerate(hits) if h.path == path), kmax))
            hits = col.search(image=path, target="texts", k=kmax)
            i2t_ranks.append(next((r for r, h in enumerate(hits) if h.path == path), kmax))
        for k in KS:
            engine[f"t2i_r@{k}"] = float(np.mean(np.asarray(t2i_ranks) < k))
            engine[f"i2t_r@{k}"] = float(np.mean(np.asarray(i2t_ranks) < k))
        search_s = time.perf_counter() - t0

        # Exact: the same encoder, brute-force scores over everything.
        enc = col.encoder
        pixels = np.stack([load_image(p, enc.image_spec)[0] for p in paths])
        img = enc.embed_images(pixels)
        txt = enc.embed_texts(captions)
        exact = retrieval_recall(img, txt, np.arange(len(paths)), KS)

        print(f"model {args.model}: {args.n} held-out images, indexed in {index_s:.1f}s, "
              f"{2 * args.n} queries through the engine in {search_s:.1f}s")
        print(f"{'metric':<10} {'engine':>8} {'exact':>8} {'ratio':>7}")
        ratios = {}
        for key in sorted(engine, key=lambda s: (s[:3], int(s.split('@')[1]))):
            ratios[key] = engine[key] / exact[key] if exact[key] else float("nan")
            print(f"{key:<10} {engine[key]:>8.3f} {exact[key]:>8.3f} {ratios[key]:>7.3f}")
        worst = min(ratios.values())
        print(f"lowest ratio engine / exact: {worst:.3f} (expected >= 0.99 with an exact index)")

        reports = evaluate_quality(args.model, work=Path(tmp) / "quality",
                                   languages=("en", "zh"))
        for lang, report in reports.items():
            print(f"[{lang}] attribute queries, precision@10: two attributes "
                  f"{report.two_attribute_precision:.3f} (min {report.two_attribute_min:.1f}), "
                  "one attribute "
                  f"{report.one_attribute_precision:.3f} (min {report.one_attribute_min:.1f}); "
                  f"image-to-text accuracy {report.image_to_text_accuracy:.3f} "
                  f"({report.images} fresh images)")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({
                "model": args.model, "n": args.n, "engine": engine, "exact": exact,
                "ratios": ratios, "quality": {lang: {
                    "two_attribute_precision": r.two_attribute_precision,
                    "one_attribute_precision": r.one_attribute_precision,
                    "image_to_text_accuracy": r.image_to_text_accuracy}
                    for lang, r in reports.items()}}, indent=1))

if __name__ == "__main__":
    main()
