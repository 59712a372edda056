"""Decode worker processes: they die with the run that started them, never print a traceback
on Ctrl-C, need no ``__main__`` guard in the caller's script, and a worker that dies does not
stop the run (issue 11, items 4, 7 and 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import make_image, retrieval_exe


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
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2, what="two decode workers")
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    _wait_for(lambda: not _workers_of(proc.pid), timeout=10, what="the workers to exit")


def test_ctrl_c_is_one_line_and_no_worker_survives(tmp_path, photos):
    """Issue 11.8: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) printed a
    traceback per worker, and could leave the run blocked on a futex with its workers alive."""
    proc = _start_index(photos, tmp_path / "col", start_new_session=True)
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2, what="two decode workers")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)  # a hang fails here
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "Interrupted: finished batches are saved; run the same command again to continue."]
    assert not _workers_of(proc.pid)
    again = subprocess.run([retrieval_exe(), "--collection", str(tmp_path / "col"), "index",
                            str(photos), "--json"], capture_output=True, text=True, timeout=300)
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
    _wait_for(lambda: len(_workers_of(proc.pid)) == 2, what="two decode workers")
    time.sleep(0.2)  # they are starting or decoding: either way the run must recover
    victims = _workers_of(proc.pid)
    assert victims, "the run ended before a worker could be killed"
    os.kill(victims[0], signal.SIGKILL)
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

    def watcher() -> None:
        while not stop.is_set():
            for pid in _workers_of(os.getpid()):
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
