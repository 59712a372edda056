"""Video indexing speed and memory: how many seconds of video ``retrieval.video.shots`` gets
through per second of wall time (the real-time factor, RTF), how much of that is decoding, and
how much memory it takes, on generated videos of several sizes.

The videos are written once into ``--cache`` (``tests/videos.py``: clips of synthetic scenes
of 1.5-4.5 s with hard cuts, drifting, with sensor-like noise, encoded at the bitrates phones
write: 16 Mbit/s for 1080p30 H.264, 45 for 4K H.264, 25 for 4K HEVC):

* 1080p: 60 s, 30 fps, H.264 (the common case: a phone or camera clip);
* 480p: 60 s, 30 fps, H.264 at 3 Mbit/s; and 10 minutes of it (memory must not grow);
* 4K: 8 s, 30 fps, H.264 and HEVC (phones record 4K in both);
* vfr: 30 s of 1080p H.264 at a variable frame rate (frame intervals 0.4-1.6 periods).

Each case runs in a fresh process per measurement (so the memory peak is its own),
``--rounds`` times each of, alternated:

* decode: every frame decoded by PyAV as the engine configures it (threads, all else skipped)
  and dropped: the baseline, the least any indexer that looks at every frame can pay;
* shots: ``list(shots(path))``: decoding, the cut thumbnails, the keyframes;
* fast: ``list(shots(path, fast=True))`` (no deblocking, no non-reference frames);
  ``fast_drift`` is the mean absolute difference of its keyframes from the shots run's
  (0-255; None when its parts differ).

The best round of each is kept (the machine is shared; ``os.getloadavg`` is recorded). RTF =
video seconds / wall seconds. ``decode_cpu_share`` = CPU seconds (all threads) of decode /
of shots: the part of the work that is decoding, steadier than wall time under load. Memory:
the process's peak RSS (VmHWM) minus its RSS before the video was opened, the shots consumed
one at a time (as an indexer does). With ``--embed``, the keyframes are also embedded by the
shipped demo model (ONNX Runtime, as indexing does; in another process, model loading not
counted) and ``rtf_with_embedding`` = video seconds / (shots + embedding).

    python benchmarks/video.py --embed --json benchmarks/results/video-$(hostname).json
    python benchmarks/video.py --cases 1080p --rounds 1 --embed   # quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# name: (size, seconds, fps, codec, Mbit/s, variable frame rate)
CASES: dict[str, tuple[tuple[int, int], float, float, str, int, bool]] = {
    "1080p": ((1920, 1080), 60.0, 30, "libx264", 16, False),
    "480p": ((854, 480), 60.0, 30, "libx264", 3, False),
    "480p-10min": ((854, 480), 600.0, 30, "libx264", 3, False),
    "4k-h264": ((3840, 2160), 8.0, 30, "libx264", 45, False),
    "4k-hevc": ((3840, 2160), 8.0, 30, "libx265", 25, False),
    "vfr": ((1920, 1080), 30.0, 30, "libx264", 16, True),
}
MODES = ("decode", "shots", "fast")
CLIP_SECONDS = 3.0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def video_path(cache: Path, name: str) -> Path:
    """The case's video, written on first use."""
    from videos import Clip, write_video

    from retrieval.training.synthetic import random_scene

    size, seconds, fps, codec, mbit, vfr = CASES[name]
    suffix = ".mkv" if codec == "libx265" else ".mp4"
    path = cache / f"{name}-{size[0]}x{size[1]}-{seconds:.0f}s-{mbit}M{suffix}"
    if not path.exists():
        rng = random.Random(name)
        clips = []
        left = seconds
        while left > 1e-6:
            length = min(left, rng.uniform(0.5, 1.5) * CLIP_SECONDS)
            clips.append(Clip(random_scene(rng), length))
            left -= length
        cache.mkdir(parents=True, exist_ok=True)
        part = path.with_name("partial-" + path.name)
        t = time.perf_counter()
        cuts = write_video(part, clips, fps=fps, size=size, codec=codec, vfr=vfr,
                           bitrate=mbit * 1_000_000)
        part.rename(path)
        path.with_suffix(".cuts.json").write_text(json.dumps(cuts))
        print(f"wrote {path.name} ({time.perf_counter() - t:.0f} s)", flush=True)
    return path


def _rss() -> dict[str, int]:
    """Current and peak resident memory of this process, bytes (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _decode_only(path: str, threads: int) -> int:
    """Decode every frame as the engine does, keep none: the baseline."""
    from retrieval.video.probe import open_input, video_stream
    from retrieval.video.shots import configure

    n = 0
    with open_input(path) as container:
        stream = video_stream(container)
        configure(container, stream, threads)
        for packet in container.demux(stream):
            n += len(stream.decode(packet))
    return n


def _embed(keyframes: list[Any]) -> float:
    """Seconds the demo model takes to embed the keyframes (model loaded before timing)."""
    import numpy as np

    from retrieval import ModelSpec, load_encoder
    from retrieval.media import to_model_input

    encoder = load_encoder(ModelSpec.parse("demo"), device="cpu")
    spec = encoder.image_spec
    encoder.embed_images(np.stack([to_model_input(keyframes[0], spec)]))  # warm up
    t = time.perf_counter()
    for lo in range(0, len(keyframes), 32):
        encoder.embed_images(np.stack([to_model_input(k, spec) for k in keyframes[lo:lo + 32]]))
    return time.perf_counter() - t


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(path: str, mode: str, threads: int) -> dict[str, Any]:
    """One measurement in this (fresh) process; printed as JSON by ``--child``. The shots are
    consumed as an indexer would (each keyframe dropped once handled), so the memory peak is
    the engine's, not a list of every keyframe."""
    from retrieval.video import probe, shots

    info = probe(path)
    before, cpu = _rss()["VmRSS"], _cpu()
    t = time.perf_counter()
    out: dict[str, Any] = {}
    if mode == "decode":
        out["frames"] = _decode_only(path, threads)
    elif mode in ("shots", "fast"):
        stream = shots(path, info=info, threads=threads, fast=mode == "fast")
        parts = indices = 0
        for shot in stream:
            parts, indices = parts + 1, shot.index + 1
        out.update(frames=stream.frames, shots=indices, parts=parts, cuts=stream.cuts,
                   peak_pictures=stream.peak_pictures)
    elif mode == "drift":
        out["drift"] = _drift(path, threads)
    elif mode == "embed":
        out["embed_seconds"] = _embed([s.keyframe for s in shots(path, info=info)])
    out["seconds"] = time.perf_counter() - t
    out["cpu_seconds"] = _cpu() - cpu
    out["peak_rss_delta"] = _rss()["VmHWM"] - before
    return out


def _drift(path: str, threads: int) -> float | None:
    """Mean absolute difference (0-255) of the fast run's keyframes from the plain run's,
    the two read side by side; None when their parts differ. (A keyframe of the fast run may
    be a frame or two off, where the plain run's was a skipped frame: up to 0.1 s apart.)"""
    import numpy as np

    from retrieval.video import shots

    total, n = 0.0, 0
    for a, b in zip(shots(path, threads=threads), shots(path, threads=threads, fast=True),
                    strict=False):
        if (a.index, a.part) != (b.index, b.part) or abs(a.keyframe_time - b.keyframe_time) > 0.1:
            return None
        total += float(np.abs(np.asarray(a.keyframe, np.int16)
                              - np.asarray(b.keyframe, np.int16)).mean())
        n += 1
    return round(total / max(n, 1), 2)


def _run_child(path: Path, mode: str, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), mode, "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _cut_accuracy(found: list[float], truth: list[float]) -> dict[str, int]:
    """Cuts found within half a frame of a true cut, missed, and spurious."""
    hits = sum(any(abs(f - t) < 0.01 for f in found) for t in truth)
    return {"true": len(truth), "found": len(found), "hits": hits,
            "spurious": len(found) - hits, "missed": len(truth) - hits}


def run_case(cache: Path, name: str, rounds: int, threads: int, embed: bool
             ) -> dict[str, Any]:
    from retrieval.video import probe

    path = video_path(cache, name)
    info = probe(str(path))
    duration = info.duration or CASES[name][1]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:  # alternated, so a change of load touches all
            runs[mode].append(_run_child(path, mode, threads))
    best = {m: min(rs, key=lambda r: r["seconds"]) for m, rs in runs.items()}
    dec, sh, fast = best["decode"], best["shots"], best["fast"]
    truth = json.loads(path.with_suffix(".cuts.json").read_text())
    row = {
        "case": name, "size": f"{info.width}x{info.height}", "codec": info.codec,
        "video_seconds": round(duration, 2), "frames": sh["frames"],
        "mbit_s": round(path.stat().st_size * 8 / duration / 1e6, 1),
        "decode_s": round(dec["seconds"], 2), "shots_s": round(sh["seconds"], 2),
        "fast_s": round(fast["seconds"], 2),
        "rtf_decode": round(duration / dec["seconds"], 1),
        "rtf_shots": round(duration / sh["seconds"], 1),
        "rtf_fast": round(duration / fast["seconds"], 1),
        "decode_cpu_share": round(dec["cpu_seconds"] / sh["cpu_seconds"], 2),
        "fast_cpu_ratio": round(fast["cpu_seconds"] / sh["cpu_seconds"], 2),
        "fast_drift": _run_child(path, "drift", threads)["drift"],
        "fps_shots": round(sh["frames"] / sh["seconds"], 1),
        "peak_mb_decode": round(dec["peak_rss_delta"] / 2**20, 1),
        "peak_mb_shots": round(sh["peak_rss_delta"] / 2**20, 1),
        "peak_pictures": sh["peak_pictures"], "shots": sh["shots"], "parts": sh["parts"],
        "keyframes_per_min": round(sh["parts"] / duration * 60, 1),
        "cuts": _cut_accuracy(sh["cuts"], truth), "cuts_fast": _cut_accuracy(fast["cuts"], truth),
        "all_seconds": {m: [round(r["seconds"], 2) for r in rs] for m, rs in runs.items()},
        "all_cpu_seconds": {m: [round(r["cpu_seconds"], 2) for r in rs]
                            for m, rs in runs.items()},
    }
    if embed:
        seconds = _run_child(path, "embed", threads)["embed_seconds"]
        row["embed_s"] = round(seconds, 3)
        row["rtf_with_embedding"] = round(duration / (sh["seconds"] + seconds), 1)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["case", "size", "codec", "video_seconds", "mbit_s", "rtf_decode", "rtf_shots",
            "rtf_fast", "decode_cpu_share", "fast_cpu_ratio", "fast_drift", "peak_mb_decode",
            "peak_mb_shots", "peak_pictures"]
    if any("rtf_with_embedding" in r for r in rows):
        cols.append("rtf_with_embedding")
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print(f"{r['case']}: cuts {r['cuts']}, fast {r['cuts_fast']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"from {', '.join(CASES)}")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="decoder threads (0: FFmpeg's)")
    ap.add_argument("--embed", action="store_true", help="also embed keyframes (demo model)")
    ap.add_argument("--cache", default="/work/bench-cache/video")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.threads)))
        return
    results: dict[str, Any] = {
        "args": vars(args), "cpus": os.cpu_count(), "host": platform.node(),
        "date": datetime.date.today().isoformat(), "load": [load()], "rows": []}
    for name in args.cases.split(","):
        video_path(Path(args.cache), name)  # written before any timing
    for name in args.cases.split(","):
        results["rows"].append(run_case(Path(args.cache), name, args.rounds, args.threads,
                                        args.embed))
        results["load"].append(load())
        print(f"{name}: done, load {load()}", flush=True)
    print_table(results["rows"])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
