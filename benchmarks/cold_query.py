"""Wall time of a cold ``retrieval search "..." -k 10``: a fresh process per query, as users run it.

Three collections, each queried by fresh processes (median of ``--runs`` after one warm-up):

* ``demo``: the 300-image demo collection (``retrieval demo``, the shipped model);
* ``100k``: 100,000 images of ViT-B-32 (random weights, seeded): 200 real JPEGs indexed with
  ``retrieval index``, plus 99,800 image records with clustered unit vectors written through
  the library's catalog API, so that the collection has its IVF index (vectors are made, not
  embedded, because embedding 100k images takes hours on two cores);
* ``200``: the same 200 JPEGs, ours and rclip (``../shared/peers/rclip``, random-weight ONNX
  ViT-B-32 towers) alternated run by run.

Every run searches a text no run searched before (``a photo of ... #i``), so the persistent
text-embedding cache never answers; a last series repeats one query to show the cache hit.

    RCLIP_OFFLINE_ROOT=/path/to/rclip-offline python benchmarks/cold_query.py
    python benchmarks/cold_query.py --runs 7 --n 100000 --work /tmp/coldq   # keeps the work dir
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent.parent / "shared" / "peers"
NOUNS = ("dog", "red bicycle", "beach at sunset", "cat on a sofa", "mountain lake", "city street",
         "bowl of fruit", "old car", "snowy forest", "birthday cake")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process; fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def run_series(label: str, commands: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    walls, rss = [], []
    timed(commands[0], env)  # warm-up: page cache, first-run work
    for cmd in commands[1:]:
        w, r = timed(cmd, env)
        walls.append(w)
        rss.append(r)
    row = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
           "peak_rss_mb": max(rss), "runs": len(walls)}
    print(f"{label:<34} median {row['median_s']:.3f} s  (min {row['min_s']:.3f}, max "
          f"{row['max_s']:.3f})  peak RSS {row['peak_rss_mb']:.0f} MB")
    return row


def queries(tag: str, n: int) -> list[str]:
    return [f"a photo of a {NOUNS[i % len(NOUNS)]} #{tag}{i}" for i in range(n)]


def make_jpegs(folder: Path, n: int) -> None:
    if not folder.is_dir():
        subprocess.run([sys.executable, PEERS / "clip-retrieval" / "gen_imgs.py", folder, str(n),
                        "1"], check=True, capture_output=True)


def random_checkpoint(path: Path) -> None:
    if not path.exists():
        subprocess.run([sys.executable, "-c",
                        "import sys, torch, open_clip; torch.manual_seed(0); torch.save("
                        "open_clip.create_model('ViT-B-32').state_dict(), sys.argv[1])", path],
                       check=True, capture_output=True)


def build_large(path: Path, images: Path, ckpt: Path, n: int) -> None:
    """A ViT-B-32 collection of n image items: the real JPEGs plus records with vectors."""
    from retrieval import Collection
    from retrieval.storage import ImageRecord

    col = Collection(path, model="ViT-B-32", pretrained=str(ckpt), device="cpu")
    col.index([images])
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, col.dim)).astype(np.float32)
    remaining = n - col._catalog.counts()["image"]
    for start in range(0, remaining, 10_000):
        m = min(10_000, remaining - start)
        x = centers[rng.integers(0, len(centers), m)] + 0.6 * rng.standard_normal(
            (m, col.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        col._catalog.write_images([
            ImageRecord(path=f"/synthetic/{start + i:07d}.jpg", size=1000, mtime_ns=0,
                        content_hash=f"synthetic-{start + i}", vector=v, width=640, height=480)
            for i, v in enumerate(x)])
    col.sync()  # the index tier for 100k vectors, tuned, saved
    info = col.info()
    print(f"100k collection: {info['counts']['image']} images, image index "
          f"{info['index']['image']['type']}/{info['index']['image']['params']}")
    col.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=100_000, help="items in the large collection")
    ap.add_argument("--work", type=Path, default=None, help="work folder (kept; default temp)")
    ap.add_argument("--json", dest="json_out", help="also write the results to this file")
    ap.add_argument("--build", nargs=3, metavar=("COLLECTION", "IMAGES", "CHECKPOINT"),
                    help=argparse.SUPPRESS)  # runs in a child: this process stays small
    args = ap.parse_args()
    if args.build:
        build_large(*(Path(p) for p in args.build), args.n)
        return
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory()
        args.work = Path(tmp.name)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("retrieval"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", RETRIEVAL_HOME=str(work / "home"))
    # Bytecode compiled once, as an installed package has it (a run with
    # PYTHONDONTWRITEBYTECODE set would otherwise recompile the package every time).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "retrieval"),
                    str(HERE.parent / "indexers")], check=True)
    results: dict[str, dict[str, float]] = {}
    try:
        demo = work / "demo-collection"
        if not demo.exists():
            subprocess.run([exe, "--collection", demo, "demo", "--folder", work / "demo-images"],
                           env=env, check=True, capture_output=True)
        images, ckpt = work / "jpegs", work / "vitb32-random.pt"
        make_jpegs(images, 200)
        random_checkpoint(ckpt)
        small, large = work / "b32-200", work / f"b32-{args.n}"
        if not small.exists():
            subprocess.run([exe, "--collection", small, "index", images, "--model", "ViT-B-32",
                            "--pretrained", ckpt], env=env, check=True, capture_output=True)
        if not large.exists():
            subprocess.run([sys.executable, __file__, "--n", str(args.n), "--build", str(large),
                            str(images), str(ckpt)], env=env, check=True)

        def ours(col: Path, texts: list[str]) -> list[list[str]]:
            return [[exe, "--collection", str(col), "search", t, "-k", "10"] for t in texts]

        r = args.runs + 1
        results["demo"] = run_series("ours, demo (300 images)", ours(demo, queries("d", r)), env)
        results["100k"] = run_series(f"ours, ViT-B-32, {args.n} items",
                                     ours(large, queries("l", r)), env)
        results["100k_cached"] = run_series(
            f"ours, {args.n} items, repeated query", ours(large, ["a repeated query"] * r), env)
        rclip_root = os.environ.get("RCLIP_OFFLINE_ROOT")
        if rclip_root and Path(rclip_root).is_dir():
            renv = dict(env, RCLIP_DATADIR=str(work / "rclip-data"))
            rclip = ["bash", str(PEERS / "rclip" / "run.sh"), str(images)]
            timed([*rclip, "warm up and index", "-t", "10"], renv)
            texts = queries("s", 2 * r)
            pairs = []
            for i in range(r):
                a = timed(ours(small, [texts[2 * i]])[0], env)[0]
                b = timed([*rclip, texts[2 * i + 1], "-t", "10"], renv)[0]
                if i:
                    pairs.append((a, b))
            mine, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
            ratio = statistics.median(a / b for a, b in pairs)
            results["200_vs_rclip"] = {"ours_median_s": statistics.median(mine),
                                       "rclip_median_s": statistics.median(theirs),
                                       "ratio": ratio, "runs": len(pairs)}
            print(f"{'200 JPEGs, alternated with rclip':<34} ours median "
                  f"{statistics.median(mine):.3f} s, rclip {statistics.median(theirs):.3f} s; "
                  f"ours/rclip {ratio:.2f} (target <= 0.6)")
        else:
            print("rclip skipped: set RCLIP_OFFLINE_ROOT to a folder made by "
                  "../shared/peers/rclip/setup.sh")
        print(f"target: <= 1.0 s at {args.n} items -> "
              f"{'met' if results['100k']['median_s'] <= 1.0 else 'missed'}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
