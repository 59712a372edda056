"""Shared fixtures: an isolated RETRIEVAL_HOME per test, a tiny real open_clip model written in
the local-dir layout, image generators, and a runner for the installed ``retrieval`` command."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from models import write_tiny_model

# Collections that several test files share, built once per run (fixtures of global reach).
pytest_plugins = ["query_fixtures", "server_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _shared_exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export folder for the whole run: a model is exported once, not per test. Set
    for the whole session (not only per test), so that fixtures of wider scope, which are made
    before any test's own environment, never read or write the user's real exports or home."""
    exports = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRIEVAL_EXPORTS", str(exports))
        mp.setenv("RETRIEVAL_HOME", str(tmp_path_factory.mktemp("session-home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield exports


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _shared_exports: Path,
                  request: pytest.FixtureRequest) -> None:
    if os.environ.get("RETRIEVAL_TEST_CATALOG") == "postgresql":
        # The whole suite on PostgreSQL: each test's new collections get a fresh database.
        monkeypatch.setenv("RETRIEVAL_DATABASE_URL",
                           request.getfixturevalue("postgres").create_database())
    monkeypatch.setenv("RETRIEVAL_HOME", str(tmp_path / "retrieval-home"))
    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(_shared_exports))
    monkeypatch.delenv("RETRIEVAL_COLLECTION", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never reach for the network


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a tiny open_clip model (open_clip_config.json + .bin weights)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_spec(tiny_model: Path) -> str:
    return f"local-dir:{tiny_model}"


@pytest.fixture(scope="session")
def encoder(tiny_spec: str) -> Any:
    from retrieval import ModelSpec, load_encoder

    return load_encoder(ModelSpec.parse(tiny_spec), "cpu")


def make_image(path: Path, seed: int, size: tuple[int, int] = (64, 48), fmt: str | None = None,
               exif: Any = None) -> Path:
    """A distinct picture (background, shapes, noise) drawn from ``seed``."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(4):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(4, w), y0 + rng.randrange(4, h)
        color = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if exif is not None:
        kwargs["exif"] = exif
    img.save(path, format=fmt, **kwargs)
    return path


def make_images(folder: Path, n: int, start: int = 0, ext: str = ".jpg") -> list[Path]:
    return [make_image(folder / f"img{i:03d}{ext}", seed=i) for i in range(start, start + n)]


def retrieval_exe() -> str:
    exe = shutil.which("retrieval", path=str(Path(sys.executable).parent)) or shutil.which(
        "retrieval")
    assert exe, "the retrieval command is not installed (pip install -e .)"
    return exe


def run_cli(*args: Any, collection: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: float = 300, process: bool = False
            ) -> subprocess.CompletedProcess[str]:
    """Run the ``retrieval`` command: in this process through click's ``CliRunner`` (fast), or
    with ``process=True`` the installed command as a subprocess (end-to-end smoke tests).
    ``check`` asserts exit code 0."""
    argv = (["--collection", str(collection)] if collection is not None else []) + [
        str(a) for a in args]
    if process:
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run([retrieval_exe(), *argv], capture_output=True, text=True,
                              env=full_env, timeout=timeout)
    else:
        proc = _run_in_process(argv, env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"retrieval {' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}")
    return proc


IMPORTS_PROBE = """
import json, sys
from retrieval.interfaces.cli import main
sys.argv = ["retrieval", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("MODULES", json.dumps(sorted(m for m in sys.modules if "." not in m)))
"""


def cli_imports(*args: Any, watch: set[str]) -> tuple[list[str], list[str]]:
    """Run ``retrieval ARGS`` in a fresh Python process (exit code 0 asserted): which top-level
    modules of ``watch`` it imported, sorted, and its other output lines."""
    out = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *map(str, args)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    probe = next(ln for ln in lines if ln.startswith("MODULES "))
    imported = [m for m in json.loads(probe.removeprefix("MODULES ")) if m in watch]
    return imported, [ln for ln in lines if ln != probe]


def _run_in_process(argv: list[str], env: dict[str, str] | None
                    ) -> subprocess.CompletedProcess[str]:
    import traceback

    from click.testing import CliRunner

    from retrieval.interfaces.cli import cli

    result = CliRunner().invoke(cli, argv, env=env, prog_name="retrieval")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # An exception the command did not turn into a message: show it as a process would.
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info))  # type: ignore[misc]
    return subprocess.CompletedProcess(["retrieval", *argv], result.exit_code, result.stdout,
                                       stderr)


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit code 1 and a single ``Error: ...`` line on stderr, without a traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def postgres() -> Any:
    """A throwaway PostgreSQL server for the whole run (started on first use). Skipped where
    PostgreSQL or psycopg is missing, except with ``RETRIEVAL_REQUIRE_POSTGRES=1`` (CI)."""
    from postgres import PostgresServer, find_bin

    problem = None
    bindir = find_bin()
    if bindir is None:
        problem = "PostgreSQL is not installed (apt-get install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "psycopg is not installed (pip install -e '.[postgresql]')"
    if problem:
        if os.environ.get("RETRIEVAL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{problem}, and RETRIEVAL_REQUIRE_POSTGRES=1")
        pytest.skip(problem)
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test on both catalogs: None (SQLite in the folder) or a fresh PostgreSQL
    database's URL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres").create_database())
