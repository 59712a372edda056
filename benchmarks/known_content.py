"""What the decode workers' check "is this content already in the catalog?" costs, on a
collection of many images, and the index throughput around it.

A decode worker hashes a file and skips its preprocessing when the catalog already holds that
content (a rename, a copy): the driver reuses the stored vector. Two ways to answer the check:

* ``sqlite``: each worker opens the catalog file read-only and asks per file (one indexed
  SELECT); SQLite only;
* ``prefixes``: the driver reads every image's content hash once, sends each worker a sorted
  array of their 64-bit prefixes, and a worker answers with a binary search; any backend.

Rows printed (the first two measured on a catalog of ``--rows`` images):

* ``driver``: reading the hashes and building the prefix set, once per index run that starts
  decode workers (``Catalog.content_prefixes``; ``--catalog URL`` measures it on a server too);
* ``worker start``: opening the file read-only, or unpickling the prefix set;
* ``lookup``: microseconds per check (half of them hits), against the decode of one image;
* ``index``: images/s of ``Collection.index`` (demo model, 2 decode workers) on a folder whose
  content the collection already holds (copies) and on a folder of new content, each run on
  a fresh copy of the prepared collection (its vector indexes built), in a process of its
  own. ``--compare ROOT`` runs the same in alternation with the code found under ROOT (a
  checkout of another version: ``git archive REV retrieval indexers | tar -x -C ROOT``),
  and prints each row's ratio to it.

    python benchmarks/known_content.py                 # 100,000 rows, 3 rounds
    python benchmarks/known_content.py --rows 20000 --n 120 --rounds 2 --compare /tmp/base
    python benchmarks/known_content.py --catalog auto  # the driver's read on PostgreSQL too
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres import benchmark_catalog


def make_images(folder: Path, n: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        img[:, : int(rng.integers(40, 600))] //= 3  # some structure: not pure noise
        Image.fromarray(img).save(folder / f"img_{seed}_{i:04d}.jpg", quality=90)


def fake_hash(i: int) -> str:
    return hashlib.sha256(f"fake-{i}".encode()).hexdigest()


def add_fake_images(catalog: Any, rows: int, dim: int, batch: int = 5000) -> None:
    """``rows`` image items that name no file (the check only reads their content hashes)."""
    from retrieval.storage import ImageRecord

    rng = np.random.default_rng(0)
    vec = rng.standard_normal((batch, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    for lo in range(0, rows, batch):
        catalog.write_images([
            ImageRecord(path=f"/fake/{i:07d}.jpg", size=100_000, mtime_ns=i,
                        content_hash=fake_hash(i), vector=vec[i - lo], width=640, height=480)
            for i in range(lo, min(rows, lo + batch))])


def best_of(fn: Any, repeat: int = 5) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def micro(catalog: Any, rows: int, lookups: int = 20_000) -> dict[str, float]:
    """The driver's, a worker's start's and one check's cost, both ways (``sqlite`` only on a
    SQLite catalog)."""
    import sqlite3

    from retrieval.storage.records import prefix_test

    out: dict[str, float] = {}
    t, prefixes = best_of(catalog.content_prefixes)
    out["driver_prefix_set_ms"] = t * 1000
    blob = pickle.dumps(prefixes, protocol=pickle.HIGHEST_PROTOCOL)
    out["prefix_set_bytes"] = len(blob)
    out["worker_unpickle_ms"] = best_of(lambda: pickle.loads(blob))[0] * 1000
    probes = [fake_hash(i) if i % 2 else fake_hash(rows + i) for i in range(lookups)]
    known = prefix_test(prefixes)
    t, hits = best_of(lambda: sum(known(h) for h in probes), 3)
    out["lookup_prefix_us"] = t / lookups * 1e6
    assert hits == lookups // 2, hits
    if catalog.file is None:
        return out
    uri = f"file:{catalog.file}?mode=ro"
    out["worker_sqlite_open_ms"] = best_of(lambda: sqlite3.connect(
        uri, uri=True, check_same_thread=False).close())[0] * 1000
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)

    def by_sqlite() -> int:  # the check as workers made it before: one SELECT per file
        return sum(conn.execute("SELECT 1 FROM items WHERE content_hash = ? AND kind = 'image' "
                                "LIMIT 1", (h,)).fetchone() is not None for h in probes)

    t, hits = best_of(by_sqlite, 3)
    out["lookup_sqlite_us"] = t / lookups * 1e6
    assert hits == lookups // 2, hits
    conn.close()
    return out


def decode_ms(folder: Path) -> float:
    """Milliseconds to hash, decode and preprocess one image here (what a lookup saves)."""
    from retrieval.ingest.workers import DecodeTask, decode_file, init_worker
    from retrieval.media import ImageSpec

    files = sorted(folder.glob("*.jpg"))[:40]
    spec = ImageSpec(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    init_worker(spec, 10**8)
    tasks = [DecodeTask(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    t, _ = best_of(lambda: [decode_file(t) for t in tasks], 3)
    return t / len(tasks) * 1000


def index_rate(prepared: Path, work: Path, folder: Path, n: int, code: str | None) -> float:
    """Images/s of one index run on a fresh copy of ``prepared``, in a process of its own
    (with the code under ``code``, else this checkout's)."""
    import subprocess

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(prepared, work)
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    out = subprocess.run([sys.executable, __file__, "--run", str(work), str(folder), str(n)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def run_one(work: str, folder: str, n: int) -> None:
    from retrieval import Collection

    col = Collection(work, model="demo")
    t0 = time.perf_counter()
    summary = col.index([folder], workers=2)
    elapsed = time.perf_counter() - t0
    col.close()
    assert summary.added == n, summary
    print(n / elapsed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="images in the collection")
    ap.add_argument("--n", type=int, default=200, help="images per indexed folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--catalog", metavar="URL", help="also measure the driver's read on this "
                    "server catalog (an empty database; 'auto': a throwaway local PostgreSQL)")
    ap.add_argument("--compare", metavar="ROOT", help="another version's code, to alternate with")
    ap.add_argument("--run", nargs=3, help=argparse.SUPPRESS)  # one timed index run
    args = ap.parse_args()
    if args.run:
        return run_one(args.run[0], args.run[1], int(args.run[2]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["RETRIEVAL_HOME"] = str(root / "home")
        from retrieval import Collection

        make_images(root / "a", args.n, seed=1)
        shutil.copytree(root / "a", root / "b")  # the same content under other names
        for f in (root / "b").glob("*.jpg"):
            f.rename(f.with_name("copy_" + f.name))
        make_images(root / "c", args.n, seed=2)
        prepared = root / "prepared"
        col = Collection(prepared, model="demo")
        col.index([root / "a"], workers=0)
        t0 = time.perf_counter()
        dim = col.dim
        add_fake_images(col._catalog, args.rows, dim)
        col.sync()  # the vector indexes hold them: a run then adds its own images only
        print(f"prepared {args.rows} fake image rows in {time.perf_counter() - t0:.1f} s")
        col.close()
        from retrieval.storage import Catalog

        catalog = Catalog(prepared / "catalog.sqlite")
        figures = micro(catalog, args.rows)
        catalog.close()
        with benchmark_catalog(args.catalog) as url:
            if url:  # the same rows in a server catalog: the driver's read over a socket
                catalog = Catalog(url, create=True)
                add_fake_images(catalog, args.rows, dim)
                figures.update({f"{k} (server)": v
                                for k, v in micro(catalog, args.rows).items()})
                catalog.close()
        for key, value in figures.items():
            print(f"{key:>24}: {value:,.2f}")
        codes = {"this": None, **({"compare": args.compare} if args.compare else {})}
        rates: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, folder in (("known copies", root / "b"), ("new content", root / "c")):
                for code_name, code in codes.items():
                    rates.setdefault((name, code_name), []).append(
                        index_rate(prepared, root / "w", folder, args.n, code))
        for (name, code_name), values in rates.items():
            line = (f"index {name:>13} ({code_name:>7}): {statistics.median(values):6.1f} "
                    f"images/s (rounds: {', '.join(f'{v:.1f}' for v in values)})")
            if code_name == "this" and (name, "compare") in rates:
                ratios = [a / b for a, b in zip(values, rates[(name, "compare")], strict=True)]
                line += f", {statistics.median(ratios):.2f}x the compared code"
            print(line)


if __name__ == "__main__":
    main()
