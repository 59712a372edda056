"""Decode worker processes: they die with the run that started them, never print a traceback
on Ctrl-C, need no ``__main__`` guard in the caller's script, and a worker that dies does not
stop the run (issue 11, items 4, 7 and 8)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import make_image, retrieval_exe, run_cli


def _workers_of(parent: int) -> list[int]:
    """Live decode workers started by ``parent`` (they carry its pid on their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"retrieval.ingest.pool" in cmd and str(parent).encode() in cmd and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _state(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _embedded(col: Path) -> int:
    """Images whose vectors the run has committed so far (0 before its catalog exists)."""
    if not (col / "catalog.sqlite").exists():
        return 0
    with sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True) as db:
        try:
            return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        except sqlite3.OperationalError:  # its tables are not created yet
            return 0


def _freeze_mid_run(proc: subprocess.Popen[str], col: Path) -> list[int]:
    """Stop the run and its workers once both workers exist and its first batch is committed,
    and prove it has work left.

    Timing alone (a sleep, then the signal) let a fast machine finish all 100 images first, so
    the signal landed on a run that was already exiting. Frozen, the run cannot progress; with
    fewer than 100 vectors committed, whatever the test sends next lands mid-run. Waiting for
    the first batch keeps the signal out of the start-up (workers start while the model loads;
    a Ctrl-C inside a library's import can be swallowed by its bare ``except:``, as a loaded
    machine showed twice). SIGCONT the returned pids to let it go on."""
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2 and _embedded(col) > 0,
              what="two decode workers and a first batch")
    frozen = [proc.pid, *_workers_of(proc.pid)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    _wait_for(lambda: all(_state(pid) in ("T", "gone") for pid in frozen), timeout=10,
              what="the run to stop")
    assert proc.poll() is None and _embedded(col) < 100, "the run ended before it was frozen"
    return frozen


def _signal_state(pid: int) -> dict[str, str]:
    """Each thread's SIGINT state (ignored, blocked, caught, pending) and name, as the kernel
    sees it: which thread could take the signal, and whether anything catches it. (This test
    has failed in some full-suite runs with the signal not acted on: exit 0, all images
    added; this says why when it does.)"""
    out: dict[str, str] = {}
    for task in (Path("/proc") / str(pid) / "task").glob("*"):
        try:
            fields = dict(line.split(":\t", 1) for line in
                          (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        bits = {k: int(fields.get(k, "0"), 16) >> (signal.SIGINT - 1) & 1
                for k in ("SigIgn", "SigBlk", "SigCgt", "SigPnd", "ShdPnd")}
        out[f"{task.name} {fields.get('Name', '').strip()}"] = " ".join(
            k for k, v in bits.items() if v) or "-"
    return out


def _resume(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough photo-sized JPEGs that decoding takes a few seconds with two workers."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(100):
        make_image(folder / f"p{i:03d}.jpg", i, size=(1400, 1050))
    return folder


def _start_index(photos: Path, col: Path, **popen) -> subprocess.Popen[str]:
    return subprocess.Popen([retrieval_exe(), "--collection", str(col), "index", str(photos),
                             "--model", "demo", "--workers", "2", "--batch-size", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def test_kill_9_of_the_run_takes_its_workers_with_it(tmp_path, photos):
    """Issue 11.4: after kill -9 of `index`, its decode workers stayed alive (re-parented)."""
    proc = _start_index(photos, tmp_path / "col")
    frozen = _freeze_mid_run(proc, tmp_path / "col")
    proc.kill()
    proc.wait()
    _resume(frozen)
    _wait_for(lambda: not _workers_of(proc.pid), timeout=10, what="the workers to exit")


def test_ctrl_c_is_one_line_and_no_worker_survives(tmp_path, photos):
    """Issue 11.8: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) printed a
    traceback per worker, and could leave the run blocked on a futex with its workers alive.
    A model's first run (its export made on a thread beside the run) lost the line: the
    exporter's quiet swapped sys.stderr for the whole process."""
    first_run = {**os.environ, "RETRIEVAL_EXPORTS": str(tmp_path / "no-exports-yet")}
    proc = _start_index(photos, tmp_path / "col", start_new_session=True, env=first_run)
    frozen = _freeze_mid_run(proc, tmp_path / "col")
    seen = _signal_state(proc.pid)  # for the message below, should the signal be ignored
    os.killpg(proc.pid, signal.SIGINT)  # pending until the group runs again
    _resume(frozen)
    out, err = proc.communicate(timeout=60)  # a hang fails here
    assert proc.returncode == 130, (out, err, seen)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "Interrupted: finished batches are saved; run the same command again to continue."]
    assert not _workers_of(proc.pid)
    # The same command again (in this process: what is checked is the collection it left)
    again = run_cli("index", photos, "--json", collection=tmp_path / "col")
    summary = json.loads(again.stdout)
    assert summary["failed"] == 0 and summary["added"] + summary["unchanged"] == 100


def test_a_script_without_a_main_guard_can_index(tmp_path, photos):
    """Issue 11.7: spawned workers re-imported the caller's main module, so a plain script had
    to guard its entry point."""
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(f"""
        from retrieval import Collection
        print("imported", flush=True)  # runs once: workers do not import this script
        col = Collection({str(tmp_path / 'col')!r}, model="demo")
        summary = col.index([{str(photos)!r}], workers=2)
        print("added", summary.added, "failed", summary.failed)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["imported", "added", "100", "failed", "0"]


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost(tmp_path, photos):
    proc = _start_index(photos, tmp_path / "col")
    frozen = _freeze_mid_run(proc, tmp_path / "col")
    os.kill(frozen[1], signal.SIGKILL)  # starting or decoding: either way the run must recover
    _resume(frozen)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.startswith("100 added") and "0 failed" in out, out


def test_a_file_that_kills_its_decoder_fails_alone(tmp_path):
    """A file whose decoding kills the worker process (as a decoder crash on a hostile file
    would; here a watcher kills any worker that has that file open) fails with a reason; the
    run goes on and the files around it are decoded."""
    import threading

    from PIL import Image

    from retrieval.ingest.pool import decoded
    from retrieval.ingest.workers import DecodeTask
    from retrieval.media import ImageSpec

    folder = tmp_path / "imgs"
    paths = [make_image(folder / f"{i:02d}.png", i, fmt="PNG") for i in range(24)]
    killer = folder / "killer.png"  # large enough that decoding it takes a while
    Image.effect_noise((2500, 2500), 64).convert("RGB").save(killer, compress_level=1)
    paths.insert(10, killer)
    tasks = [DecodeTask(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    stop = threading.Event()
    kills = []

    def children() -> list[int]:
        """This process's children (the pool's workers among them): read from its threads'
        child lists, not by scanning all of /proc every 2 ms, which kept a core busy."""
        pids: list[int] = []
        lists = [task / "children" for task in Path(f"/proc/{os.getpid()}/task").iterdir()]
        if not any(path.exists() for path in lists):  # a kernel without child lists
            return _workers_of(os.getpid())
        for path in lists:
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in path.read_text().split()]
        return pids

    def watcher() -> None:
        while not stop.is_set():
            for pid in children():
                try:
                    fds = [os.readlink(f"/proc/{pid}/fd/{fd}")
                           for fd in os.listdir(f"/proc/{pid}/fd")]
                except OSError:
                    continue
                if str(killer) in fds:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
            time.sleep(0.002)

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    try:
        spec = ImageSpec((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        results = list(decoded(tasks, spec=spec, max_pixels=10**8, workers=2))
    finally:
        stop.set()
        thread.join()
    assert [r.path for r in results] == [t.path for t in tasks]
    crashed = [r for r in results if r.error]
    assert [r.path for r in crashed] == [str(killer)], [r.error for r in crashed]
    assert "crashed" in crashed[0].error and "SIGKILL" in crashed[0].error
    assert len(kills) >= 2  # in its batch, then alone
    assert all(r.pixels is not None for r in results if not r.error)
