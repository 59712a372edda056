"""HTTP overhead: the same text searches through the Python API and through `retrieval serve`.

Builds a demo collection, starts the real server process on a free loopback port, then in one
run measures single-request latency (p50/p99) and requests per second for text searches:

* api:  ``Collection.search`` in this process;
* http: ``POST /search`` over a keep-alive connection (and with 4 concurrent clients).

The HTTP overhead is the difference of the p50 latencies (target: under 5 ms).

    python benchmarks/serve.py [--n 300] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUERIES = ["a red circle", "a small green triangle", "a blue square at the top left",
           "a yellow star and a purple cross", "a cross", "a large orange star"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    return float(statistics.quantiles(xs, n=100)[int(q) - 1]) if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="images in the collection")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    import httpx

    from retrieval import Collection
    from retrieval.demo import IMAGE_SIZE
    from retrieval.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root / "images", args.n, seed=11, size=IMAGE_SIZE)
        col = Collection(root / "col", model="demo")
        col.index([root / "images"])
        port = free_port()
        exe = Path(sys.executable).with_name("retrieval")
        server = subprocess.Popen([str(exe), "--collection", str(root / "col"), "serve",
                                   "--port", str(port)], stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(600):
                    try:
                        if http.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                qs = [QUERIES[i % len(QUERIES)] for i in range(args.requests)]

                def api(q: str) -> float:
                    t = time.perf_counter()
                    col.search(q, k=10)
                    return (time.perf_counter() - t) * 1000

                def over_http(client: httpx.Client, q: str) -> float:
                    t = time.perf_counter()
                    r = client.post("/search", json={"text": q, "k": 10})
                    r.raise_for_status()
                    return (time.perf_counter() - t) * 1000

                for q in QUERIES:  # warm up both sides
                    api(q)
                    over_http(http, q)
                # Alternate the two so that machine noise hits both alike.
                api_ms, http_ms = [], []
                start = time.perf_counter()
                for q in qs:
                    api_ms.append(api(q))
                    http_ms.append(over_http(http, q))
                both = time.perf_counter() - start
                t = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(4)]
                    list(pool.map(lambda iq: over_http(clients[iq[0] % 4], iq[1]),
                                  enumerate(qs)))
                    for c in clients:
                        c.close()
                conc_rps = len(qs) / (time.perf_counter() - t)
        finally:
            server.terminate()
            server.wait(timeout=30)
        res = {
            "api_p50_ms": statistics.median(api_ms), "api_p99_ms": pct(api_ms, 99),
            "http_p50_ms": statistics.median(http_ms), "http_p99_ms": pct(http_ms, 99),
            "api_rps": 1000 / statistics.mean(api_ms), "http_rps": 1000 / statistics.mean(http_ms),
            "http_rps_4_clients": conc_rps, "requests": len(qs), "seconds": both,
        }
        res["overhead_p50_ms"] = res["http_p50_ms"] - res["api_p50_ms"]
        res["ratio_p50"] = res["http_p50_ms"] / res["api_p50_ms"]
        print(f"{args.n} images, {len(qs)} text searches each way (k=10), cpus {os.cpu_count()}")
        print(f"python api : p50 {res['api_p50_ms']:.2f} ms  p99 {res['api_p99_ms']:.2f} ms  "
              f"{res['api_rps']:.0f} req/s")
        print(f"http       : p50 {res['http_p50_ms']:.2f} ms  p99 {res['http_p99_ms']:.2f} ms  "
              f"{res['http_rps']:.0f} req/s (1 client), {conc_rps:.0f} req/s (4 clients)")
        print(f"http overhead at p50: {res['overhead_p50_ms']:.2f} ms "
              f"(x{res['ratio_p50']:.2f}; target < 5 ms)")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
