"""Throughput and latency of `retrieval serve` as concurrent clients grow.

Starts the real server on a loopback port over a demo collection (and, unless ``--skip-vit``,
over a ViT-B-32 collection with random weights, where the text encoder dominates), then for
1, 2, 4, 8, 16 and 50 clients, each on its own keep-alive connection, sends text searches
never searched before (the text cache never answers) for a fixed time and reports requests per
second and the p50 / p99 latency clients saw. Each configuration is run in the same script
with ``--search-threads 1`` (searches one at a time, as before) and with the default (one per
core), so the ratio is what concurrency buys on this machine.

    python benchmarks/serve_load.py [--seconds 6] [--clients 1,2,4,8,16,50] [--skip-vit]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve import free_port, pct, start_server


def wait_ready(port: int) -> None:
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def load(port: int, clients: int, seconds: float, tag: str) -> dict[str, float]:
    """``clients`` threads searching as fast as answers come, for ``seconds``."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start.wait()
        i = 0
        while time.perf_counter() < stop:
            body = json.dumps({"text": f"a red circle {tag} {c} {i}", "k": 10}).encode()
            t = time.perf_counter()
            conn.request("POST", "/search", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            lat[c].append((time.perf_counter() - t) * 1000)
            errors[c] += resp.status != 200
            i += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = [x for xs in lat for x in xs]
    return {"clients": clients, "rps": len(ms) / wall, "p50_ms": statistics.median(ms),
            "p99_ms": pct(ms, 99), "requests": len(ms), "errors": sum(errors)}


def sweep(collection: Path, clients: list[int], seconds: float, name: str
          ) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    for label, extra in (("one at a time", ["--search-threads", "1"]), ("default", [])):
        port = free_port()
        server = start_server(collection, port, extra)
        try:
            wait_ready(port)
            load(port, 2, 1.0, "warm")
            rows = out[label] = []
            for n in clients:
                r = load(port, n, seconds, f"{label}{n}")
                rows.append(r)
                print(f"{name:<9} {label:<14} {n:>3} clients  {r['rps']:6.1f} req/s  "
                      f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                      + (f"  {r['errors']} errors" if r["errors"] else ""), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="images in the demo collection")
    ap.add_argument("--seconds", type=float, default=6.0, help="per client count")
    ap.add_argument("--clients", default="1,2,4,8,16,50")
    ap.add_argument("--skip-vit", action="store_true")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    from retrieval import Collection
    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import write_dataset

    print(f"cpus {os.cpu_count()}, {args.seconds:g} s per client count", flush=True)
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root / "images", args.n, seed=11, size=IMAGE_SIZE)
        Collection(root / "demo", model="demo").index([root / "images"])
        res["demo"] = sweep(root / "demo", clients, args.seconds, "demo")
        if not args.skip_vit:
            ckpt = root / "vitb32-random.pt"
            subprocess.run([sys.executable, "-c",
                            "import sys, torch, open_clip; torch.manual_seed(0); torch.save("
                            "open_clip.create_model('ViT-B-32').state_dict(), sys.argv[1])",
                            ckpt], check=True, capture_output=True)
            Collection(root / "vit", model="ViT-B-32", pretrained=str(ckpt),
                       device="cpu").index([root / "images"])
            res["vit_b_32"] = sweep(root / "vit", clients, args.seconds, "ViT-B-32")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
