"""Run ``retrieval serve`` as a real background process for end-to-end tests (HTTP clients, a
browser): pick a free port, wait for /health, collect the output, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
from conftest import retrieval_exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``retrieval --collection COL serve --port PORT`` in the background."""

    def __init__(self, col: Path, log: Path, *args: str, env: dict[str, str] | None = None
                 ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [retrieval_exe(), "--collection", str(col), "serve", "--port", str(self.port),
             *args], stdout=self._out, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 60, headers: dict[str, str] | None = None) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            try:
                r = httpx.get(f"{self.url}/health", headers=headers, timeout=2)
                if r.status_code in (200, 401):
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
