"""Throughput of the whole ``index`` pipeline against the model's bare forward pass.

Generates photo-sized JPEGs (1-4 MP, with texture so they compress like photos), then in the
same process measures:

* model: images/s of the image tower on already-decoded, already-resized uint8 batches;
* pipeline: images/s of ``Collection.index`` on the JPEG folder (scan, hash, decode in worker
  processes, preprocess, embed, commit to the catalog, build the index).

and prints the ratio pipeline / model. Random weights are fine for speed.

    python benchmarks/embed_throughput.py              # ViT-B-32, 256 images, 3 rounds
    python benchmarks/embed_throughput.py --n 64 --model ViT-B-32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, n: int, seed: int = 0) -> int:
    """Write n JPEGs of 1-4 megapixels; returns total bytes."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    sizes = [(1280, 960), (1600, 1200), (2048, 1536), (2304, 1728)]  # 1.2 - 4.0 MP
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    base_noise = rng.integers(0, 256, size=(1728, 2304, 3), dtype=np.uint8)
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        if i % 3 == 0:
            w, h = h, w  # some portrait photos
        c = rng.integers(0, 200, size=(2, 3)).astype(np.float32)
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        gradient = (c[0] * (1 - t) + c[1] * t).astype(np.uint8)  # (1, w, 3)
        noise = base_noise[:h, :w] if h <= 1728 and w <= 2304 else base_noise[:w, :h].swapaxes(0, 1)
        img = gradient + noise // 5  # photo-like texture: compresses to ~0.5 MB/MP
        pil = Image.fromarray(img)
        draw = ImageDraw.Draw(pil)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(20, min(w, h) // 3))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r),
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        pil = pil.filter(ImageFilter.GaussianBlur(0.6))
        path = folder / f"photo_{i:04d}.jpg"
        pil.save(path, quality=90)
        total += path.stat().st_size
    return total


def bare_model_rate(encoder, batch_size: int, batches: int) -> float:
    h, w = encoder.image_spec.size
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(batch_size, h, w, 3), dtype=np.uint8)
    encoder.embed_images(x)  # warm-up at the measured batch shape (kernel selection)
    start = time.perf_counter()
    for _ in range(batches):
        encoder.embed_images(x)
    return batch_size * batches / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="number of JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default auto)")
    ap.add_argument("--rounds", type=int, default=3, help="pipeline/model alternations")
    ap.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = ap.parse_args()

    from retrieval import Collection, ModelSpec, load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        nbytes = make_photos(tmp_path / "photos", args.n)
        print(f"generated {args.n} JPEGs (1.2-4.0 MP, {nbytes / args.n / 1e6:.2f} MB average) "
              f"in {time.perf_counter() - t0:.1f}s")

        encoder = load_encoder(ModelSpec(args.model, None), "cpu")
        import torch

        print(f"model {args.model} (random weights), torch threads {torch.get_num_threads()}, "
              f"cpus {os.cpu_count()}")
        batches = max(2, args.n // args.batch_size)  # as many images as the pipeline embeds
        before = bare_model_rate(encoder, args.batch_size, batches)
        print(f"model forward on decoded tensors: {before:.2f} images/s")

        # Alternate the two measurements so that drift in machine speed hits both alike.
        model_rates, pipeline_rates = [before], []
        for r in range(args.rounds):
            col = Collection(tmp_path / f"collection{r}", encoder=encoder)
            start = time.perf_counter()
            summary = col.index([tmp_path / "photos"], batch_size=args.batch_size,
                                workers=args.workers)
            elapsed = time.perf_counter() - start
            col.close()
            assert summary.embedded == args.n and summary.failed == 0, summary
            pipeline_rates.append(args.n / elapsed)
            model_rates.append(bare_model_rate(encoder, args.batch_size, batches))
            print(f"round {r + 1}: index pipeline (scan+hash+decode+embed+commit+index) "
                  f"{pipeline_rates[-1]:.2f} images/s ({elapsed:.1f}s for {args.n}); "
                  f"model {model_rates[-1]:.2f} images/s")
        # Each round's pipeline rate is compared with the model runs just before and after it.
        ratios = [p / ((a + b) / 2) for p, a, b in
                  zip(pipeline_rates, model_rates, model_rates[1:], strict=False)]
        model_rate = statistics.median(model_rates)
        pipeline_rate = statistics.median(pipeline_rates)
        ratio = statistics.median(ratios)
        print(f"median model {model_rate:.2f} images/s, median pipeline {pipeline_rate:.2f} "
              f"images/s; per-round ratios {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"ratio pipeline / model (median of rounds): {ratio:.3f} (target >= 0.9)")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({
                "model": args.model, "n": args.n, "model_images_per_s": model_rate,
                "pipeline_images_per_s": pipeline_rate, "ratio": ratio, "round_ratios": ratios,
            }, indent=1))


if __name__ == "__main__":
    main()
