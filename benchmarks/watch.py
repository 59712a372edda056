"""Watch mode: how long a photo takes from appearing in a watched folder to being searchable,
and what a watcher costs while nothing changes.

latency: a :class:`~retrieval.ingest.watch.Watcher` in this process (as ``serve --watch`` runs
it), over a folder of ``--photos`` photos indexed with the shipped demo model. A photo appears,
and this thread searches every 10 ms until a search finds it; ``--rounds`` photos each way:

* written: the photo is written into the folder (a camera's upload, a save): it waits the
  settle time (1 s) once its last byte is written;
* moved: the photo was written outside a minute earlier and is moved in (a rename, a move, a
  copy that keeps its time): two looks 0.2 s apart clear it.

The baseline, in the same run: ``Collection.index([photo])`` of a photo of the same size in a
collection of its own, the indexing work itself; the difference is what watching adds.

idle: ``retrieval index FOLDER --watch`` as a process (as a systemd unit runs it), once with
file events and once with ``--poll``, side by side over the same folder: the CPU seconds (user
and system, all threads, from /proc/PID/stat) each spends during ``--idle`` seconds after it
reports that it is watching, as a share of one core, with ``--extra-files`` other files in
the folder (polling looks at every file; events cost nothing per file); and in the same
minute a Watcher on a thread of this process (file events), by ``resource.getrusage`` while
this thread sleeps.

    python benchmarks/watch.py --json benchmarks/results/watch-$(hostname).json
    python benchmarks/watch.py --rounds 3 --idle 10   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SIZE = (2000, 1500)  # a photo as phones' "optimised" uploads and messengers keep them


def _photo(path: Path, seed: int) -> Path:
    from conftest import make_image

    return make_image(path, seed=seed, size=SIZE)


def _until_found(col: Any, path: Path, timeout: float = 60.0) -> float:
    """Search every 10 ms until ``path`` is among the hits; the time it was found."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(h.path == str(path) for h in col.search("a photo", k=10_000)):
            return time.monotonic()
        time.sleep(0.01)
    raise SystemExit(f"{path} was not found within {timeout:.0f} s")


def latency(work: Path, photos: int, rounds: int) -> dict[str, Any]:
    from retrieval import Collection
    from retrieval.ingest.watch import Watcher

    folder, outside = work / "photos", work / "outside"
    for i in range(photos):
        _photo(folder / f"p{i:04d}.jpg", seed=i)
    for i in range(rounds):
        _photo(outside / f"m{i:02d}.jpg", seed=10_000 + i)
        old = time.time() - 60
        os.utime(outside / f"m{i:02d}.jpg", (old, old))
    col = Collection(work / "col", model="demo")
    events: list[Any] = []
    watcher = Watcher(col, [folder], on_event=events.append)
    watcher.start()
    while not any(e.kind == "watching" for e in events):
        time.sleep(0.05)
    written, moved = [], []
    for i in range(rounds):
        time.sleep(0.5)  # a pause between photos: each one alone, as a person adds them
        path = folder / f"w{i:02d}.jpg"
        start = time.monotonic()
        _photo(path, seed=20_000 + i)
        written.append(_until_found(col, path) - start)
        time.sleep(0.5)
        path = folder / f"m{i:02d}.jpg"
        start = time.monotonic()
        os.rename(outside / path.name, path)
        moved.append(_until_found(col, path) - start)
    watcher.stop()
    watcher.join()
    col.close()
    base = _baseline(work, rounds)
    return {"photos_in_folder": photos, "photo_size": list(SIZE), "rounds": rounds,
            "written_s": _stats(written), "moved_s": _stats(moved), "index_one_s": _stats(base),
            "written_over_index_one": round(statistics.median(written)
                                            / statistics.median(base), 2)}


def _baseline(work: Path, rounds: int) -> list[float]:
    """``Collection.index([photo])`` of one new photo, in a collection of its own (the model
    loaded and the collection made first)."""
    from retrieval import Collection

    col = Collection(work / "base", model="demo")
    col.index([_photo(work / "base-photos" / "first.jpg", seed=1)], workers=0)
    times = []
    for i in range(rounds):
        path = _photo(work / "base-photos" / f"b{i:02d}.jpg", seed=30_000 + i)
        start = time.monotonic()
        col.index([path], workers=0)
        _until_found(col, path)
        times.append(time.monotonic() - start)
    col.close()
    return times


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process, all its threads (and waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def idle(work: Path, seconds: float, extra: int) -> dict[str, Any]:
    """``index --watch`` with events and with --poll over the same folder, side by side, with
    ``extra`` other files in 100 subfolders (a poll looks at every file, whatever its kind)."""
    exe = shutil.which("retrieval", path=str(Path(sys.executable).parent)) or "retrieval"
    folder = work / "photos"
    for i in range(extra):
        (folder / "other" / f"{i % 100:02d}").mkdir(parents=True, exist_ok=True)
        (folder / "other" / f"{i % 100:02d}" / f"f{i:06d}.dat").write_bytes(b"")
    runs = {}
    for mode, extra in (("events", []), ("polling", ["--poll"])):
        log = work / f"idle-{mode}.log"
        proc = subprocess.Popen([exe, "--collection", str(work / "col"), "index", str(folder),
                                 "--watch", "--no-progress", *extra],
                                stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
        runs[mode] = (proc, log)
        while b"watching for changes" not in log.read_bytes():  # one at a time: the lock
            if proc.poll() is not None:
                raise SystemExit(f"index --watch exited: {log.read_text()}")
            time.sleep(0.1)
    watcher, col = _watching_here(work / "col", folder)
    time.sleep(2.0)  # past the start-up
    before = {m: _cpu_seconds(p.pid) for m, (p, _) in runs.items()}
    here = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    watcher.stop()
    watcher.join()
    col.close()
    used = after.ru_utime + after.ru_stime - here.ru_utime - here.ru_stime
    out: dict[str, Any] = {"seconds": seconds, "in_process": {
        "cpu_s": round(used, 3), "share_of_a_core": round(used / seconds, 5)}}
    for mode, (proc, _) in runs.items():
        used = _cpu_seconds(proc.pid) - before[mode]
        out[mode] = {"cpu_s": round(used, 3), "share_of_a_core": round(used / seconds, 5)}
        proc.terminate()
        proc.wait(60)
    out["files_in_folder"] = sum(1 for p in folder.rglob("*") if p.is_file())
    return out


def _watching_here(path: Path, folder: Path) -> tuple[Any, Any]:
    """A Watcher on a thread of this process (file events), once it watches."""
    from retrieval import Collection
    from retrieval.ingest.watch import Watcher

    col = Collection(path)
    events: list[Any] = []
    watcher = Watcher(col, [folder], on_event=events.append)
    watcher.start()
    while not any(e.kind == "watching" for e in events):
        time.sleep(0.05)
    return watcher, col


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--extra-files", type=int, default=10_000,
                        help="other files in the folder while idle (polling looks at each)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watch-bench") as tmp:
        work = Path(tmp)
        lat = latency(work, args.photos, args.rounds)
        print(f"latency, file appearing -> searchable ({args.rounds} photos of "
              f"{SIZE[0]}x{SIZE[1]}, {args.photos} in the folder): written in place median "
              f"{lat['written_s']['median']:.2f} s (min {lat['written_s']['min']:.2f}, max "
              f"{lat['written_s']['max']:.2f}); moved in {lat['moved_s']['median']:.2f} s; "
              f"index of one photo alone {lat['index_one_s']['median']:.2f} s "
              f"(written / alone = {lat['written_over_index_one']})")
        quiet = idle(work, args.idle, args.extra_files)
        for mode in ("in_process", "events", "polling"):
            print(f"idle {mode}: {quiet[mode]['cpu_s']:.2f} CPU s in {args.idle:.0f} s = "
                  f"{100 * quiet[mode]['share_of_a_core']:.3f}% of a core "
                  f"({quiet['files_in_folder']} files watched)")
    result = {"host": platform.node(), "python": platform.python_version(),
              "cpus": os.cpu_count(), "load": os.getloadavg(), "latency": lat, "idle": quiet}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
