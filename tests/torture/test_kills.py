"""``kill -9`` at random moments during ``index``, ``add-texts``, ``tag`` and ``train``, then a
convergence check: the next runs finish, the catalog and the saved vector indexes hold the same
ids, nothing is duplicated, and every file is found by its own image.

Each trial starts from the same state, kills the command twice, each time at a random moment
of the time a whole run takes (start-up included: a kill may land before any work), then runs
it to the end and checks. Trials per command: ``RETRIEVAL_TORTURE_TRIALS`` (default 1 in the
normal test run; the README's figures come from 10, so 20 kills per command).
``RETRIEVAL_TORTURE_SEED`` fixes the kill moments.
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

TRIALS = int(os.environ.get("RETRIEVAL_TORTURE_TRIALS", "1"))
KILLS_PER_TRIAL = 2
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
        with c._catalog.engine.connect() as conn:
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


def duration(argv: list[str]) -> float:
    """Seconds an uninterrupted run takes, start-up included (on a scratch copy)."""
    t0 = time.monotonic()
    run(*argv)
    return time.monotonic() - t0


def kill_at_random(argv: list[str], seconds: float, progress: Callable[[], int]) -> str:
    """Start the command and ``kill -9`` it at a random moment of ``seconds``. Returns
    ``during work`` (it had committed something), ``before work``, or ``finished`` (it was
    done first: a run that resumes an interrupted one has less to do)."""
    before = progress()
    proc = subprocess.Popen([retrieval_exe(), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=RNG.uniform(0.05, seconds))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "during work" if progress() > before else "before work"
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0 and "Traceback" not in err, err
    return "finished"


def trials(prepare: Callable[[Path], Callable[[], list[str]]],
           progress: Callable[[Path], int], check: Callable[[Path, list[str]], None],
           base: Path) -> list[str]:
    """``prepare(folder)`` makes a fresh starting state and returns what gives the command's
    arguments (asked again before each start: a resumed training run says ``--resume``)."""
    seconds = duration(prepare(base / "timing")())
    outcomes: list[str] = []
    for t in range(TRIALS):
        folder = base / f"trial{t}"
        argv = prepare(folder)
        for _ in range(KILLS_PER_TRIAL):
            outcomes.append(kill_at_random(argv(), seconds, lambda f=folder: progress(f)))
        run(*argv())
        check(folder, argv())
    return outcomes


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    return [make_image(folder / f"p{i:03d}.jpg", i, size=(1600, 1200)) for i in range(120)]


@pytest.fixture
def _demo_exported(tmp_path: Path) -> None:
    """The demo model's ONNX export made beforehand, and used once in this test's home, so that
    no timed run includes either. The tests of the demo model use it; training does not."""
    make_image(tmp_path / "warm" / "one.jpg", 0)
    run("--collection", str(tmp_path / "warm-col"), "index", str(tmp_path / "warm"),
        "--model", "demo")


def _report(capsys: pytest.CaptureFixture[str], what: str, outcomes: list[str]) -> None:
    with capsys.disabled():
        print(f"\nkill -9 during {what}: {len(outcomes)} kills in {TRIALS} trial(s): "
              f"{outcomes.count('during work')} after work had been committed, "
              f"{outcomes.count('before work')} before, {outcomes.count('finished')} came "
              "after the run had finished; every trial converged")


def _items(col: Path) -> int:
    return _count(col / "catalog.sqlite", "SELECT count(*) FROM items")


def test_kills_during_index_converge(tmp_path, photos, capsys, _demo_exported):
    def prepare(folder: Path) -> Callable[[], list[str]]:
        return lambda: ["--collection", str(folder / "col"), "index", str(photos[0].parent),
                        "--model", "demo", "--batch-size", "8", "--workers", "2"]

    def check(folder: Path, argv: list[str]) -> None:
        again = json.loads(run(*argv, "--json").stdout)
        assert (again["added"], again["updated"], again["failed"]) == (0, 0, 0)
        check_converged(folder / "col", images=photos)

    outcomes = trials(prepare, lambda f: _items(f / "col"), check, tmp_path)
    _report(capsys, "index", outcomes)


def test_kills_during_add_texts_converge(tmp_path, capsys, _demo_exported):
    texts = tmp_path / "texts.jsonl"
    words = ["red", "green", "blue", "circle", "square", "cat", "dog", "sea", "tree", "car"]
    rng = random.Random(1)
    texts.write_text("".join(json.dumps({"id": f"t{i}", "text": " ".join(rng.choices(words, k=6))
                                         + f" {i}"}) + "\n" for i in range(4000)))

    def prepare(folder: Path) -> Callable[[], list[str]]:
        return lambda: ["--collection", str(folder / "col"), "add-texts", str(texts),
                        "--model", "demo"]

    outcomes = trials(prepare, lambda f: _items(f / "col"),
                      lambda f, _a: check_converged(f / "col", texts=4000), tmp_path)
    _report(capsys, "add-texts", outcomes)


def test_kills_during_tag_converge(tmp_path, photos, capsys, _demo_exported):
    template = tmp_path / "template"
    run("--collection", str(template), "index", str(photos[0].parent), "--model", "demo")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"{size} {c} {s}" for size in ("small", "large")
                                for c in ("red", "green", "blue", "yellow", "purple", "orange")
                                for s in ("circle", "square", "triangle", "star", "cross")))

    def prepare(folder: Path) -> Callable[[], list[str]]:
        shutil.copytree(template, folder / "col")
        return lambda: ["--collection", str(folder / "col"), "tag", "--labels", str(labels)]

    def check(folder: Path, argv: list[str]) -> None:
        db = folder / "col" / "catalog.sqlite"
        assert _count(db, "SELECT count(*) FROM tag_runs") == len(photos)
        assert _count(db, "SELECT count(DISTINCT signature) FROM tag_runs") == 1
        final = json.loads(run(*argv, "--json").stdout)
        assert final["tagged"] == 0 and final["unchanged"] == len(photos)
        check_converged(folder / "col", images=photos)

    outcomes = trials(prepare, lambda f: _count(f / "col" / "catalog.sqlite",
                                                "SELECT count(*) FROM tag_runs"), check, tmp_path)
    _report(capsys, "tag", outcomes)


def test_kills_during_train_converge(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from retrieval.training.synthetic import write_dataset

    data = tmp_path / "data"
    write_dataset(data, 64, seed=3, size=32)
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_CONFIG))
    common = [str(data), "--model", str(arch), "--from-scratch", "--epochs", "4",
              "--batch-size", "16", "--lr", "2e-3", "--workers", "0", "--val-fraction", "0.25"]
    reference = tmp_path / "reference"
    run("train", *common, "--out", str(reference))
    expected = load_file(reference / "open_clip_model.safetensors")

    def prepare(folder: Path) -> Callable[[], list[str]]:
        def argv() -> list[str]:
            resume = list((folder / "model" / "checkpoints").glob("epoch_*.pt"))
            return ["train", *common, "--out", str(folder / "model"),
                    *(["--resume"] if resume else [])]
        return argv

    def progress(folder: Path) -> int:
        return (folder / "model" / "cache").exists() + len(
            list((folder / "model" / "checkpoints").glob("epoch_*.pt")))

    def check(folder: Path, _argv: list[str]) -> None:
        got = load_file(folder / "model" / "open_clip_model.safetensors")
        assert got.keys() == expected.keys()
        assert all(torch.allclose(got[k], expected[k], atol=1e-5) for k in expected), \
            "killed and resumed training ended elsewhere than an uninterrupted run"

    outcomes = trials(prepare, progress, check, tmp_path)
    _report(capsys, "train", outcomes)
