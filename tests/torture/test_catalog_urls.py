"""Catalog URLs keep their secrets (issue 19.4): a password in the user info or in a query
parameter never appears in a message, ``info`` or the collection's ``catalog.url``; a malformed
URL is one line; a collection whose server asks for a password says how to give it."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, make_images, run_cli

SECRETS = ("pw0rd1x", "hunter2x", "s3cretpw")


def _closed_port() -> int:
    from postgres import _free_port

    return _free_port()


def _no_secret(proc: Any) -> None:
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, (secret, proc.stderr)


def test_secrets_in_a_url_are_never_shown(tmp_path):
    url = (f"postgresql://someone:pw0rd1x@127.0.0.1:{_closed_port()}/db?password=hunter2x"
           "&sslpassword=s3cretpw&sslmode=prefer")
    for argv in (["search", "x"], ["info"], ["index", tmp_path, "--model", "demo"]):
        proc = run_cli("--catalog", url, *argv, collection=tmp_path / "c", check=False)
        assert_one_error_line(proc, "127.0.0.1", "password=***", "sslpassword=***")
        _no_secret(proc)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("url", [
    "postgresql://someone:hunter2x@127.0.0.1:abc/db",
    "postgresql://someone:hunter2x@[::1/db?sslpassword=s3cretpw",
    "postgresql://someone@127.0.0.1:/db?password=hunter2x",
])
def test_a_malformed_url_is_one_line(tmp_path, url):
    proc = run_cli("--catalog", url, "index", tmp_path, "--model", "demo",
                   collection=tmp_path / "c", check=False)
    assert_one_error_line(proc, "not a valid database URL")
    _no_secret(proc)
    assert not (tmp_path / "c").exists()


def test_shown_urls_mask_every_secret():
    from retrieval.storage.engines import shown_url, without_password

    shown = shown_url("postgresql://u:pw0rd1x@h:5/d?passfile=/home/u/.pgpass&sslkey=/k.pem"
                      "&sslmode=require&password=hunter2x")
    assert shown == ("postgresql://u:***@h:5/d?passfile=***&password=***&sslkey=***"
                     "&sslmode=require")
    # an unquoted @ in the password: everything up to the last @ is masked
    assert shown_url("postgresql://u:pw0rd1x@s3cretpw@h/d") == "postgresql://u:***@h/d"
    kept = without_password("postgresql://u:pw0rd1x@h:5/d?sslpassword=s3cretpw&sslmode=require")
    assert kept == "postgresql+psycopg://u@h:5/d?sslmode=require"


PASSWORD = "Secr3t-pass"


@pytest.fixture(scope="module")
def password_db(postgres: Any) -> str:
    """A database owned by a role that must log in with a password (SCRAM over TCP): the URL
    without the password."""
    from sqlalchemy import create_engine, text

    user = "pwuser"
    engine = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(text(f'CREATE DATABASE "pwdb" OWNER {user}'))
        hba = Path(conn.execute(text("SHOW hba_file")).scalar())
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        conn.execute(text("SELECT pg_reload_conf()"))
    engine.dispose()
    url = f"postgresql://{user}@127.0.0.1:{postgres.port}/pwdb"
    _wait_for_password_rule(url)
    return url


def _wait_for_password_rule(url: str) -> None:
    """The server reloads its rules on a signal: wait until it asks this role for one."""
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, password="", passfile="/nonexistent").close()
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
        if time.monotonic() > deadline:
            raise AssertionError("the server never asked for a password")
        time.sleep(0.05)


def test_catalog_url_keeps_no_password(tmp_path, password_db, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    full = password_db.replace("pwuser@", f"pwuser:{PASSWORD}@")
    pics, col = tmp_path / "pics", tmp_path / "col"
    make_images(pics, 2)
    run_cli("--catalog", full, "index", pics, "--model", "demo", collection=col)
    stored = (col / "catalog.url").read_text()
    assert PASSWORD not in stored and "pwuser@127.0.0.1" in stored
    assert stat.S_IMODE((col / "catalog.url").stat().st_mode) == 0o600
    # Opened from catalog.url alone: the server asks, and the line says how to answer.
    proc = run_cli("info", collection=col, check=False)
    assert_one_error_line(proc, "PGPASSWORD", ".pgpass", "RETRIEVAL_DATABASE_URL")
    # Every way of giving it works, and nothing shows it.
    for env, argv in (({"PGPASSWORD": PASSWORD}, []),
                      ({"RETRIEVAL_DATABASE_URL": full}, []),
                      ({}, ["--catalog", f"{password_db}?password={PASSWORD}"])):
        out = run_cli(*argv, "info", "--json", collection=col, env=env).stdout
        assert json.loads(out)["counts"]["image"] == 2 and PASSWORD not in out
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:*:pwdb:pwuser:{PASSWORD}\n")
    pgpass.chmod(0o600)
    out = run_cli("search", "x", "-k", "1", collection=col, env={"PGPASSFILE": str(pgpass)})
    assert str(pics) in out.stdout
    assert PASSWORD not in (col / "catalog.url").read_text()
