"""Issue 19, item 7, the service's side: a search has a deadline, a client that leaves cancels
its search, and SIGTERM ends the server with searches in flight.

Before: two expensive requests made every other search time out for as long as they ran, an
abandoned request kept a core busy for minutes, and after SIGTERM the server closed its port but
kept running for more than two minutes. The searches here are stand-ins that run until they are
cancelled (the real stages' checks are tested in ``test_bounded_search.py``), so nothing depends
on how fast this machine is: every wait is on a condition, with a generous limit.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import make_image
from fastapi.testclient import TestClient
from servers import free_port

from retrieval import Collection
from retrieval.errors import SearchCancelled
from retrieval.interfaces.server import create_app

BODY = json.dumps({"text": "a red square", "k": 3}).encode()


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Collection]:
    base = tmp_path_factory.mktemp("deadlines")
    for i in range(3):
        make_image(base / "photos" / f"p{i}.png", seed=i)
    with Collection(base / "col", encoder=encoder) as c:
        c.index([base / "photos"], workers=0)
        yield c


class StuckSearch:
    """A search that runs until its cancel flag is set (then raises SearchCancelled)."""

    def __init__(self) -> None:
        self.started, self.cancelled = threading.Event(), threading.Event()

    def run(self, _query: Any, *, deadline: float | None = None,
            cancel: threading.Event | None = None) -> list[Any]:
        self.started.set()
        if cancel is not None and cancel.wait(120):
            self.cancelled.set()
            raise SearchCancelled("the search was cancelled by its caller")
        return []


def _wait(condition: Any, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _post_search(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    return s


def test_a_search_past_its_deadline_answers_503(col: Collection) -> None:
    # A deadline of a nanosecond has passed when the engine thread takes the search up.
    http = TestClient(create_app(col, search_timeout=1e-9))
    r = http.post("/search", json={"text": "a red square"})
    assert r.status_code == 503, r.text
    assert "deadline" in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert r.headers["retry-after"] == "1"
    assert TestClient(create_app(col)).post("/search", json={"text": "a red square"}
                                            ).status_code == 200


def test_a_client_that_leaves_cancels_its_search(col: Collection,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = StuckSearch()
    monkeypatch.setattr(col, "run", stuck.run)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(col, search_timeout=600), port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: server.started), "the server did not start"
        conn = _post_search(port)
        assert stuck.started.wait(60), "the search never started"
        conn.close()  # the client goes away mid-search
        assert stuck.cancelled.wait(60), "the abandoned search was never cancelled"
    finally:
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive()


STOPPABLE_SERVER = """
import sys
from pathlib import Path

from retrieval import Collection
from retrieval.errors import SearchCancelled

marks = Path(sys.argv[1])

def stuck(self, query, *, deadline=None, cancel=None):
    (marks / "started").touch()
    if cancel is not None and cancel.wait(120):
        (marks / "cancelled").touch()
        raise SearchCancelled("the search was cancelled by its caller")
    return []

Collection.run = stuck
from retrieval.interfaces.cli import main
sys.argv[1:] = sys.argv[2:]
main()
"""


def test_sigterm_ends_the_server_with_a_search_in_flight(col: Collection, tmp_path: Path
                                                          ) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPABLE_SERVER, str(tmp_path), "--collection", str(col.path),
         "serve", "--port", str(port), "--search-timeout", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: _answers(port) or proc.poll() is not None, 120)
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        conn = _post_search(port)
        assert _wait(lambda: (tmp_path / "started").exists()), "the search never started"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)  # before: it kept running for minutes
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn raises the signal again once it has shut down: the exit status says SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")
    assert b"Traceback" not in out, out.decode(errors="replace")
    assert (tmp_path / "cancelled").exists(), "the search in flight was not cancelled"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
