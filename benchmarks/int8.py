"""What ``--precision int8`` keeps: agreement of the int8 export with full precision.

For two models, embeds the same images and texts with the fp32 and int8 variants of the model's
ONNX export (the int8 text tower only where it held up at export; otherwise an int8 collection
embeds texts at full precision too) and reports:

* cosine between each int8 vector and its fp32 vector (mean and minimum), per tower;
* demo model, 500 fresh held-out images with their captions: text-to-image and image-to-text
  recall@1/5/10 with fp32 vectors and with int8 vectors, and the change in points;
* ViT-B-32 with random weights (seeded), 200 photo-like JPEGs and 200 captions: there is no
  ground truth for random weights, so recall@10 of the int8 ranking against the fp32 ranking
  (text-to-image and image-to-image), the share of the fp32 top 10 that int8 finds.

    python benchmarks/int8.py
    python benchmarks/int8.py --json int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KS = (1, 5, 10)


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, axis=1)
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}


def recall(queries: np.ndarray, items: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of queries whose true item is in the top k (truth: index of the item)."""
    top = np.argsort(-(queries @ items.T), axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(truth, top, strict=True)]))


def overlap(q_a: np.ndarray, x_a: np.ndarray, q_b: np.ndarray, x_b: np.ndarray, k: int) -> float:
    """Recall@k of ranking b against ranking a (a's top k as the truth)."""
    top_a = np.argsort(-(q_a @ x_a.T), axis=1)[:, :k]
    top_b = np.argsort(-(q_b @ x_b.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b, strict=True)]))


def encoders(spec: str) -> tuple:
    from retrieval import ModelSpec, load_encoder
    from retrieval.encoders.export import export_model
    from retrieval.encoders.runtime import OnnxEncoder

    export = export_model(load_encoder(ModelSpec.parse(*spec.split("@")), "cpu"), int8=True)
    assert export.ok, export.reason
    return OnnxEncoder(export, "fp32"), OnnxEncoder(export, "int8"), export


def demo_report(tmp: Path, n: int) -> dict:
    from retrieval.media import load_image
    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import read_scenes, write_dataset

    full, quant, export = encoders("demo")
    folder = tmp / "held-out"
    write_dataset(folder, n, seed=4242, size=IMAGE_SIZE)
    paths = sorted(read_scenes(folder))
    captions = [Path(p).with_suffix(".txt").read_text().strip() for p in paths]
    pixels = np.stack([load_image(p, full.image_spec)[0] for p in paths])
    out = {"text_tower_int8": export.manifest["variants"]["int8"]["text"] is not None}
    vec = {}
    for name, enc in (("fp32", full), ("int8", quant)):
        vec[name] = (enc.embed_images(pixels), enc.embed_texts(captions))
    out["image"] = agreement(vec["int8"][0], vec["fp32"][0])
    out["text"] = agreement(vec["int8"][1], vec["fp32"][1])
    truth = np.arange(len(paths))
    for name, (img, txt) in vec.items():
        for k in KS:
            out[f"{name}_t2i_r@{k}"] = recall(txt, img, truth, k)
            out[f"{name}_i2t_r@{k}"] = recall(img, txt, truth, k)
    return out


def vitb32_report(tmp: Path) -> dict:
    import torch

    from retrieval.media import load_image
    from retrieval.training.synthetic import random_scene, render

    ckpt = tmp / "vitb32-random.pt"
    subprocess.run([sys.executable, "-c",
                    "import sys, torch, open_clip; torch.manual_seed(0); torch.save("
                    "open_clip.create_model('ViT-B-32').state_dict(), sys.argv[1])", ckpt],
                   check=True, capture_output=True)
    del torch
    full, quant, export = encoders(f"ViT-B-32@{ckpt}")
    photos = tmp / "photos"
    subprocess.run([sys.executable, HERE.parent.parent / "shared" / "peers" / "clip-retrieval" /
                    "gen_imgs.py", photos, "200", "3"], check=True, capture_output=True)
    paths = sorted(photos.glob("*.jpg"))
    import random

    rng = random.Random(0)
    captions = [random_scene(rng).caption() for _ in range(200)]
    del render
    pixels = np.stack([load_image(p, full.image_spec)[0] for p in paths])
    out = {"text_tower_int8": export.manifest["variants"]["int8"]["text"] is not None}
    (fi, ft), (qi, qt) = [(e.embed_images(pixels), e.embed_texts(captions))
                          for e in (full, quant)]
    out["image"] = agreement(qi, fi)
    out["text"] = agreement(qt, ft)
    out["t2i_r@10_vs_fp32"] = overlap(ft, fi, qt, qi, 10)
    out["i2i_r@10_vs_fp32"] = overlap(fi, fi, qi, qi, 10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="demo held-out images")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RETRIEVAL_HOME"] = str(Path(tmp) / "home")
        t0 = time.perf_counter()
        demo = demo_report(Path(tmp), args.n)
        print(f"demo model, {args.n} held-out images (int8 text tower: "
              f"{'yes' if demo['text_tower_int8'] else 'no, kept at fp32'})")
        print(f"  cosine int8/fp32: images mean {demo['image']['mean_cos']:.5f} min "
              f"{demo['image']['min_cos']:.5f}; texts mean {demo['text']['mean_cos']:.5f} min "
              f"{demo['text']['min_cos']:.5f}")
        print("  metric        fp32    int8   change (points)")
        worst = 0.0
        for d in ("t2i", "i2t"):
            for k in KS:
                a, b = demo[f"fp32_{d}_r@{k}"], demo[f"int8_{d}_r@{k}"]
                worst = min(worst, 100 * (b - a)) if k == 10 else worst
                print(f"  {d}_r@{k:<3}    {a:.3f}   {b:.3f}   {100 * (b - a):+.1f}")
        vit = vitb32_report(Path(tmp))
        print(f"ViT-B-32, random weights, 200 JPEGs and 200 captions (int8 text tower: "
              f"{'yes' if vit['text_tower_int8'] else 'no, kept at fp32'})")
        print(f"  cosine int8/fp32: images mean {vit['image']['mean_cos']:.5f} min "
              f"{vit['image']['min_cos']:.5f}; texts mean {vit['text']['mean_cos']:.5f} min "
              f"{vit['text']['min_cos']:.5f}")
        print(f"  recall@10 of the int8 ranking against fp32's: text-to-image "
              f"{vit['t2i_r@10_vs_fp32']:.3f}, image-to-image {vit['i2i_r@10_vs_fp32']:.3f}")
        verdict = "under" if -worst < 1 else "not under"
        print(f"largest drop of recall@10 on the demo held-out set: {-worst:.1f} points "
              f"({verdict} one point); {time.perf_counter() - t0:.0f}s")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"demo": demo, "vit_b_32": vit}, indent=1))


if __name__ == "__main__":
    main()
