"""Watch mode (retrieval.ingest.watch, index --watch, serve --watch) on real files and real
file events, with the tiny test model.

Nothing here assumes the machine is fast: every wait is for a condition (a search that finds a
file, an event the watcher reported), with a generous timeout, never a sleep that hopes an
event has come. Sleeps only pace a writer (a file written slowly in chunks).
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import make_image, retrieval_exe

from retrieval import Collection
from retrieval.ingest.changes import ADDED, DELETED, PendingChanges
from retrieval.ingest.watch import Watcher, WatchEvent, WatchOptions

T = TypeVar("T")
TIMEOUT = 90.0
FAST = WatchOptions(settle=0.5, retry_first=0.2, retry_max=1.0)


def wait_for(what: str, check: Callable[[], T], timeout: float = TIMEOUT) -> T:
    """``check()`` once it is truthy; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Watched:
    """A collection of ``root`` kept indexed by a watcher on its own thread."""

    def __init__(self, tmp_path: Path, encoder: Any, options: WatchOptions = FAST,
                 catalog: str | None = None, **index: Any) -> None:
        self.root = tmp_path / "photos"
        self.root.mkdir(exist_ok=True)
        self.col = Collection(tmp_path / "col", encoder=encoder, catalog=catalog)
        self.events: list[WatchEvent] = []
        self.watcher = Watcher(self.col, [self.root], options=options,
                               index={"workers": 0, **index}, on_event=self.events.append)

    def __enter__(self) -> Watched:
        self.watcher.start()
        wait_for("the first pass", lambda: self.seen("watching"))
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()
        assert self.watcher.join(TIMEOUT), "the watcher did not stop"
        self.col.close()

    def seen(self, kind: str) -> list[WatchEvent]:
        return [e for e in list(self.events) if e.kind == kind]

    def names(self, target: str = "image") -> set[str]:
        """What a search finds: paths relative to the root."""
        hits = self.col.search("a picture", target=target, k=10_000)
        return {os.path.relpath(h.path, self.root) for h in hits if h.path}

    def has(self, *names: str, gone: tuple[str, ...] = ()) -> bool:
        found = self.names()
        return set(names) <= found and not set(gone) & found

    def sizes(self) -> dict[str, int]:
        """The sizes the catalog holds, by path relative to the root."""
        hits = self.col.search("a picture", k=10_000)
        return {os.path.relpath(h.path, self.root): h.metadata["size"] for h in hits if h.path}

    def embedded(self) -> int:
        return sum(e.summary.embedded for e in self.seen("indexed") if e.summary)


@pytest.fixture
def watched(tmp_path: Path, encoder: Any) -> Iterator[Watched]:
    with Watched(tmp_path, encoder) as w:
        yield w


# -- the batches ---------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pending_changes_settle_and_keep_renames(tmp_path: Path) -> None:
    """A file is ready once it held still for the settle time; an old file after two looks;
    a gone path waits the whole time (a rename's new name goes first); a folder waits for
    what is written inside it and then covers it; a caption stands for its image."""
    root = tmp_path / "r"
    (root / "new").mkdir(parents=True)
    clock = Clock()
    pending = PendingChanges([str(root)], settle=1.0, clock=clock)
    make_image(root / "moved.jpg", seed=1)
    os.utime(root / "moved.jpg", (time.time() - 3600, time.time() - 3600))  # written long ago
    make_image(root / "fresh.jpg", seed=2)
    make_image(root / "new" / "inside.jpg", seed=3)
    make_image(root / "captioned.png", seed=4)
    (root / "captioned.txt").write_text("a caption")
    pending.add([(DELETED, str(root / "old.jpg")), (ADDED, str(root / "moved.jpg")),
                 (ADDED, str(root / "fresh.jpg")), (ADDED, str(root / "new")),
                 (ADDED, str(root / "new" / "inside.jpg")), (ADDED, str(root / "captioned.txt")),
                 (ADDED, str(root / ".hidden.jpg")), (ADDED, str(root / "notes.doc"))])
    assert len(pending) == 6  # hidden and unindexed names are dropped
    collection = PendingChanges([str(root)], exclude=[str(root / "new")])
    assert collection.add([(DELETED, str(root / "new" / "index.tmp")),
                           (ADDED, str(root / "new" / "inside.jpg"))]) == 0
    assert pending.ready() == []  # first look
    clock.now += 0.3
    assert pending.ready() == [str(root / "moved.jpg")]  # old: two looks are enough
    with open(root / "new" / "inside.jpg", "ab") as f:
        f.write(b"\0")  # still being written: it and its folder wait
    clock.now += 0.8
    assert pending.ready() == [str(root / "captioned.png"), str(root / "fresh.jpg"),
                               str(root / "old.jpg")]  # present first, the gone path last
    clock.now += 1.0
    assert pending.ready() == [str(root / "new")]  # the folder covers what is inside
    assert len(pending) == 0


def test_under_roots_runs_keep_the_roots_and_the_walks_rules(tmp_path: Path,
                                                             encoder: Any) -> None:
    """Changes indexed with under_roots=True: no root is added, a rename reuses its vector,
    links lead only inside, hidden names are left out, a gone folder takes its items along."""
    root = tmp_path / "photos"
    for i in range(2):
        make_image(root / f"a{i}.jpg", seed=i)
    make_image(tmp_path / "outside" / "secret.jpg", seed=9)
    with Collection(tmp_path / "col", encoder=encoder) as col:
        col.index([root], workers=0)
        os.rename(root / "a0.jpg", root / "b0.jpg")
        make_image(root / "sub" / "c.jpg", seed=5)
        os.symlink(tmp_path / "outside" / "secret.jpg", root / "link.jpg")
        make_image(root / ".hidden" / "h.jpg", seed=6)
        s = col.index([root / "b0.jpg", root / "a0.jpg", root / "sub", root / "link.jpg",
                       root / ".hidden" / "h.jpg"], under_roots=True, workers=0)
        assert (s.added, s.removed, s.embedded, s.failed) == (2, 1, 1, 1), s
        assert "links outside the indexed folders" in s.errors[0].reason
        assert col.roots() == [str(root)]
        shutil.rmtree(root / "sub")
        assert col.index([root / "sub"], under_roots=True, workers=0).removed == 1
        assert {os.path.basename(h.path or "") for h in col.search("x", k=50)} == {
            "a1.jpg", "b0.jpg"}


# -- the watcher ---------------------------------------------------------------------------------

def test_changes_are_searchable(watched: Watched) -> None:
    """Added, changed, renamed, moved and deleted files, a caption, and folder trees moved in
    and out: each shows in search results; a rename and a move embed nothing."""
    root = watched.root
    make_image(root / "one.jpg", seed=1)
    make_image(root / "two.jpg", seed=2)
    wait_for("two new files", lambda: watched.has("one.jpg", "two.jpg")
             and watched.embedded() == 2)  # the batch's event comes after its commit
    os.rename(root / "one.jpg", root / "uno.jpg")
    (root / "sub").mkdir()
    os.rename(root / "two.jpg", root / "sub" / "two.jpg")
    wait_for("a rename and a move", lambda: watched.has(
        "uno.jpg", "sub/two.jpg", gone=("one.jpg", "two.jpg")))
    assert watched.embedded() == 2  # the stored vectors were reused

    make_image(root / "uno.jpg", seed=3, size=(80, 60))  # changed in place
    size = (root / "uno.jpg").stat().st_size
    wait_for("a changed file", lambda: watched.sizes().get("uno.jpg") == size)
    (root / "uno.txt").write_text("a rare caption zq7731")
    wait_for("a caption", lambda: any(
        h.text == "a rare caption zq7731" for h in watched.col.search("x", k=50)))

    tree = root.parent / "tree"
    make_image(tree / "deep" / "three.jpg", seed=4)
    shutil.move(str(tree), str(root / "tree"))
    wait_for("a tree moved in", lambda: watched.has("tree/deep/three.jpg"))
    shutil.move(str(root / "tree"), str(root.parent / "away"))
    (root / "sub" / "two.jpg").unlink()
    wait_for("a tree moved out and a deleted file", lambda: watched.names() == {"uno.jpg"})
    assert watched.col.roots() == [str(root)]
    assert not watched.seen("failed")


def test_a_collection_inside_its_watched_folder(tmp_path: Path, encoder: Any) -> None:
    """The collection's own writes (catalog, index files) are no changes to index: a batch
    does not set off the next one."""
    root = tmp_path / "photos"
    make_image(root / "one.jpg", seed=1)
    events: list[WatchEvent] = []
    with Collection(root / "col", encoder=encoder) as col:
        watcher = Watcher(col, [root], options=FAST, index={"workers": 0},
                          on_event=events.append)
        watcher.start()
        try:
            wait_for("the first pass", lambda: any(e.kind == "watching" for e in events))
            make_image(root / "two.jpg", seed=2)
            wait_for("the new file", lambda: sum(
                e.summary.added for e in list(events) if e.summary) == 2)
            batches = len([e for e in events if e.kind == "indexed"])
            time.sleep(3 * FAST.settle)  # time for a batch the last one would set off
            assert len([e for e in events if e.kind == "indexed"]) == batches
            assert watcher.state()["pending"] == 0
        finally:
            watcher.stop()
            assert watcher.join(TIMEOUT)


def test_a_file_written_slowly_is_indexed_once_complete(tmp_path: Path, encoder: Any) -> None:
    """A JPEG written in 40 chunks, 50 ms apart, is indexed once, as the whole file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((400, 300), 64).convert("RGB").save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    with Watched(tmp_path, encoder, WatchOptions(settle=1.5)) as watched:
        path = watched.root / "slow.jpg"
        with open(path, "wb") as f:
            for i in range(40):
                f.write(data[i * len(data) // 40:(i + 1) * len(data) // 40])
                f.flush()
                time.sleep(0.05)
        def batches() -> list[WatchEvent]:
            return [e for e in watched.seen("indexed") if e.summary and e.summary.added
                    + e.summary.updated + e.summary.failed]

        wait_for("the slow file", lambda: watched.has("slow.jpg") and batches())
        assert len(batches()) == 1 and batches()[0].summary is not None
        assert (batches()[0].summary.added, batches()[0].summary.failed) == (1, 0)
        assert watched.sizes() == {"slow.jpg": len(data)}


def _tiny_png(seed: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (8, 8), (seed % 256, seed // 256 % 256, 7 * seed % 256))
    img.putpixel((seed % 8, seed // 8 % 8), (255 - seed % 256, 0, 0))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_a_burst_of_2000_files_is_indexed_in_batches(tmp_path: Path, encoder: Any) -> None:
    """2,000 files written at once, half of them in new folders: all indexed, in batches of
    many files each, with progress reports."""
    progress: list[Any] = []
    files = {(f"{i % 4}/b{i:04d}.png" if i % 2 else f"b{i:04d}.png"): _tiny_png(i)
             for i in range(2000)}
    with Watched(tmp_path, encoder, WatchOptions(settle=0.5, batch=500)) as watched:
        watched.watcher.progress = progress.append
        for name, data in files.items():
            (watched.root / name).parent.mkdir(exist_ok=True)
            (watched.root / name).write_bytes(data)
        def batches() -> list[WatchEvent]:
            return [e for e in watched.seen("indexed") if e.summary and e.summary.added]

        wait_for("2,000 files", lambda: len(watched.names()) == 2000 and sum(
            e.summary.added for e in batches() if e.summary) == 2000)
        runs = [e.changes for e in batches()]
        assert len(runs) < 100 and max(runs) >= 20, runs  # many files a run, not one each
        assert any(p.phase == "embed" and p.total for p in progress)


def test_a_watched_folder_deleted_and_made_again(watched: Watched) -> None:
    """Its items are kept while it is gone (a missing folder never sweeps); once it is back
    it is indexed in full: what is new comes in, what went with it goes."""
    make_image(watched.root / "before.jpg", seed=1)
    wait_for("a file", lambda: watched.has("before.jpg"))
    shutil.rmtree(watched.root)
    wait_for("the folder reported gone", lambda: watched.seen("missing"))
    assert watched.has("before.jpg")
    watched.root.mkdir()
    make_image(watched.root / "after.jpg", seed=2)
    wait_for("the folder back", lambda: watched.has("after.jpg", gone=("before.jpg",)))
    assert watched.seen("back") and watched.watcher.state()["missing"] == []
    make_image(watched.root / "later.jpg", seed=3)  # watched again
    wait_for("a file in the new folder", lambda: watched.has("later.jpg"))


def test_polling_when_asked(tmp_path: Path, encoder: Any) -> None:
    options = WatchOptions(settle=0.5, polling=True, poll_interval=0.2)
    with Watched(tmp_path, encoder, options) as watched:
        assert watched.watcher.state()["mode"] == "polling"
        make_image(watched.root / "polled.jpg", seed=1)
        wait_for("a polled file", lambda: watched.has("polled.jpg"))
        (watched.root / "polled.jpg").unlink()
        wait_for("a polled deletion", lambda: not watched.names())


FALLBACK = """
import sys, threading, time
from retrieval.ingest.events import FileEvents
reasons = []
events = FileEvents([sys.argv[1]], poll_interval=0.2, on_fallback=reasons.append)
print(events.mode, reasons)
open(sys.argv[1] + "/sub/new.jpg", "w").write("x")
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    got = events.wait(1, threading.Event())
    if got:
        print(got)
        break
"""


def _limits_can_be_set() -> bool:
    """Whether a user namespace of our own can be made, with inotify limits of its own."""
    if sys.platform != "linux" or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                            "echo 8 > /proc/sys/user/max_inotify_instances"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _limits_can_be_set(),
                    reason="needs Linux user namespaces with their own inotify limits")
@pytest.mark.parametrize(("limit", "words"), [
    ("max_inotify_watches 1", "fs.inotify.max_user_watches"),
    ("max_inotify_instances 0", "fs.inotify.max_user_instances")])
def test_events_fall_back_to_polling_at_an_inotify_limit(tmp_path: Path, limit: str,
                                                         words: str) -> None:
    """Real limits, set low in a user namespace of its own: the watch polls instead, says why
    in words that name the fix, and still sees a new file."""
    (tmp_path / "sub").mkdir()
    name, value = limit.split()
    script = (f"echo {value} > /proc/sys/user/{name} && exec {sys.executable} -c "
              f"'{FALLBACK}' {tmp_path}")
    out = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()[:2]
    assert first.startswith("polling [") and words in first, first
    assert str(tmp_path / "sub" / "new.jpg") in second


def test_a_video_added_is_indexed(watched: Watched) -> None:
    from videos import RED_CIRCLE, Clip, write_video

    write_video(watched.root.parent / "clip.mp4", [Clip(RED_CIRCLE, 1.5)], size=(160, 120))
    os.rename(watched.root.parent / "clip.mp4", watched.root / "clip.mp4")
    wait_for("a video", lambda: "clip.mp4" in watched.names("video"))


def test_ocr_reads_the_text_of_a_new_image(tmp_path: Path, encoder: Any) -> None:
    """Every option of a normal run applies to the batches, --ocr included."""
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    from PIL import Image, ImageDraw, ImageFont

    font = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
    if not Path(font).exists():
        pytest.skip(f"font {font} is not installed")
    img = Image.new("RGB", (640, 200), (245, 245, 240))
    ImageDraw.Draw(img).text((30, 60), "HOTEL LINDNER", font=ImageFont.truetype(font, 60),
                             fill=(10, 10, 10))
    with Watched(tmp_path, encoder, ocr=True) as watched:
        img.save(watched.root / "sign.png")
        wait_for("the text read", lambda: any(
            h.metadata.get("ocr_text") == "HOTEL LINDNER"
            for h in watched.col.search("x", k=10)))


# -- failures ------------------------------------------------------------------------------------

def test_batches_wait_while_another_process_writes(watched: Watched) -> None:
    """The collection's write lock held elsewhere: the batch fails, is kept and retried with
    backoff, and goes in once the lock is free."""
    fd = os.open(watched.col.path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: it conflicts with the watcher's
        make_image(watched.root / "late.jpg", seed=1)
        failed = wait_for("a failed batch", lambda: watched.seen("failed"))
        assert "another process is writing" in failed[0].message and failed[0].retry_in
        assert "another process is writing" in watched.watcher.state()["error"]
        wait_for("a second try", lambda: len(watched.seen("failed")) >= 2)
        assert not watched.has("late.jpg")
    finally:
        os.close(fd)
    wait_for("the kept batch", lambda: watched.has("late.jpg"))
    wait_for("the recovery reported", lambda: watched.seen("recovered"))
    assert watched.watcher.state()["error"] is None


def test_a_database_server_stopped_and_started_again(tmp_path: Path, encoder: Any) -> None:
    """A PostgreSQL catalog whose server stops: batches fail and are kept, and go in once it
    runs again."""
    pytest.importorskip("psycopg")
    from postgres import PostgresServer, find_bin

    bindir = find_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed")
    server = PostgresServer(bindir).start()
    try:
        with Watched(tmp_path, encoder, catalog=server.create_database()) as watched:
            make_image(watched.root / "first.jpg", seed=1)
            wait_for("a file", lambda: watched.has("first.jpg"))
            _pg_ctl(server, "stop", "-m", "fast")
            make_image(watched.root / "while-down.jpg", seed=2)
            failed = wait_for("a failed batch", lambda: watched.seen("failed"))
            assert "catalog database" in failed[0].message, failed[0].message
            _pg_ctl(server, "start", "-l", os.path.join(server.base, "log"), "-o",
                    f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.base}")
            wait_for("the kept batch", lambda: watched.has("first.jpg", "while-down.jpg"))
            wait_for("the recovery reported", lambda: watched.seen("recovered"))
    finally:
        server.stop()


def _pg_ctl(server: Any, *args: str) -> None:
    server._run(f"{server.bindir}/pg_ctl", "-D", server.data, "-w", *args)


# -- the command line and the service -------------------------------------------------------------

def _workers_of(pid: int) -> list[int]:
    """Processes still running that a run of ``pid`` started (decode workers carry it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = (Path("/proc") / entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"retrieval.ingest.pool" in cmd and str(pid).encode() in cmd:
                found.append(int(entry))
    return found


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_index_watch_in_a_process(tmp_path: Path, tiny_spec: str, sig: int, code: int) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        make_image(root / f"a{i}.jpg", seed=i)
    col = tmp_path / "col"
    err = tmp_path / "stderr"
    with open(err, "wb") as log:
        proc = subprocess.Popen([retrieval_exe(), "--collection", str(col), "index", str(root),
                                 "--watch", "--model", tiny_spec, "--settle", "0.5"],
                                stdout=subprocess.PIPE, stderr=log)
    try:
        wait_for("the watch to start", lambda: b"watching for changes" in err.read_bytes())
        make_image(root / "new.jpg", seed=9)
        with Collection(col) as reader:
            wait_for("the new file searchable", lambda: any(
                h.path == str(root / "new.jpg") for h in reader.search("x", k=10)))
        proc.send_signal(sig)
        assert proc.wait(TIMEOUT) == code, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stdout is not None
    assert "3 added" in proc.stdout.read().decode()
    assert not _workers_of(proc.pid)
    if sig == signal.SIGTERM:
        assert "stopped watching" in err.read_text()


def test_serve_watch_info_and_search(tmp_path: Path, encoder: Any) -> None:
    from fastapi.testclient import TestClient

    from retrieval.interfaces.server import create_app

    root = tmp_path / "photos"
    make_image(root / "first.jpg", seed=1)
    col = Collection(tmp_path / "col", encoder=encoder)
    col.index([root], workers=0)
    events: list[WatchEvent] = []
    watcher = Watcher(col, [root], options=FAST, index={"workers": 0},
                      on_event=events.append)
    with TestClient(create_app(col, watcher=watcher)) as http:
        wait_for("the first pass", lambda: any(e.kind == "watching" for e in events))
        watch = http.get("/info").json()["watch"]
        assert watch["folders"] == [str(root)] and watch["state"] == "watching"
        assert watch["mode"] == "events" and watch["error"] is None
        make_image(root / "second.jpg", seed=2)

        def found() -> bool:
            hits = http.post("/search", json={"text": "x", "k": 10}).json()["hits"]
            return str(root / "second.jpg") in {h["path"] for h in hits}

        wait_for("a new file over HTTP", found)
        watch = wait_for("the batch in /info", lambda: next(
            (w for w in [http.get("/info").json()["watch"]] if w["added"] == 1), None))
        assert watch["last_change"] and watch["error"] is None
    assert watcher.join(0) and watcher.state()["state"] == "stopped"
    col.close()


def test_a_file_name_that_is_no_utf8(watched: Watched) -> None:
    """The notifier cannot name such a file and fails from then on: the watch starts again
    after a pause, and the folder is indexed again for what came meanwhile."""
    make_image(watched.root.parent / "latin1.jpg", seed=1)
    os.rename(watched.root.parent / "latin1.jpg", os.fsencode(watched.root) + b"/caf\xe9.jpg")
    make_image(watched.root / "after.jpg", seed=2)
    wait_for("both files", lambda: watched.has("after.jpg", os.fsdecode(b"caf\xe9.jpg")))
    make_image(watched.root / "later.jpg", seed=3)
    wait_for("a file after the restart", lambda: watched.has("later.jpg"))
    assert watched.watcher.state()["mode"] == "events"
