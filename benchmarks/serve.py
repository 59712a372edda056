"""HTTP overhead: the same text searches through the Python API and through `retrieval serve`.

Builds a demo collection, starts the real server process on a free loopback port, then in one
run, alternating request by request so that machine noise hits all paths alike, measures
single-request latency (p50/p99) and requests per second for text searches:

* api:   ``Collection.search`` in this process;
* http:  ``POST /search`` over a keep-alive connection with the standard library's client
         (``http.client``: the least client-side cost, so the figure is the server's);
* httpx: the same with ``httpx`` (what ``retrieval.interfaces.client`` uses; its own Python costs
         about 0.7 ms a request here);

plus requests per second with 4 concurrent httpx clients. The HTTP overhead is the difference
of the p50 latencies against the API (target: under 5 ms). The server also reports how long
each search took inside it (``took_ms``), which splits the overhead into search and transport.
Every request searches a text not searched before, so the text-embedding cache never answers.

Then, with ViT-B-32 (random weights, seeded) on 200 photo-like JPEGs: the warm text-query
encode as the server runs it (the collection's ONNX text tower with the server's session
settings), p50 and p99 over distinct queries (target: p50 <= 25 ms), and the whole search
inside a real server (``took_ms``).

    python benchmarks/serve.py [--n 300] [--requests 300] [--skip-vit]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUERIES = ["a red circle", "a small green triangle", "a blue square at the top left",
           "a yellow star and a purple cross", "a cross", "a large orange star"]
HERE = Path(__file__).resolve().parent


def distinct(n: int, tag: str) -> list[str]:
    """n texts no search has seen (numbered variants of the demo queries)."""
    return [f"{QUERIES[i % len(QUERIES)]} number {tag}{i}" for i in range(n)]


def start_server(collection: Path, port: int, extra: list[str] | None = None
                 ) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("retrieval")
    return subprocess.Popen([str(exe), "--collection", str(collection), "serve", "--port",
                             str(port), *(extra or [])], stderr=subprocess.DEVNULL)


def wait_ready(client: Any) -> None:
    import httpx

    for _ in range(600):
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def vit_encode(root: Path, requests: int) -> dict[str, float]:
    """Warm ViT-B-32 text encoding as the server does it, and its searches inside a server."""
    import httpx

    from retrieval import Collection

    ckpt = root / "vitb32-random.pt"
    subprocess.run([sys.executable, "-c",
                    "import sys, torch, open_clip; torch.manual_seed(0); torch.save("
                    "open_clip.create_model('ViT-B-32').state_dict(), sys.argv[1])", ckpt],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, HERE.parent.parent / "shared" / "peers" / "clip-retrieval" /
                    "gen_imgs.py", root / "jpegs", "200", "1"], check=True, capture_output=True)
    col = Collection(root / "vit", model="ViT-B-32", pretrained=str(ckpt), device="cpu")
    col.index([root / "jpegs"])
    col.set_search_threads(1)  # as the server sets it: one core per search, one search per core
    encoder = col.encoder  # the encoder a server opens: ONNX, weights pre-packed
    for q in distinct(20, "warm"):
        encoder.embed_texts([q])
    ms = [timed(lambda q=q: encoder.embed_texts([q]))[0] for q in distinct(requests, "enc")]
    col.close()
    port = free_port()
    server = start_server(root / "vit", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as hx:
            wait_ready(hx)
            for q in distinct(20, "srvwarm"):
                hx.post("/search", json={"text": q, "k": 10}).raise_for_status()
            took = [hx.post("/search", json={"text": q, "k": 10}).raise_for_status().json()
                    ["took_ms"] for q in distinct(requests, "srv")]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"encode_p50_ms": statistics.median(ms), "encode_p99_ms": pct(ms, 99),
            "server_search_p50_ms": statistics.median(took), "type": type(encoder).__name__}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    return float(statistics.quantiles(xs, n=100)[int(q) - 1]) if len(xs) > 1 else xs[0]


class PlainClient:
    """POST JSON over one keep-alive connection, reconnecting if the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")
        return json.loads(payload)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(ms), "p99_ms": pct(ms, 99),
            "rps": 1000 / statistics.mean(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="images in the collection")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--skip-vit", action="store_true", help="only the demo collection part")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    import httpx

    from retrieval import Collection
    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root / "images", args.n, seed=11, size=IMAGE_SIZE)
        col = Collection(root / "col", model="demo")
        col.index([root / "images"])
        port = free_port()
        server = start_server(root / "col", port)
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=30) as hx:
                wait_ready(hx)
                plain = PlainClient(port)
                paths: dict[str, Callable[[str], Any]] = {
                    "api": lambda q: col.search(q, k=10),
                    "http": lambda q: plain.post("/search", {"text": q, "k": 10}),
                    "httpx": lambda q: hx.post("/search", json={"text": q, "k": 10}
                                               ).raise_for_status().json(),
                }
                for name, fn in paths.items():  # warm up every path
                    for q in distinct(len(QUERIES), f"warm-{name}-"):
                        fn(q)
                ms: dict[str, list[float]] = {name: [] for name in paths}
                server_ms: list[float] = []
                qs = distinct(args.requests, "q")
                for q in qs:
                    for name, fn in paths.items():
                        q = f"{q} via {name}"  # each path embeds its own text
                        took, out = timed(lambda fn=fn, q=q: fn(q))
                        ms[name].append(took)
                        if name == "http":
                            server_ms.append(out["took_ms"])
                clients = [httpx.Client(base_url=url, timeout=30) for _ in range(4)]
                t = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda iq: clients[iq[0] % 4].post(
                        "/search", json={"text": iq[1], "k": 10}).raise_for_status(),
                        enumerate(distinct(len(qs), "conc"))))
                conc_rps = len(qs) / (time.perf_counter() - t)
                for c in clients:
                    c.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
        res: dict[str, Any] = {name: summary(v) for name, v in ms.items()}
        res["server_search_p50_ms"] = statistics.median(server_ms)
        res["httpx_rps_4_clients"] = conc_rps
        res["requests"] = len(qs)
        api50 = res["api"]["p50_ms"]
        print(f"{args.n} images, {len(qs)} text searches per path (k=10), cpus {os.cpu_count()}")
        for name in paths:
            r = res[name]
            extra = f"  (+{r['p50_ms'] - api50:.2f} ms at p50)" if name != "api" else ""
            print(f"{name:<6} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"{r['rps']:5.0f} req/s{extra}")
        print(f"search time inside the server (took_ms): p50 {res['server_search_p50_ms']:.2f} ms")
        print(f"httpx, 4 concurrent clients: {conc_rps:.0f} req/s")
        res["overhead_p50_ms"] = res["http"]["p50_ms"] - api50
        res["overhead_httpx_p50_ms"] = res["httpx"]["p50_ms"] - api50
        print(f"http overhead at p50: {res['overhead_p50_ms']:.2f} ms with http.client, "
              f"{res['overhead_httpx_p50_ms']:.2f} ms with httpx (target < 5 ms)")
        if not args.skip_vit:
            res["vit_b_32"] = vit = vit_encode(root, args.requests)
            print(f"ViT-B-32 warm text-query encode ({vit['type']}, the server's settings): "
                  f"p50 {vit['encode_p50_ms']:.2f} ms, p99 {vit['encode_p99_ms']:.2f} ms "
                  f"(target p50 <= 25 ms); whole search inside the server (took_ms): p50 "
                  f"{vit['server_search_p50_ms']:.2f} ms")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
