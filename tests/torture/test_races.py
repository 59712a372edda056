"""Three runs that start at once on a collection that does not exist yet (issue 11.5): one
creates it, the others are told in one line that another process is writing (or, if the first
was already done, runs after it); never a traceback, never a half-made catalog."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest
from conftest import make_images, retrieval_exe


@pytest.mark.parametrize("round_", range(3))
def test_two_first_runs_at_once(tmp_path: Path, round_: int) -> None:
    make_images(tmp_path / "imgs", 12)
    (tmp_path / "texts.txt").write_text("a red circle\na blue square\n")
    col = tmp_path / "new-collection"
    barrier = threading.Barrier(3)
    results: list[subprocess.CompletedProcess[str]] = []

    def start(cmd: list[str]) -> None:
        barrier.wait()
        results.append(subprocess.run([retrieval_exe(), "--collection", str(col), *cmd],
                                      capture_output=True, text=True, timeout=300))

    index = ["index", str(tmp_path / "imgs"), "--model", "demo"]
    texts = ["add-texts", str(tmp_path / "texts.txt"), "--model", "demo"]
    commands = [index, index, texts if round_ == 2 else index]
    threads = [threading.Thread(target=start, args=(c,)) for c in commands]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert any(r.returncode == 0 for r in results), [r.stderr for r in results]
    for r in results:
        assert "Traceback" not in r.stderr, r.stderr
        if r.returncode != 0:
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 1 and len(lines) == 1, r.stderr
            assert "another process is writing" in lines[0], lines[0]
    final = subprocess.run([retrieval_exe(), "--collection", str(col), "index",
                            str(tmp_path / "imgs")], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    info = subprocess.run([retrieval_exe(), "--collection", str(col), "info", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert '"image": 12' in info.stdout
