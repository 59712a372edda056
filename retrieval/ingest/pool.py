"""Decode worker processes that belong to the run that started them.

Each worker is ``python -m retrieval.ingest.pool``, a fresh interpreter that imports this package
and nothing of the caller's: an app's script that indexes needs no ``if __name__ ==
'__main__':`` guard. Jobs and results travel as pickles over the worker's stdin and stdout.

A worker never outlives its run:

* it leaves when its stdin reaches end of file, which happens when the run closes the pool or
  when the parent process dies in any way (``kill -9`` included); on Linux the kernel also
  kills it the moment its parent dies (``PR_SET_PDEATHSIG``);
* it runs in a process group of its own and ignores SIGINT, so Ctrl-C in a terminal reaches
  only the parent, which stops the workers itself: no traceback from each worker, no hang.

A worker that dies mid-job (a decoder crash on a hostile file, an OOM kill) is replaced; the
files of the job it was on are decoded again one at a time, and a file that kills a worker on
its own is reported as a failed file instead of stopping the run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np

from ..errors import IndexingError
from ..media import ImageSpec
from .workers import CHUNK, DecodeResult, DecodeTask, decode_chunk, init_worker

STDERR_TAIL = 4096
STOP_GRACE_S = 2.0
READY = "ready"  # a worker's first answer: it started and took its settings


class _Died:
    """Queued by a reader thread when its worker's stdout closes."""


class _Worker:
    """One worker process, the thread reading its results, and the thread keeping the tail
    of its stderr (for the message when it cannot start)."""

    def __init__(self, init: tuple[Any, ...]) -> None:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["process_group"] = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(os.getpid())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        self.results: queue.Queue[Any] = queue.Queue()
        self.stderr = b""
        self.answered = False  # it said READY: it started
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True).start()
        self.send(init)

    def _read(self, stream: BinaryIO) -> None:
        try:
            while True:
                self.results.put(pickle.load(stream))
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        self.results.put(_Died())

    def _read_stderr(self, stream: BinaryIO) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self.stderr = (self.stderr + line)[-STDERR_TAIL:]

    def send(self, message: Any) -> bool:
        """False if the worker is gone (its death shows up among its results)."""
        try:
            assert self.proc.stdin is not None
            pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def receive(self) -> list[DecodeResult] | None:
        """The results of this worker's oldest job, or None if it died first."""
        while True:
            item = self.results.get()
            if isinstance(item, _Died):
                self.results.put(item)  # every later call sees the death too
                return None
            if item == READY:
                self.answered = True
                continue
            return item

    def how_it_died(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_GRACE_S)
        code = self.proc.returncode
        if code is None:
            return "stopped answering"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def stop(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if kill:
            with contextlib.suppress(OSError):
                self.proc.kill()
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


class DecodePool:
    """``size`` decode workers; :meth:`map` hands them jobs and yields results in job order.

    Use it as a context manager: leaving it stops the workers (at once on an exception)."""

    def __init__(self, size: int, init: tuple[Any, ...]) -> None:
        self.init = ("init", *init)
        self.workers: list[_Worker] = []
        try:
            for _ in range(max(1, size)):
                self.workers.append(_Worker(self.init))
        except OSError as exc:
            self.close(kill=True)
            raise IndexingError(f"cannot start decode worker processes: {exc}") from None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(kill=exc_type is not None)

    def close(self, kill: bool = False) -> None:
        for w in self.workers:
            w.stop(kill)

    def map(self, jobs: Sequence[list[DecodeTask]], window: int
            ) -> Iterator[list[DecodeResult]]:
        """Each job's results, in job order, with at most ``window`` jobs in flight."""
        n = len(self.workers)
        queued: list[deque[int]] = [deque() for _ in range(n)]  # job numbers per worker
        submitted = 0

        def submit(job: int) -> None:
            queued[job % n].append(job)
            self.workers[job % n].send(("decode", jobs[job]))

        for job in range(len(jobs)):
            while submitted < min(len(jobs), job + max(1, window)):
                submit(submitted)
                submitted += 1
            slot = job % n
            results = self.workers[slot].receive()
            if results is None:
                results = self._recover(slot, queued, jobs)
            queued[slot].popleft()
            yield results

    def _recover(self, slot: int, queued: list[deque[int]], jobs: Sequence[list[DecodeTask]]
                 ) -> list[DecodeResult]:
        """The worker in ``slot`` died before answering its oldest job: start a new one, decode
        that job a file at a time, and hand it the rest of its jobs again."""
        lost = list(queued[slot])
        results = [self._decode_alone(slot, task) for task in jobs[lost[0]]]
        for job in lost[1:]:
            self.workers[slot].send(("decode", jobs[job]))
        return results

    def _decode_alone(self, slot: int, task: DecodeTask) -> DecodeResult:
        dead = self.workers[slot]
        reason = dead.how_it_died()
        dead.stop(kill=True)
        if not dead.answered and not reason.startswith("killed"):  # exited on its own
            tail = dead.stderr.decode(errors="replace").strip().splitlines()
            raise IndexingError("a decode worker process failed to start ("
                                f"{tail[-1] if tail else reason})")
        worker = self.workers[slot] = _Worker(self.init)
        worker.send(("decode", [task]))
        results = worker.receive()
        if results is not None:
            return results[0]
        return DecodeResult(task.path, task.size, task.mtime_ns,
                            error=f"the image decoder crashed on this file "
                                  f"({worker.how_it_died()})")


def decoded(tasks: Sequence[DecodeTask], *, spec: ImageSpec, max_pixels: int, workers: int,
            known: Callable[[], np.ndarray] | None = None, window: int | None = None,
            ocr: bool = False) -> Generator[DecodeResult, None, None]:
    """Decode results in task order, from a bounded window of worker jobs (``workers=0``
    decodes here, without lower priority or skipping known content). ``known`` gives the
    contents the catalog holds (:meth:`~retrieval.storage.Catalog.content_prefixes`), read
    when workers start. With ``ocr`` the text of new contents is read where they are decoded
    (:func:`.workers.read_text`).

    Close the iterator (``contextlib.closing``) when stopping early: that stops the workers."""
    chunks = [list(tasks[i:i + CHUNK]) for i in range(0, len(tasks), CHUNK)]
    if workers == 0 or len(chunks) <= 1:
        init_worker(spec, max_pixels, None, ocr=ocr)
        for chunk in chunks:
            yield from decode_chunk(chunk)
        return
    init = (spec, max_pixels, known() if known is not None else None, True, ocr)
    with DecodePool(min(workers, len(chunks)), init) as pool:
        for results in pool.map(chunks, window or 2 * workers):
            yield from results


def _serve(parent: int) -> None:
    """A worker's life: answer decode jobs from stdin until it closes, or the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    source = sys.stdin.buffer
    while True:
        try:
            message = pickle.load(source)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        if message[0] == "init":
            init_worker(*message[1:])
            _own_pixel_limit(message[2])
            pickle.dump(READY, out)
            out.flush()
            continue
        try:
            pickle.dump(decode_chunk(message[1]), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except (BrokenPipeError, OSError):
            return


def _own_pixel_limit(max_pixels: int) -> None:
    """The run's pixel limit rules in this process, not Pillow's lower decompression-bomb limit
    (a caller's own process keeps Pillow's global setting as it is)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
