"""The on-disk IVF tier at scale: build time, memory, disk, recall and latency in one run.

Data: a regime of ``benchmarks/regimes.py`` (``--regime``, default ``overlap``: soft clusters on
a curved manifold, the hard realistic case; ``tight`` is the generator earlier runs used), with
``image`` queries drawn like the base vectors and ``text`` queries across a modality gap,
generated a chunk at a time into a memory-mapped ``.npy`` under ``--data`` and reused by later
runs. Exact ground truth is computed blockwise over the memory-mapped file.

Phases, each in its own process so that its memory is its own (anonymous and file-backed
resident memory sampled over the process and its children, plus VmHWM):

* ``build``: ``indexers.build_ondisk`` (train once on a sample, shards encoded in parallel
  processes, merged into FAISS on-disk lists) and ``save_index``; the exact vectors are the
  base file itself, hard-linked (``--copy-vectors`` copies them);
* ``query``: ``load_index`` (memory-mapped), tuning to recall@10 >= 0.95 per query kind on
  separate tuning queries, then recall@10 on ``--queries`` queries of each kind and single-query
  latency (one thread, wall clock: disk reads count) over all of them, every query's latency
  kept for ``benchmarks/scale_model.py``;
* ``baseline``: the in-memory IVF (``IVFIndex``, same nlist and codec, exact vectors in RAM)
  trained and filled with the first ``--baseline-n`` vectors (the whole set does not fit in
  memory); its build time at n is extrapolated as training + adding x n / baseline-n
  (training does not grow with n).

    python benchmarks/scale.py --n 10000000 --dim 512 --data /work/scale-data --codec pq4fs
    python benchmarks/scale.py --n 200000 --dim 128 --data /tmp/scale     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 10
CHUNK = 100_000
TUNE_QUERIES = 500  # per kind, separate from the measured queries


# -- memory -------------------------------------------------------------------------------------

def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _tree(root: int) -> list[int]:
    pids, i = [root], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        i += 1
    return pids


class MemorySampler:
    """Peak anonymous and file-backed resident memory of this process and its children."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.peak_anon = self.peak_file = 0
        self.loads: list[float] = []  # 1-minute load average: other work on the machine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        anon = file = 0
        for pid in _tree(os.getpid()):
            s = _status(pid)
            anon += s.get("RssAnon", 0) + s.get("RssShmem", 0)
            file += s.get("RssFile", 0)
        self.peak_anon = max(self.peak_anon, anon)
        self.peak_file = max(self.peak_file, file)
        self.loads.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, Any]:
        me = _status(os.getpid())
        return {"peak_anon_bytes": self.peak_anon, "peak_file_bytes": self.peak_file,
                "vm_hwm_bytes": me.get("VmHWM", 0), "rss_anon_end": me.get("RssAnon", 0),
                "rss_file_end": me.get("RssFile", 0),
                "mean_load_avg": round(float(np.mean(self.loads)), 2) if self.loads else 0.0}


# -- data ---------------------------------------------------------------------------------------

def make_data(folder: Path, n: int, dim: int, nq: int, seed: int, name: str = "overlap"
              ) -> dict[str, Path]:
    """Base vectors (chunk by chunk into a .npy) and query sets; reused when present."""
    import regimes

    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-{n}x{dim}-s{seed}"
    paths = {"base": folder / f"base-{tag}.npy", "queries": folder / f"queries-{tag}-{nq}.npz"}
    reg = regimes.regime(name, n, dim, seed)
    if not paths["base"].exists():
        tmp = paths["base"].with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        regimes.base_vectors(reg, n, seed, CHUNK, out)
        out.flush()
        del out
        os.replace(tmp, paths["base"])
    if not paths["queries"].exists():
        rng = np.random.default_rng([seed, 2])
        np.savez(paths["queries"], image=reg.queries("image", nq, rng),
                 text=reg.queries("text", nq, rng),
                 tune_image=reg.queries("image", TUNE_QUERIES, rng),
                 tune_text=reg.queries("text", TUNE_QUERIES, rng))
    return paths


def exact_truth(base: Path, xq: np.ndarray, k: int = K, block: int = 500_000
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (scores, rows) of the k best base vectors, a block of the memory-mapped file at a
    time."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    xb = np.load(base, mmap_mode="r")
    best_s = np.full((len(xq), 0), -np.inf, np.float32)
    best_i = np.zeros((len(xq), 0), np.int64)
    for lo in range(0, len(xb), block):
        s, i = faiss.knn(xq, np.ascontiguousarray(xb[lo:lo + block]), k,
                         metric=faiss.METRIC_INNER_PRODUCT)
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i + lo])
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(best_s, order, 1)
        best_i = np.take_along_axis(best_i, order, 1)
    return best_s, best_i


def truth_for(paths: dict[str, Path], queries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cache = paths["queries"].with_suffix(".truth.npz")
    if cache.exists():
        return dict(np.load(cache))
    names = sorted(queries)
    xq = np.vstack([queries[q] for q in names])
    _, rows = exact_truth(paths["base"], xq)
    out, at = {}, 0
    for q in names:
        out[q] = rows[at:at + len(queries[q])]
        at += len(queries[q])
    np.savez(cache, **out)
    return out


# -- phases ------------------------------------------------------------------------------------

def _sample_rows(n: int, m: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(n, m), replace=False))


def phase_baseline(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, Any]:
    from indexers import IVFIndex

    xb = np.load(paths["base"], mmap_mode="r")
    m = min(len(xb), args.baseline_n)
    with MemorySampler() as mem:
        index = IVFIndex(xb.shape[1], "ip", nlist=args.nlist, codec=args.codec)
        t = time.perf_counter()
        index.train(np.ascontiguousarray(xb[_sample_rows(len(xb), 64 * args.nlist)]))
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        for lo in range(0, m, CHUNK):
            index.add(np.arange(lo, min(m, lo + CHUNK)), np.asarray(xb[lo:lo + CHUNK][:m - lo]))
        index.vectors(np.arange(1))  # folds the added vectors into the exact store
        add_s = time.perf_counter() - t
    scale = len(xb) / m
    return {"baseline_n": m, "train_s": train_s, "add_s": add_s,
            "extrapolated_build_s": train_s + add_s * scale,
            "linear_build_s": (train_s + add_s) * scale, **mem.report()}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have ended."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def phase_build(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, Any]:
    import shutil

    from indexers import build_ondisk, save_index

    out = Path(args.index_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stages: dict[str, float] = {}
    with MemorySampler() as mem:
        t, cpu = time.perf_counter(), _cpu_seconds()
        index = build_ondisk(paths["base"], nlist=args.nlist, codec=args.codec,
                             workers=args.workers, shard_size=args.shard_size,
                             workdir=out / "image.segments",
                             link_source=not args.copy_vectors,
                             on_event=lambda s, sec: stages.__setitem__(s, sec))
        t_save = time.perf_counter()
        save_index(index, out, "image", {"n": index.ntotal})
        stages["save"] = time.perf_counter() - t_save
        build_s = time.perf_counter() - t
        build_cpu_s = _cpu_seconds() - cpu
    files = [p for p in out.rglob("*") if p.is_file()]
    by_kind = {"codes": sum(p.stat().st_size for p in files
                            if p.suffix == ".ivfdata" or p.name == "fastscan.index"),
               "vectors": sum(p.stat().st_size for p in files if p.name == "vectors.npy")}
    total = sum(p.stat().st_size for p in files)
    return {"build_s": build_s, "build_cpu_s": build_cpu_s, "stages": stages,
            "disk_bytes": total,
            "disk_codes_bytes": by_kind["codes"], "disk_vectors_bytes": by_kind["vectors"],
            "disk_other_bytes": total - sum(by_kind.values()), "ntotal": index.ntotal,
            **mem.report()}


def phase_query(args: argparse.Namespace, paths: dict[str, Path]) -> dict[str, Any]:
    from indexers import load_index, neighbour_recall, tune

    queries = dict(np.load(paths["queries"]))
    truth = truth_for(paths, queries)
    with MemorySampler() as mem:
        t = time.perf_counter()
        index, _ = load_index(args.index_dir, "image")
        load_s = time.perf_counter() - t
        tq = np.vstack([queries["tune_image"], queries["tune_text"]])
        kinds = ["image"] * len(queries["tune_image"]) + ["text"] * len(queries["tune_text"])
        tt = np.vstack([truth["tune_image"], truth["tune_text"]])
        t = time.perf_counter()
        tuning = tune(index, tq, tt, k=K, target=0.95, groups=kinds)
        tune_s = time.perf_counter() - t
        res: dict[str, Any] = {"load_s": load_s, "tune_s": tune_s, "tuning": tuning,
                               "search_params": dict(index.search_params)}
        for kind in ("image", "text"):
            xq = queries[kind]
            t = time.perf_counter()
            _, found = index.search(xq, K)
            batch_s = time.perf_counter() - t
            lat, cpu = [], []
            for q in xq:
                t, c = time.perf_counter(), time.thread_time()
                index.search(q[None], K)
                cpu.append((time.thread_time() - c) * 1000)
                lat.append((time.perf_counter() - t) * 1000)
            res[kind] = {"recall_at_10": neighbour_recall(found, truth[kind], K),
                         "p50_ms": float(np.percentile(lat, 50)),
                         "p99_ms": float(np.percentile(lat, 99)),
                         "cpu_p50_ms": float(np.percentile(cpu, 50)),
                         "batch_qps": len(xq) / batch_s,
                         "latencies_ms": [round(v, 4) for v in lat],
                         "cpu_latencies_ms": [round(v, 4) for v in cpu]}
    res.update(mem.report())
    return res


PHASES = {"baseline": phase_baseline, "build": phase_build, "query": phase_query}


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def table(args: argparse.Namespace, r: dict[str, Any]) -> str:
    b, q, base = r["build"], r["query"], r.get("baseline")
    rows = [
        ("vectors", f"{args.n:,} x {args.dim} float32 ({_gb(args.n * args.dim * 4)})"),
        ("machine", f"{os.cpu_count()} cores; mean 1-min load average during build "
                    f"{b['mean_load_avg']}, during queries {q['mean_load_avg']}"
                    + (f", during the in-memory build {base['mean_load_avg']}" if base else "")),
        ("data", f"regime {args.regime}"),
        ("index", f"ivf-ondisk nlist={args.nlist} codec={args.codec}, exact vectors "
                  f"{'copied' if args.copy_vectors else 'hard-linked'}, "
                  f"{args.workers} worker processes, search {q['search_params']}"),
        ("build time", f"{b['build_s']:.0f} s ("
                       + ", ".join(f"{k} {v:.0f} s" for k, v in b["stages"].items()) + ")"),
    ]
    if base:
        rows.append((f"in-memory IVF build (same nlist, {args.codec})",
                     f"{base['extrapolated_build_s']:.0f} s extrapolated from "
                     f"{base['baseline_n']:,} vectors (train {base['train_s']:.0f} s + add "
                     f"{base['add_s']:.0f} s x {args.n / base['baseline_n']:.1f}); on-disk / "
                     f"in-memory = {b['build_s'] / base['extrapolated_build_s']:.2f}x"))
    rows += [
        ("build peak RSS", f"anon {_gb(b['peak_anon_bytes'])}, file-backed "
                           f"{_gb(b['peak_file_bytes'])} (all processes); VmHWM of the main "
                           f"process {_gb(b['vm_hwm_bytes'])}"),
        ("bytes on disk", f"{_gb(b['disk_bytes'])} (codes {_gb(b['disk_codes_bytes'])}, "
                          f"exact vectors {_gb(b['disk_vectors_bytes'])}, other "
                          f"{_gb(b['disk_other_bytes'])})"),
        ("query process peak RSS", f"anon {_gb(q['peak_anon_bytes'])}, file-backed "
                                   f"{_gb(q['peak_file_bytes'])}; VmHWM "
                                   f"{_gb(q['vm_hwm_bytes'])}"),
    ]
    for kind in ("image", "text"):
        k = q[kind]
        rows.append((f"{kind}-like queries ({args.queries})",
                     f"recall@10 {k['recall_at_10']:.4f}, p50 {k['p50_ms']:.2f} ms, "
                     f"p99 {k['p99_ms']:.2f} ms (single query, one thread), batch "
                     f"{k['batch_qps']:.0f} q/s"))
    lines = ["| measure | value |", "| --- | --- |"]
    lines += [f"| {a} | {v} |" for a, v in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000, help="per kind")
    ap.add_argument("--data", default="/tmp/scale-data", help="folder for data and the index")
    ap.add_argument("--nlist", type=int, default=0, help="default: choose_index's")
    ap.add_argument("--codec", default="sq8", help="sq8, pq4fs (fast-scan codes in memory), pq")
    ap.add_argument("--regime", default="overlap", help="a regime of benchmarks/regimes.py")
    ap.add_argument("--copy-vectors", action="store_true",
                    help="copy the exact vectors into the index instead of hard-linking the "
                         "base file (which already holds them in id order)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard-size", type=int, default=1_000_000)
    ap.add_argument("--baseline-n", type=int, default=1_000_000)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--index-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.nlist:
        from indexers.choose import ONDISK_MAX_NLIST, nlist_for

        args.nlist = min(nlist_for(args.n), ONDISK_MAX_NLIST)
    data = Path(args.data)
    args.index_dir = args.index_dir or str(
        data / f"index-{args.regime}-{args.n}x{args.dim}-{args.codec}-{args.nlist}")
    t = time.perf_counter()
    paths = make_data(data, args.n, args.dim, args.queries, args.seed, args.regime)
    if args.phase:
        result = PHASES[args.phase](args, paths)
        Path(args.index_dir + f".{args.phase}.json").write_text(json.dumps(result, indent=1))
        return
    print(f"data ready in {time.perf_counter() - t:.0f} s: {paths['base']}", flush=True)
    t = time.perf_counter()
    truth_for(paths, dict(np.load(paths["queries"])))
    print(f"exact ground truth in {time.perf_counter() - t:.0f} s", flush=True)
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "phase"}}
    # The on-disk build and queries first: they are the point; the baseline may be cut short.
    phases = ["build", "query"] if args.skip_baseline else ["build", "query", "baseline"]
    for phase in phases:
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--phase", phase,
                        "--nlist", str(args.nlist), "--index-dir", args.index_dir], check=True)
        results[phase] = json.loads(Path(args.index_dir + f".{phase}.json").read_text())
        print(f"{phase}: {time.perf_counter() - t:.0f} s: "
              f"{json.dumps(results[phase], default=str)[:600]}", flush=True)
    print(table(args, results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
