"""``kill -9`` at random moments during ``index``, ``add-texts``, ``tag`` and ``train``, then a
convergence check: the next runs finish, the catalog and the saved vector indexes hold the same
ids, nothing is duplicated, and every file is found by its own image.

Kills per command: ``RETRIEVAL_TORTURE_KILLS`` (default 1 in the normal test run; the README's
figures come from a run with 20). ``RETRIEVAL_TORTURE_SEED`` fixes the kill moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, retrieval_exe
from models import TINY_CONFIG

from retrieval import Collection

KILLS = int(os.environ.get("RETRIEVAL_TORTURE_KILLS", "1"))
RNG = random.Random(int(os.environ.get("RETRIEVAL_TORTURE_SEED", "0")))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="kill -9")


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def _start(argv: list[str], started: Callable[[], bool]) -> tuple[subprocess.Popen[str], float]:
    proc = subprocess.Popen([retrieval_exe(), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc, time.monotonic()


def work_time(argv: list[str], started: Callable[[], bool]) -> float:
    """Seconds from ``started()`` to the end of an uninterrupted run (on a scratch copy)."""
    proc, t0 = _start(argv, started)
    proc.communicate(timeout=600)
    assert proc.returncode == 0
    return time.monotonic() - t0


def kill_during(argv: list[str], started: Callable[[], bool], window: float) -> str:
    """Start the command, wait until ``started()`` says its work began, then ``kill -9`` it at
    a random moment of the ``window`` seconds its work takes. Returns ``killed``, or
    ``finished`` when it was done before the kill came."""
    proc, _ = _start(argv, started)
    time.sleep(RNG.uniform(0, window))
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return "killed"
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0 and "Traceback" not in err, err
    return "finished"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([retrieval_exe(), *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


def saved_index_ids(col: Path, modality: str) -> np.ndarray:
    """The ids in the index file on disk (what the next process loads), not a caught-up copy."""
    from indexers.persistence import load_index

    index, _meta = load_index(col / "indexes", modality)
    return np.sort(index.ids())


def check_converged(col: Path, *, images: list[Path] | None = None, texts: int | None = None
                    ) -> None:
    c = Collection(col)
    try:
        with c.catalog.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, kind, path, external_id FROM items").all()
        for modality in ("image", "text"):
            catalog_ids = np.sort([r.id for r in rows if r.kind == modality])
            if len(catalog_ids) or (col / "indexes" / f"{modality}.json").exists():
                ids = saved_index_ids(col, modality)
                assert np.array_equal(ids, catalog_ids), modality
        paths = [r.path for r in rows if r.kind == "image"]
        assert len(paths) == len(set(paths))
        if images is not None:
            assert sorted(paths) == sorted(str(p) for p in images)
            for p in RNG.sample(images, min(25, len(images))):
                top = c.search(image=p, k=1)[0]
                assert top.path == str(p) or top.score > 0.999, p
        if texts is not None:
            ext = [r.external_id for r in rows if r.kind == "text"]
            assert len(ext) == texts == len(set(ext))
    finally:
        c.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    return [make_image(folder / f"p{i:03d}.jpg", i, size=(1200, 900)) for i in range(96)]


def _report(capsys: pytest.CaptureFixture[str], what: str, outcomes: list[str]) -> None:
    with capsys.disabled():
        print(f"\nkill -9 during {what}: {outcomes.count('killed')} killed, "
              f"{outcomes.count('finished')} finished first; converged")


def test_kills_during_index_converge(tmp_path, photos, capsys):
    def argv(col: Path) -> list[str]:
        return ["--collection", str(col), "index", str(photos[0].parent), "--model", "demo",
                "--batch-size", "8", "--workers", "2"]

    def started(col: Path) -> Callable[[], bool]:
        return lambda: _count(col / "catalog.sqlite", "SELECT count(*) FROM items") > 0

    window = work_time(argv(tmp_path / "scratch"), started(tmp_path / "scratch"))
    col = tmp_path / "col"
    outcomes = [kill_during(argv(col), started(col), window) for _ in range(KILLS)]
    argv = argv(col)
    run(*argv)
    again = json.loads(run(*argv, "--json").stdout)
    assert (again["added"], again["updated"], again["failed"]) == (0, 0, 0)
    check_converged(col, images=photos)
    _report(capsys, "index", outcomes)


def test_kills_during_add_texts_converge(tmp_path, capsys):
    col = tmp_path / "col"
    db = col / "catalog.sqlite"
    texts = tmp_path / "texts.jsonl"
    words = ["red", "green", "blue", "circle", "square", "cat", "dog", "sea", "tree", "car"]
    rng = random.Random(1)
    texts.write_text("".join(json.dumps({"id": f"t{i}", "text": " ".join(rng.choices(words, k=6))
                                         + f" {i}"}) + "\n" for i in range(3000)))
    def argv_for(c: Path) -> list[str]:
        return ["--collection", str(c), "add-texts", str(texts), "--model", "demo"]

    scratch = tmp_path / "scratch" / "catalog.sqlite"
    window = work_time(argv_for(scratch.parent),
                       lambda: _count(scratch, "SELECT count(*) FROM items") > 0)
    argv = argv_for(col)
    outcomes = [kill_during(argv, lambda: _count(db, "SELECT count(*) FROM items") > 0, window)
                for _ in range(KILLS)]
    run(*argv)
    check_converged(col, texts=3000)
    _report(capsys, "add-texts", outcomes)


def test_kills_during_tag_converge(tmp_path, photos, capsys):
    col = tmp_path / "col"
    run("--collection", str(col), "index", str(photos[0].parent), "--model", "demo")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"{c} {s}" for c in ("red", "green", "blue", "yellow", "purple",
                                                   "orange") for s in ("circle", "square",
                                                                       "triangle", "star")))
    db = col / "catalog.sqlite"
    argv = ["--collection", str(col), "tag", "--labels", str(labels)]
    scratch = tmp_path / "scratch"
    shutil.copytree(col, scratch)
    window = work_time(["--collection", str(scratch), *argv[2:]],
                       lambda: _count(scratch / "catalog.sqlite",
                                      "SELECT count(*) FROM tag_runs") > 0)
    outcomes = [kill_during(argv, lambda: _count(db, "SELECT count(*) FROM tag_runs") > 0,
                            window) for _ in range(KILLS)]
    run(*argv)
    assert _count(db, "SELECT count(*) FROM tag_runs") == len(photos)
    assert _count(db, "SELECT count(DISTINCT signature) FROM tag_runs") == 1
    final = json.loads(run(*argv, "--json").stdout)
    assert final["tagged"] == 0 and final["unchanged"] == len(photos)
    check_converged(col, images=photos)
    _report(capsys, "tag", outcomes)


def test_kills_during_train_converge(tmp_path, capsys):
    from retrieval.training.synthetic import write_dataset

    data = tmp_path / "data"
    write_dataset(data, 64, seed=3, size=32)
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_CONFIG))
    common = [str(data), "--model", str(arch), "--from-scratch", "--epochs", "4",
              "--batch-size", "16", "--lr", "2e-3", "--workers", "0", "--val-fraction", "0.25"]
    out = tmp_path / "model"

    def argv() -> list[str]:
        resume = ["--resume"] if list((out / "checkpoints").glob("epoch_*.pt")) else []
        return ["train", *common, "--out", str(out), *resume]

    ref = tmp_path / "reference"
    window = work_time(["train", *common, "--out", str(ref)], lambda: (ref / "cache").exists())
    outcomes = []
    for _ in range(KILLS):
        outcomes.append(kill_during(argv(), lambda: (out / "cache").exists(), window))
    if outcomes[-1] == "killed":
        run(*argv())
    import torch
    from safetensors.torch import load_file

    got = load_file(out / "open_clip_model.safetensors")
    ref = load_file(tmp_path / "reference" / "open_clip_model.safetensors")
    assert got.keys() == ref.keys()
    assert all(torch.allclose(got[k], ref[k], atol=1e-5) for k in ref), \
        "killed and resumed training ended elsewhere than an uninterrupted run"
    _report(capsys, "train", outcomes)
