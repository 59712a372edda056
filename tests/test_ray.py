"""Indexing on a real Ray cluster (``retrieval index --ray``): started once per session on
127.0.0.1 with ``ray start``, the driver in this process. A Ray run must give the catalog a local
run gives, keep every file exactly once when an embedding actor is killed mid-run, and resume
after an interruption; without Ray, ``--ray`` names the extra to install."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_error_line, json_lines, make_images, run_cli

from retrieval import Collection
from retrieval.ingest import IndexProgress

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def _ray_exe() -> str:
    exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert exe, "the ray command is not installed (pip install -e '.[ray]')"
    return exe


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A one-node cluster on 127.0.0.1 (2 CPUs, no dashboard), this process its driver.
    Skipped without Ray, except with ``RETRIEVAL_REQUIRE_RAY=1`` (CI)."""
    os.environ.update(RAY_ENV)  # read when ray is imported
    try:
        import ray
        import ray.data
    except ImportError:
        if os.environ.get("RETRIEVAL_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed (pip install -e '.[ray]'), and "
                        "RETRIEVAL_REQUIRE_RAY=1")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    env = dict(os.environ)
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: unix socket paths <= 107 bytes
    try:
        subprocess.run([_ray_exe(), "start", "--head", "--port=0", "--include-dashboard=false",
                        "--num-cpus=2", "--object-store-memory=209715200", f"--temp-dir={tmp}",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True,
                       timeout=120)
        address = Path(tmp, "ray_current_cluster").read_text().strip()
        ray.init(address=address, log_to_driver=False)
        yield address
    finally:
        ray.shutdown()
        subprocess.run([_ray_exe(), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def _vectors(col: Collection) -> dict[str, np.ndarray]:
    """Path -> stored vector of every image item."""
    out = {}
    for ids, vecs in col._catalog.iter_vectors("image", col.dim):
        for i, v in zip(ids, vecs, strict=True):
            path = col.get(int(i)).path
            assert path is not None and path not in out
            out[path] = np.asarray(v)
    return out


def _same_catalog(a: Collection, b: Collection) -> None:
    assert a._catalog.counts() == b._catalog.counts()
    va, vb = _vectors(a), _vectors(b)
    assert sorted(va) == sorted(vb)
    for path, v in va.items():
        np.testing.assert_allclose(vb[path], v, atol=1e-5, err_msg=path)


def _summary(s: Any) -> tuple[Any, ...]:
    return (s.added, s.updated, s.removed, s.unchanged, s.failed, s.embedded,
            sorted((e.path, e.reason) for e in s.errors))


def _photos(folder: Path, n: int) -> Path:
    make_images(folder, n)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    shutil.copy(folder / "img000.jpg", folder / "copy.jpg")  # same content: one embedding
    (folder / "img001.txt").write_text("a caption")
    return folder


@pytest.mark.ray
def test_ray_run_gives_the_local_catalog(tmp_path: Path, tiny_spec: str, ray_cluster: str
                                         ) -> None:
    folder = _photos(tmp_path / "pics", 20)
    with Collection(tmp_path / "local", model=tiny_spec) as local, \
            Collection(tmp_path / "ray", model=tiny_spec) as distributed:
        expected = local.index([folder], workers=0)
        events: list[IndexProgress] = []
        summary = distributed.index([folder], ray=ray_cluster, batch_size=4,
                                    progress=events.append)
        assert _summary(summary) == _summary(expected)
        assert (summary.added, summary.failed, summary.embedded) == (21, 1, 20)
        _same_catalog(local, distributed)
        embed = [e for e in events if e.phase == "embed"]
        assert embed[0].done == 0 and embed[-1].done == embed[-1].total == 22
        assert [e.done for e in embed] == sorted(e.done for e in embed)
        # A second run has nothing to embed; a renamed file reuses its vector.
        os.rename(folder / "img002.jpg", folder / "renamed.jpg")
        again = distributed.index([folder], ray=ray_cluster)
        assert (again.added, again.removed, again.embedded, again.failed) == (1, 1, 0, 1)
        local.index([folder], workers=0)
        _same_catalog(local, distributed)


class SlowEncoder:
    """The tiny model, slowed down per batch, writing its process id to a folder when it loads:
    handed to a collection as an object, it travels to the Ray actors pickled."""

    def __init__(self, spec: str, pids: Path, delay: float) -> None:
        from retrieval import ModelSpec

        self.spec = ModelSpec.parse(spec)
        self.pids, self.delay = pids, delay
        self._inner: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inner": None}

    @property
    def inner(self) -> Any:
        if self._inner is None:
            from retrieval import load_encoder

            self._inner = load_encoder(self.spec, "cpu")
            (self.pids / str(os.getpid())).touch()
        return self._inner

    dim = property(lambda self: self.inner.dim)
    image_spec = property(lambda self: self.inner.image_spec)
    logit_scale = property(lambda self: self.inner.logit_scale)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return self.inner.embed_images(pixels)  # type: ignore[no-any-return]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.inner.embed_texts(texts)  # type: ignore[no-any-return]

    def warm(self, *towers: str) -> None:
        self.inner.warm(*towers)


def _by_value() -> None:
    """The actors cannot import this test module: its classes travel by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.ray
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(
        tmp_path: Path, tiny_spec: str, ray_cluster: str) -> None:
    _by_value()
    folder = _photos(tmp_path / "pics", 20)
    pids = tmp_path / "pids"
    pids.mkdir()
    killed: list[int] = []

    def kill_once(event: IndexProgress) -> None:
        if event.phase == "embed" and event.done and not killed:
            assert event.total is not None and event.done < event.total / 2  # mid-run
            actors = [int(p.name) for p in pids.iterdir() if int(p.name) != os.getpid()]
            assert len(actors) == 1, actors
            os.kill(actors[0], signal.SIGKILL)
            killed.append(actors[0])

    slow = SlowEncoder(tiny_spec, pids, delay=0.25)
    with Collection(tmp_path / "ray", encoder=slow) as col:  # type: ignore[arg-type]
        summary = col.index([folder], ray=ray_cluster, batch_size=2, progress=kill_once)
        assert killed
        restarted = {int(p.name) for p in pids.iterdir()} - {os.getpid(), *killed}
        assert restarted, "Ray restarted the actor in a new process"
        assert (summary.added, summary.failed, summary.embedded) == (21, 1, 20)
        assert col._catalog.counts() == {"image": 21, "text": 1}
        with Collection(tmp_path / "local", encoder=slow.inner) as local:
            local.index([folder], workers=0)
            _same_catalog(local, col)


@pytest.mark.ray
def test_an_interrupted_ray_run_resumes(tmp_path: Path, tiny_spec: str, ray_cluster: str
                                        ) -> None:
    folder = _photos(tmp_path / "pics", 24)

    def interrupt(event: IndexProgress) -> None:
        if event.phase == "embed" and event.embedded:
            raise KeyboardInterrupt

    with Collection(tmp_path / "ray", model=tiny_spec) as col:
        with pytest.raises(KeyboardInterrupt):
            col.index([folder], ray=ray_cluster, batch_size=4, progress=interrupt)
        done = col._catalog.counts()["image"]
        assert 0 < done < 25
        # The next run (the command this time) picks up where the first one stopped.
        proc = run_cli("index", folder, "--ray", ray_cluster, "--batch-size", "4", "--json",
                       collection=tmp_path / "ray")
        summary = json_lines(proc.stdout)[-1]
        assert (summary["unchanged"], summary["added"], summary["failed"]) == (
            done, 25 - done, 1)
        with Collection(tmp_path / "local", model=tiny_spec) as local:
            local.index([folder], workers=0)
            _same_catalog(local, col)


@pytest.mark.ray
def test_ray_notices_never_reach_stdout(tmp_path: Path, tiny_spec: str, ray_cluster: str,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's driver prints the cluster's error notices on sys.stdout (an actor killed as Ray
    Data winds its pool down: "(raylet) Task ... failed"); one once landed in the middle of
    ``index --ray --json`` and broke its JSON. During a run they go to stderr."""
    from ray._private.worker import print_to_stdstream

    from retrieval.ingest import distributed

    folder = _photos(tmp_path / "pics", 4)
    notice = "(raylet) a notice the cluster printed during the run"
    received = distributed._received

    def noisy(*args: Any) -> Iterator[Any]:  # the cluster speaks up while results stream in
        print_to_stdstream({"lines": [notice], "pid": "raylet", "is_err": False},
                           ignore_prefix=False)
        yield from received(*args)

    monkeypatch.setattr(distributed, "_received", noisy)
    with Collection(tmp_path / "ray", model=tiny_spec) as col:
        col.index([folder], ray=ray_cluster, batch_size=4)
    out = capsys.readouterr()
    assert "a notice the cluster printed" not in out.out
    assert "a notice the cluster printed" in out.err


def test_without_ray_the_option_names_the_extra(tmp_path: Path, tiny_spec: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    make_images(tmp_path / "pics", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    proc = run_cli("index", tmp_path / "pics", "--model", tiny_spec, "--ray",
                   collection=tmp_path / "col", check=False)
    assert_one_error_line(proc, "pip install", "retrieval[ray]")


@pytest.mark.ray
def test_files_the_cluster_returns_twice_or_never_come_once(ray_cluster: str) -> None:
    """A retried task's second copy is dropped; files the cluster gave up on (a decode task
    that kept dying) go to the fallback, the local decode pool."""
    import pickle

    from retrieval.ingest.distributed import _received
    from retrieval.ingest.workers import DecodeResult, DecodeTask

    tasks = [DecodeTask(f"/x/{name}.jpg", 1, 1) for name in "abc"]
    rows = [DecodeResult(tasks[0].path, 1, 1, "h"), DecodeResult(tasks[0].path, 1, 1, "h"),
            DecodeResult(tasks[1].path, 1, 1, error="not a recognised image format")]

    class Stream:
        def iter_batches(self, **_: Any) -> Iterator[dict[str, Any]]:
            for res in rows:
                yield {"result": [pickle.dumps(res)], "vector": np.ones((1, 4), np.float32),
                       "has_vector": np.array([res.error is None])}

    asked: list[list[DecodeTask]] = []

    def fallback(missing: list[DecodeTask]) -> Iterator[DecodeResult]:
        asked.append(missing)
        yield from (DecodeResult(t.path, t.size, t.mtime_ns, "h2") for t in missing)

    out = list(_received(Stream(), tasks, 2, fallback))  # type: ignore[arg-type]
    assert [r.path for r in out] == [t.path for t in tasks]
    assert asked == [[tasks[2]]]
    assert out[0].vector is not None and out[0].vector.flags.writeable
    assert out[1].vector is None and out[1].error


@pytest.mark.ray
def test_decode_tasks_skip_pixels_of_known_content(tmp_path: Path, encoder: Any,
                                                   ray_cluster: str) -> None:
    """Content the catalog holds (a rename, a copy) is hashed on the cluster but neither
    decoded nor embedded there; the driver reuses the stored vector."""
    import pickle

    import ray

    from retrieval.ingest.distributed import _prefix_set, decode_rows
    from retrieval.ingest.workers import DecodeTask
    from retrieval.media import hash_file
    from retrieval.storage.records import hash_prefixes

    paths = make_images(tmp_path, 2)
    tasks = np.array([pickle.dumps(DecodeTask(str(p), 1, 1)) for p in paths], dtype=object)
    for known in (hash_prefixes([hash_file(paths[0])]), hash_prefixes([])):
        ref = ray.put(known)  # as the tasks get it
        out = decode_rows({"task": tasks}, encoder.image_spec, 10**8, _prefix_set(ref))
        assert [not has for has in out["has_pixels"]] == [len(known) == 1, False]
        assert [pickle.loads(r).content_hash for r in out["result"]] == [
            hash_file(p) for p in paths]


@pytest.mark.ray
def test_an_address_without_a_cluster_fails_at_once(tmp_path: Path, tiny_spec: str,
                                                    ray_cluster: str) -> None:
    make_images(tmp_path / "pics", 2)
    # Ray's own connect retries for minutes; a hang here ends the test with TimeoutExpired.
    proc = run_cli("index", tmp_path / "pics", "--model", tiny_spec, "--ray=127.0.0.1:9",
                   collection=tmp_path / "col", check=False, process=True, timeout=60)
    assert_one_error_line(proc, "cannot reach the Ray cluster at 127.0.0.1:9")
