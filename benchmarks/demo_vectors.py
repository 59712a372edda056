"""Real model vectors for the index benchmarks: the demo model's image and caption vectors.

The shipped demo model (``retrieval/models/demo``, 96 dimensions) embeds generated scenes of
coloured shapes (``retrieval.training.synthetic``): the base set is the image vectors of many
generated images, ``image`` queries are the vectors of other generated images, and ``text``
queries the vectors of their captions (one of the several true descriptions of each scene,
from the full sentence to a single attribute), as a user would type them. Rendering and
embedding cost about 2 ms an image on two cores, so the vectors are made once, a chunk at a
time, and kept as ``.npy`` files in a cache folder (outside the repository):

    python benchmarks/demo_vectors.py --n 200000 --cache /work/bench-cache
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np

CHUNK = 5000


def _embed_scenes(encoder: object, scenes: list, seeds: list[int]) -> np.ndarray:
    from retrieval.training.synthetic import render

    pixels = np.stack([np.asarray(render(s, 64, seed=seed)) for s, seed in zip(scenes, seeds,
                                                                               strict=True)])
    return encoder.embed_images(pixels)  # type: ignore[attr-defined, no-any-return]


def make(cache: Path, n: int, nq: int = 1000, seed: int = 0,
         log: bool = True) -> dict[str, np.ndarray]:
    """{"xb": n image vectors, "image": nq image vectors of other images, "text": nq caption
    vectors, "tune_image"/"tune_text": 500 more of each}, made or read from ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    base = cache / f"demo-images-{n}-s{seed}.npy"
    extra = cache / f"demo-queries-{nq}-s{seed}.npz"
    if base.exists() and extra.exists():  # made before: no model needed
        return _read(base, extra)
    from retrieval import ModelSpec, load_encoder
    from retrieval.training.synthetic import random_scene

    encoder = load_encoder(ModelSpec.parse("demo"), device="cpu")
    if not base.exists():
        part = base.with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, 96))
        t = time.perf_counter()
        for lo in range(0, n, CHUNK):
            rng = random.Random(f"{seed}-{lo}")
            m = min(CHUNK, n - lo)
            scenes = [random_scene(rng) for _ in range(m)]
            out[lo:lo + m] = _embed_scenes(encoder, scenes, [rng.randrange(2**31)
                                                             for _ in range(m)])
            if log:
                print(f"demo vectors: {lo + m}/{n} ({time.perf_counter() - t:.0f} s)",
                      flush=True)
        out.flush()
        del out
        os.replace(part, base)
    if not extra.exists():
        rng = random.Random(f"{seed}-queries")
        sets = {}
        for name, m in (("image", nq), ("text", nq), ("tune_image", 500), ("tune_text", 500)):
            scenes = [random_scene(rng) for _ in range(m)]
            if name.endswith("text"):
                texts = [rng.choice(s.captions()) for s in scenes]
                sets[name] = encoder.embed_texts(texts)
            else:
                sets[name] = _embed_scenes(encoder, scenes, [rng.randrange(2**31)
                                                             for _ in range(m)])
        np.savez(extra, **sets)
    return _read(base, extra)


def _read(base: Path, extra: Path) -> dict[str, np.ndarray]:
    return {"xb": np.load(base), **{k: np.asarray(v, np.float32)
                                    for k, v in np.load(extra).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cache", default="/work/bench-cache")
    args = ap.parse_args()
    t = time.perf_counter()
    data = make(Path(args.cache), args.n, args.queries)
    sims = {k: float(np.mean(np.max(data[k][:200] @ data["xb"][:50_000].T, axis=1)))
            for k in ("image", "text")}
    print(f"{len(data['xb'])} x {data['xb'].shape[1]} in {time.perf_counter() - t:.0f} s; "
          f"mean best cosine among 50k: image {sims['image']:.3f}, text {sims['text']:.3f}")


if __name__ == "__main__":
    main()
