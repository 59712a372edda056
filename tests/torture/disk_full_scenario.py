"""Run inside a private mount namespace (``unshare --user --map-root-user --mount``) by
``test_disk_full.py``: a collection on a small tmpfs that fills up mid-way. Prints one JSON
object: each step's exit code and stderr, and the catalog's state after each."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path


def main(work: Path, exe: str, size: str) -> None:
    small = work / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)],
                   check=True)
    col = small / "col"
    steps: dict[str, dict[str, object]] = {}

    def retrieval(name: str, *args: str) -> None:
        proc = subprocess.run([exe, "--collection", str(col), *args], capture_output=True,
                              text=True, timeout=600)
        steps[name] = {"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout,
                       "items": items(col)}

    retrieval("index a", "index", str(work / "a"), "--model", "demo")
    shutil.rmtree(col / "indexes")  # readers now rebuild the index and would save it
    with open(small / "filler", "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    retrieval("index b (disk full)", "index", str(work / "b"))
    retrieval("search (disk full)", "search", "a red circle", "-k", "3")
    retrieval("info (disk full)", "info")
    retrieval("duplicates (disk full)", "duplicates")
    retrieval("add-texts (disk full)", "add-texts", str(work / "texts.txt"))
    (small / "filler").unlink()
    retrieval("index b (space again)", "index", str(work / "b"))
    retrieval("add-texts (space again)", "add-texts", str(work / "texts.txt"))
    print(json.dumps(steps))


def items(col: Path) -> dict[str, object]:
    with sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        return {"check": conn.execute("PRAGMA integrity_check").fetchone()[0],
                "images": conn.execute("SELECT count(*) FROM items WHERE kind = 'image'")
                .fetchone()[0],
                "texts": conn.execute("SELECT count(*) FROM items WHERE kind = 'text'")
                .fetchone()[0]}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
