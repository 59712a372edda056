"""Internet scale on paper: a per-shard cost model measured at two shard sizes, extrapolated.

Input: two runs of ``benchmarks/scale.py`` on the same regime and codec (say 1M and 10M
vectors), each a measured shard: build time (and the CPU seconds it used), peak memory, bytes
on disk, recall, and the latency of every one of its single queries. Output, for collections of
``--totals`` vectors (1B and 5B by default) cut into shards of ``--shard`` vectors:

* shards, and nodes of ``--node-cores`` cores, ``--node-ram`` of memory and ``--node-disk`` of
  disk: as many shards per node as its memory and disk hold (memory per shard: the query
  process's anonymous memory plus the file pages a query must find cached: the codes when they
  are read from disk, none for fast-scan codes held in memory);
* build time: CPU seconds per shard (power law through the two sizes when the shard size is
  neither) times shards, spread over every core of every node;
* fan-out latency: a query goes to every shard; each node searches its shards on its cores
  (one thread per shard, a core taking the next shard when free), the query waits for the
  slowest node, plus ``--network-ms`` for the round trip and merge. Simulated by drawing each
  shard's latency from the measured per-query latencies of the nearer measured size (scaled by
  the power law), independently per shard, and, pessimistically, with the same query's
  latency on every shard (a query hard for one shard is hard for all);
* throughput: cores divided by the CPU time one query costs all shards.

Beside it, autofaiss's published figure: 5.55B x 768 vectors in a 168 GB index built on 10
machines in 6 hours (LAION-5B's kNN index).

    python benchmarks/scale_model.py benchmarks/results/scale-1m-512-overlap-pq4fs.json \\
        benchmarks/results/scale-10m-512-overlap-pq4fs.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("image", "text")
AUTOFAISS = {"vectors": 5.55e9, "dim": 768, "index_gb": 168, "machines": 10, "hours": 6}


def _gb(x: float) -> float:
    return x / 1e9


def shard_costs(run: dict[str, Any], latency: str = "cpu", build_cores: int = 2
                ) -> dict[str, Any]:
    """What one measured shard costs, from a scale.py result: CPU seconds of its build (wall
    seconds x ``build_cores`` for runs that did not record them) and the latency of each query
    (``cpu``: CPU time of the searching thread, what a node of idle cores would see once the
    shard's files are cached; ``wall``: wall clock, which on a shared machine counts other
    work too)."""
    b, q, a = run["build"], run["query"], run["args"]
    hot = b["disk_codes_bytes"] if a["codec"] != "pq4fs" else 0  # codes scanned from files
    key = "cpu_latencies_ms" if latency == "cpu" and "cpu_latencies_ms" in q["image"] \
        else "latencies_ms"
    return {"n": int(a["n"]), "dim": int(a["dim"]), "codec": a["codec"],
            "regime": a.get("regime", "tight"),
            "build_cpu_s": b.get("build_cpu_s", b["build_s"] * build_cores),
            "build_peak_anon": b["peak_anon_bytes"], "latency_clock": key,
            "load_avg": {"build": b.get("mean_load_avg"), "query": q.get("mean_load_avg")},
            "ram": q["peak_anon_bytes"] + hot, "disk": b["disk_bytes"],
            "latencies": {k: np.asarray(q[k][key]) for k in KINDS},
            "recall": {k: q[k]["recall_at_10"] for k in KINDS},
            "search_params": q["search_params"]}


def power(small: float, large: float, n_small: int, n_large: int, n: float) -> float:
    """A cost at n through two measured sizes, as a power of n whose exponent is held at or
    above 0 (no cost falls as a shard grows; two noisy measurements can say otherwise)."""
    b = max(0.0, math.log(large / small) / math.log(n_large / n_small))
    return large * (n / n_large) ** b


def at_size(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """A shard of ``size`` vectors: measured if a run has that size, else scaled from the two
    runs by the power law of each cost (the latency distribution of the nearer run, scaled by
    the law of its median)."""
    small, large = sorted(runs, key=lambda r: r["n"])
    near = min(runs, key=lambda r: abs(math.log(r["n"] / size)))
    if near["n"] == size:
        return near
    out = dict(near, n=size)
    for key in ("build_cpu_s", "ram", "disk"):
        out[key] = power(small[key], large[key], small["n"], large["n"], size)
    out["latencies"] = {}
    for k in KINDS:
        med = [float(np.median(r["latencies"][k])) for r in (small, large)]
        factor = power(*med, small["n"], large["n"], size) / float(np.median(near["latencies"][k]))
        out["latencies"][k] = near["latencies"][k] * factor
    return out


def fan_out(lat: np.ndarray, shards: int, nodes: int, cores: int, network_ms: float,
            correlated: bool, rng: np.random.Generator, trials: int = 2000) -> np.ndarray:
    """Simulated latency of ``trials`` queries over ``shards`` shards on ``nodes`` nodes."""
    per_node = math.ceil(shards / nodes)
    rounds = math.ceil(per_node / cores)  # shards a core searches one after the other
    out = np.empty(trials)
    for t in range(trials):
        if correlated:
            x = np.full((nodes, per_node), lat[rng.integers(len(lat))])
        else:
            x = lat[rng.integers(len(lat), size=(nodes, per_node))]
        # each core takes ``rounds`` shards; the node answers when its busiest core is done
        pad = rounds * cores - per_node
        x = np.pad(x, ((0, 0), (0, pad))).reshape(nodes, cores, rounds).sum(2)
        out[t] = x.max() + network_ms
    return out


def plan(shard: dict[str, Any], total: float, args: argparse.Namespace, rng: np.random.Generator
         ) -> dict[str, Any]:
    shards = math.ceil(total / shard["n"])
    per_node = max(1, min(int(args.node_ram * 1e9 * 0.9 // shard["ram"]),
                          int(args.node_disk * 1e12 * 0.9 // shard["disk"])))
    nodes = math.ceil(shards / per_node)
    cpu_s = shard["build_cpu_s"]
    out: dict[str, Any] = {
        "vectors": total, "shard_vectors": shard["n"], "shards": shards, "nodes": nodes,
        "shards_per_node": math.ceil(shards / nodes),
        "ram_per_node_gb": round(_gb(shard["ram"] * math.ceil(shards / nodes)), 1),
        "disk_per_node_tb": round(_gb(shard["disk"] * math.ceil(shards / nodes)) / 1000, 2),
        "disk_total_tb": round(_gb(shard["disk"] * shards) / 1000, 1),
        "ram_total_gb": round(_gb(shard["ram"] * shards)),
        "build_hours": round(cpu_s * shards / (nodes * args.node_cores) / 3600, 2),
        "bytes_per_vector": {"ram": round(shard["ram"] / shard["n"], 1),
                             "disk": round(shard["disk"] / shard["n"], 1)}}
    for k in KINDS:
        lat = shard["latencies"][k]
        res = {}
        for corr in (False, True):
            sim = fan_out(lat, shards, nodes, args.node_cores, args.network_ms, corr, rng)
            res["correlated" if corr else "independent"] = {
                "p50_ms": round(float(np.median(sim)), 1),
                "p99_ms": round(float(np.percentile(sim, 99)), 1)}
        res["qps"] = round(nodes * args.node_cores / (shards * float(np.mean(lat)) / 1000), 1)
        res["shard_recall_at_10"] = shard["recall"][k]
        out[k] = res
    return out


def table(plans: list[dict[str, Any]]) -> str:
    lines = ["| vectors | shards x size | nodes | RAM / node | disk / node | build | "
             "image p50 / p99 ms | text p50 / p99 ms | QPS (text) |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    for p in plans:
        lat = {k: f"{p[k]['independent']['p50_ms']} / {p[k]['independent']['p99_ms']} "
                  f"({p[k]['correlated']['p99_ms']})" for k in KINDS}
        lines.append(
            f"| {p['vectors'] / 1e9:g}B | {p['shards']} x {p['shard_vectors'] / 1e6:g}M | "
            f"{p['nodes']} | {p['ram_per_node_gb']} GB | {p['disk_per_node_tb']} TB | "
            f"{p['build_hours']} h | {lat['image']} | {lat['text']} | {p['text']['qps']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs=2, help="two scale.py --json results (two shard sizes)")
    ap.add_argument("--totals", default="1e9,5e9")
    ap.add_argument("--shard", type=float, default=0, help="vectors per shard (default: the "
                    "larger measured size)")
    ap.add_argument("--node-cores", type=int, default=32)
    ap.add_argument("--node-ram", type=float, default=256, help="GB")
    ap.add_argument("--node-disk", type=float, default=8, help="TB")
    ap.add_argument("--build-cores", type=int, default=2,
                    help="cores the measured builds used (for runs without CPU seconds)")
    ap.add_argument("--latency", choices=("cpu", "wall"), default="cpu",
                    help="per-query latencies to simulate from (default: CPU time)")
    ap.add_argument("--network-ms", type=float, default=1.0)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    runs = [shard_costs(json.loads(Path(p).read_text()), args.latency, args.build_cores)
            for p in args.runs]
    if len({(r["regime"], r["dim"], r["codec"]) for r in runs}) > 1:
        raise SystemExit("the two runs must share a regime, dimension and codec")
    size = int(args.shard or max(r["n"] for r in runs))
    shard = at_size(runs, size)
    rng = np.random.default_rng(0)
    plans = [plan(shard, float(t), args, rng) for t in args.totals.split(",")]
    print("measured: " + ", ".join(
        f"{r['n']:,} x {r['dim']} {r['regime']} {r['codec']} (load average build "
        f"{r['load_avg']['build']}, queries {r['load_avg']['query']})" for r in runs)
          + f"; latencies: {shard['latency_clock']}")
    print(f"shard: {size:,} x {shard['dim']} ({shard['codec']}), RAM "
          f"{_gb(shard['ram']):.2f} GB, disk {_gb(shard['disk']):.1f} GB, build "
          f"{shard['build_cpu_s']:.0f} CPU s; nodes: {args.node_cores} "
          f"cores, {args.node_ram:g} GB RAM, {args.node_disk:g} TB disk; network "
          f"{args.network_ms} ms")
    print(table(plans))
    af = AUTOFAISS
    print(f"autofaiss (published): {af['vectors'] / 1e9}B x {af['dim']} in {af['index_gb']} GB "
          f"({af['index_gb'] * 1e9 / af['vectors']:.0f} bytes/vector), built on "
          f"{af['machines']} machines in {af['hours']} h")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"args": vars(args), "shard_vectors": size,
             "measured": [{k: v for k, v in r.items() if k != "latencies"} for r in runs],
             "plans": plans, "autofaiss": af},
            indent=1))


if __name__ == "__main__":
    main()
