"""What an install brings, in bytes: the distributions ``pip install`` would install for the
given requirements on a fresh environment (``pip install --dry-run --ignore-installed
--report``, which asks the package index), each sized by the files its RECORD lists in this
environment (the same versions, where this environment has them).

    python benchmarks/install_size.py -- -e '.[test]'     # the README's install
    python benchmarks/install_size.py onnxruntime faiss-cpu numpy pillow ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _size(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        with contextlib.suppress(OSError):  # a file the RECORD lists but the install lacks
            total += os.path.getsize(str(dist.locate_file(f)))
    return total


def resolve(requirements: list[str]) -> list[tuple[str, str]]:
    """(name, version) of every distribution a fresh install of ``requirements`` brings."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--ignore-installed", "--report", str(report), *requirements],
                       check=True, stderr=subprocess.DEVNULL)
        items = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("requirements", nargs="+",
                        help="as pip install takes them (after --, for -e)")
    parser.add_argument("--top", type=int, default=15, help="the largest N to list")
    args = parser.parse_args()
    here = {_norm(d.metadata["Name"]): d for d in metadata.distributions()}
    rows, absent = [], []
    for name, version in resolve(args.requirements):
        dist = here.get(_norm(name))
        if dist is None:
            absent.append(f"{name}=={version}")
            continue
        note = "" if dist.version == version else f"  (resolves to {version}, here {dist.version})"
        rows.append((_size(dist), name, note))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"{' '.join(args.requirements)}: {len(rows) + len(absent)} distributions, "
          f"{total / 2**30:.2f} GiB for the {len(rows)} present here")
    for size, name, note in rows[:args.top]:
        print(f"  {name:<28} {size / 2**20:8.0f} MiB{note}")
    if absent:
        print(f"not in this environment, so not counted: {', '.join(absent)}")


if __name__ == "__main__":
    main()
