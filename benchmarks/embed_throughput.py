"""Throughput of the whole ``index`` pipeline against torch's bare forward pass of the model.

Generates photo-sized JPEGs (1-4 MP, with texture so they compress like photos), then measures,
alternated round by round in the same process:

* model: images/s of the torch image tower on already-decoded, already-resized uint8 batches
  (the baseline every row is divided by);
* pipeline rows: images/s of ``Collection.index`` on the JPEG folder (scan, hash, decode in
  worker processes, preprocess, embed, commit to the catalog, build the index), with
  - torch: the torch model passed in as the encoder,
  - default: the CPU path ``retrieval index`` takes once the model is exported (its ONNX
    export on ONNX Runtime),
  - int8: ``--precision int8`` (the export's dynamically quantised variant),
  - ray (with ``--ray``): the default path with decoding and embedding on Ray
    (``retrieval index --ray``), also divided by the default row of the same round: the cost
    of going through Ray on one machine. Without an address the script starts a local Ray
    instance with every core once, before the rounds (a cluster that is already up).

The model is ViT-B-32 with random weights saved to a checkpoint (speed does not depend on them);
its one-time export happens before the rounds and is timed on its own.

    python benchmarks/embed_throughput.py              # ViT-B-32, 256 images, 3 rounds
    python benchmarks/embed_throughput.py --n 64 --rows torch,default --json out.json
    python benchmarks/embed_throughput.py --ray                # default vs ray rows
    python benchmarks/embed_throughput.py --ray 10.0.0.5:6379  # an existing cluster
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


def driver_commit_rate(catalog, dim: int, n: int, batch_size: int) -> float:
    """Images/s the driver of a Ray run commits when vectors arrive ready-made: per batch, the
    content-hash lookup for reuse and one catalog transaction (what caps adding nodes)."""
    from retrieval.items import IMAGE
    from retrieval.storage.records import ImageRecord

    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        records = [ImageRecord(path=f"/driver-only/{i:07d}.jpg", size=400_000,
                               mtime_ns=i, content_hash=f"{rng.integers(2**63):064x}",
                               vector=vectors[i], width=2048, height=1536)
                   for i in range(lo, min(n, lo + batch_size))]
        catalog.vectors_for_hashes((r.content_hash for r in records), IMAGE)
        catalog.write_images(records)
    return n / (time.perf_counter() - start)


def bare_model_rate(encoder, batch_size: int, batches: int) -> float:
    h, w = encoder.image_spec.size
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(batch_size, h, w, 3), dtype=np.uint8)
    encoder.embed_images(x)  # warm-up at the measured batch shape (kernel selection)
    start = time.perf_counter()
    for _ in range(batches):
        encoder.embed_images(x)
    return batch_size * batches / (time.perf_counter() - start)


ROWS = ("torch", "default", "int8")
LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                 # an offline machine: no auth token, everything on 127.0.0.1
                 "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def start_ray(address: str) -> None:
    """Join the cluster at ``address``, or ("auto") start one on this machine, outside the
    timed runs as a cluster that is already up would be."""
    local = address == "auto" and not os.environ.get("RAY_ADDRESS")
    for key, value in LOCAL_RAY_ENV.items():
        if local or key == "RAY_USAGE_STATS_ENABLED":
            os.environ.setdefault(key, value)
    import ray

    if local:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 * 2**20)
    else:
        ray.init(address=None if address == "auto" else address, log_to_driver=False)
    print(f"ray {ray.__version__}: {ray.cluster_resources()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="number of JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default auto)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of all rows")
    ap.add_argument("--rows", default=None,
                    help=f"pipeline rows to run (default {','.join(ROWS)}; default,ray "
                         "with --ray)")
    ap.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                    help="add the ray row: a Ray cluster's address, or none to start one here")
    ap.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = ap.parse_args()
    rows = [r for r in (args.rows or ("default,ray" if args.ray else ",".join(ROWS))
                        ).split(",") if r]
    if "ray" in rows:
        start_ray(args.ray or "auto")

    import torch

    from retrieval import Collection, ModelSpec, load_encoder
    from retrieval.encoders.export import export_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["RETRIEVAL_HOME"] = str(tmp_path / "home")
        t0 = time.perf_counter()
        nbytes = make_photos(tmp_path / "photos", args.n)
        print(f"generated {args.n} JPEGs (1.2-4.0 MP, {nbytes / args.n / 1e6:.2f} MB average) "
              f"in {time.perf_counter() - t0:.1f}s")
        torch.manual_seed(0)
        import open_clip

        ckpt = tmp_path / "random.pt"
        torch.save(open_clip.create_model(args.model).state_dict(), ckpt)
        spec = ModelSpec.parse(args.model, str(ckpt))
        encoder = load_encoder(spec, "cpu")
        print(f"model {args.model} (random weights), torch threads {torch.get_num_threads()}, "
              f"cpus {os.cpu_count()}")
        if {"default", "int8"} & set(rows):
            t0 = time.perf_counter()
            export = export_model(encoder, int8="int8" in rows)
            print(f"one-time ONNX export (with parity check{', int8' if 'int8' in rows else ''})"
                  f": {time.perf_counter() - t0:.1f}s; image tower through the "
                  f"{export.manifest.get('image_exporter', 'dynamo')} exporter")
        batches = max(2, args.n // args.batch_size)  # as many images as the pipeline embeds
        model_rates = [bare_model_rate(encoder, args.batch_size, batches)]
        print(f"torch model forward on decoded tensors: {model_rates[0]:.2f} images/s")
        rates: dict[str, list[float]] = {r: [] for r in rows}
        ratios: dict[str, list[float]] = {r: [] for r in rows}
        for r in range(args.rounds):
            for row in rows:
                path = tmp_path / f"{row}-{r}"
                col = (Collection(path, encoder=encoder) if row == "torch" else
                       Collection(path, model=spec, device="cpu",
                                  precision="int8" if row == "int8" else None))
                start = time.perf_counter()
                summary = col.index([tmp_path / "photos"], batch_size=args.batch_size,
                                    workers=args.workers,
                                    ray=(args.ray or "auto") if row == "ray" else None)
                elapsed = time.perf_counter() - start
                col.close()
                assert summary.embedded == args.n and summary.failed == 0, summary
                rates[row].append(args.n / elapsed)
                # Each pipeline run is compared with the model runs just before and after it.
                model_rates.append(bare_model_rate(encoder, args.batch_size, batches))
                ratios[row].append(rates[row][-1] / ((model_rates[-2] + model_rates[-1]) / 2))
                print(f"round {r + 1}: {row:<8} pipeline {rates[row][-1]:6.2f} images/s "
                      f"({elapsed:.1f}s for {args.n}); torch model {model_rates[-1]:.2f} "
                      f"images/s; ratio {ratios[row][-1]:.3f}")
        model_rate = statistics.median(model_rates)
        print(f"median torch model forward: {model_rate:.2f} images/s")
        targets = {"torch": 0.9, "default": 1.1, "int8": 1.6, "ray": 1.1}
        results = {"model": args.model, "n": args.n, "model_images_per_s": model_rate}
        for row in rows:
            ratio = statistics.median(ratios[row])
            print(f"{row:<8} pipeline median {statistics.median(rates[row]):6.2f} images/s; "
                  f"ratio to the torch model (median of rounds) {ratio:.3f} "
                  f"(target >= {targets[row]}); rounds "
                  + ", ".join(f"{x:.3f}" for x in ratios[row]))
            results[row] = {"images_per_s": statistics.median(rates[row]), "ratio": ratio,
                            "round_ratios": ratios[row]}
        if "ray" in rows and "default" in rows:
            local = [r / d for r, d in zip(rates["ray"], rates["default"], strict=True)]
            ratio = statistics.median(local)
            print(f"ray vs local (default row, same round): median {ratio:.3f} "
                  "(target >= 0.9); rounds " + ", ".join(f"{x:.3f}" for x in local))
            results["ray_vs_local"] = {"ratio": ratio, "round_ratios": local}
        if "ray" in rows:
            with Collection(tmp_path / "ray-0") as col:
                commit = driver_commit_rate(col._catalog, col.dim, 4096, args.batch_size)
            per_node = statistics.median(rates["ray"])
            print(f"driver alone (reuse lookup + commit of ready vectors): {commit:.0f} "
                  f"images/s, {commit / per_node:.0f}x this machine's ray row: the projected "
                  "ceiling on nodes like this one before the driver limits")
            results["driver_commit_images_per_s"] = commit
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
