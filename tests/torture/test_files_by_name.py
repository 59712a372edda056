"""Files read because of their name (issue 19, items 1 and 2).

A sidecar ``photo.txt`` beside ``photo.jpg`` and an image found in a folder are not the user's
choice: a link named like one may lead to a secret, to ``/proc/self/environ``, to the shadow
password file, or to a script named ``real.html``. Each is used only when, links resolved, it
is a regular file under the folders indexed, and is otherwise skipped with its reason.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from conftest import make_image, run_cli

from retrieval import Collection
from retrieval.pathnames import shown

SCRIPT = b"<script>fetch('/x?t=' + localStorage.token)</script>"


def _catalog_bytes(col: Path) -> bytes:
    """Every byte the collection keeps on disk (the SQLite file and its WAL included)."""
    return b"".join(p.read_bytes() for p in sorted(col.rglob("*")) if p.is_file())


def _skipped(summary: dict) -> dict[str, str]:
    return {e["path"]: e["reason"] for e in summary["errors"]}


def _index(col: Path, *roots: Path, process: bool = False) -> dict:
    proc = run_cli("index", *roots, "--model", "demo", "--workers", "0", "--json",
                   collection=col, process=process)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _assert_nowhere(col: Path, secret: str) -> None:
    """Not in the catalog's files, not found by a keyword search of texts or images."""
    assert secret.encode() not in _catalog_bytes(col)
    for target in ("text", "image"):
        out = run_cli("search", secret, "--hybrid", "--target", target, "-k", "50", "--json",
                      collection=col).stdout
        assert secret not in out


def _photo(root: Path) -> Path:
    return make_image(root / "photo.jpg", 1)


# --- sidecars -----------------------------------------------------------------------------------

def test_a_sidecar_linking_to_a_file_outside_is_skipped_and_never_stored(tmp_path):
    secret = f"hunter2-{secrets.token_hex(8)}"
    (tmp_path / "secret.txt").write_text(f"password: {secret}\n")
    root = tmp_path / "photos"
    _photo(root)
    (root / "photo.txt").symlink_to(tmp_path / "secret.txt")
    col = tmp_path / "col"
    summary = _index(col, root)
    assert summary["added"] == 1
    reason = _skipped(summary)[str(root / "photo.txt")]
    assert reason.startswith("caption file links outside the indexed folders"), reason
    _assert_nowhere(col, secret)


def test_the_sidecar_of_a_file_named_explicitly_stays_in_its_folder(tmp_path):
    secret = f"beside-{secrets.token_hex(8)}"
    (tmp_path / "secret.txt").write_text(secret)
    root = tmp_path / "photos"
    photo, other = _photo(root), make_image(root / "other.jpg", 2)
    (root / "photo.txt").symlink_to(tmp_path / "secret.txt")
    (root / "other.txt").write_text("a caption beside a file named explicitly\n")
    col = tmp_path / "col"
    summary = _index(col, photo, other)
    assert summary["added"] == 2
    assert "links outside the indexed folders" in _skipped(summary)[str(root / "photo.txt")]
    with Collection(col) as c:
        assert [it.text for it in c._catalog.get_items(range(1, 100)).values()
                if it.kind == "text"] == ["a caption beside a file named explicitly"]
    _assert_nowhere(col, secret)


def test_a_sidecar_linking_to_proc_self_environ_stores_no_environment(tmp_path, monkeypatch):
    password = f"pw-{secrets.token_hex(12)}"
    monkeypatch.setenv("RETRIEVAL_PLANTED_PASSWORD", password)  # in the indexer's environment
    root = tmp_path / "photos"
    _photo(root)
    (root / "photo.txt").symlink_to("/proc/self/environ")
    col = tmp_path / "col"
    summary = _index(col, root, process=True)  # /proc/self is the indexing process
    assert summary["added"] == 1
    assert "links outside the indexed folders" in _skipped(summary)[str(root / "photo.txt")]
    _assert_nowhere(col, password)
    assert b"RETRIEVAL_HOME=" not in _catalog_bytes(col)


def test_a_sidecar_linking_to_the_shadow_file_is_skipped(tmp_path):
    shadow = Path("/etc/shadow")
    try:
        first = shadow.read_text().splitlines()[0]
    except (OSError, IndexError):
        pytest.skip("no readable /etc/shadow here (the indexer could not read it either)")
    root = tmp_path / "photos"
    _photo(root)
    (root / "photo.txt").symlink_to(shadow)
    col = tmp_path / "col"
    summary = _index(col, root)
    assert "links outside the indexed folders" in _skipped(summary)[str(root / "photo.txt")]
    assert first.encode() not in _catalog_bytes(col)
    assert first.split(":")[0] + ":" not in json.dumps(summary)


def test_sidecars_that_are_not_regular_files_are_skipped_without_hanging(tmp_path):
    root = tmp_path / "photos"
    for name in ("fifo", "zero", "dir", "inner"):
        make_image(root / f"{name}.jpg", hash(name) % 1000)
    os.mkfifo(root / "fifo.txt")  # reading it would block forever
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "dir.txt").mkdir()
    (root / "real caption.txt").write_text("a caption linked from inside the folder\n")
    (root / "inner.txt").symlink_to(root / "real caption.txt")  # inside the folder: kept
    col = tmp_path / "col"
    summary = _index(col, root)
    skipped = _skipped(summary)
    assert "not a regular file (a named pipe)" in skipped[str(root / "fifo.txt")]
    assert "links outside the indexed folders" in skipped[str(root / "zero.txt")]
    assert "not a regular file (a directory)" in skipped[str(root / "dir.txt")]
    assert str(root / "inner.txt") not in skipped
    with Collection(col) as c:
        captions = {it.path: it.text for it in c._catalog.get_items(range(1, 100)).values()
                    if it.kind == "text"}
    assert captions == {str(root / "inner.txt"): "a caption linked from inside the folder"}


def test_a_caption_swapped_for_a_link_out_is_dropped_at_the_next_run(tmp_path):
    secret = f"swapped-{secrets.token_hex(8)}"
    (tmp_path / "secret.txt").write_text(secret)
    root = tmp_path / "photos"
    _photo(root)
    (root / "photo.txt").write_text("a harmless caption\n")
    col = tmp_path / "col"
    _index(col, root)
    (root / "photo.txt").unlink()
    (root / "photo.txt").symlink_to(tmp_path / "secret.txt")
    summary = _index(col, root)
    assert "links outside" in _skipped(summary)[str(root / "photo.txt")]
    with Collection(col) as c:
        assert c._catalog.counts() == {"image": 1, "text": 0}  # the old caption is gone
    _assert_nowhere(col, secret)


def test_a_sidecar_changed_between_scan_and_read_is_not_followed(tmp_path):
    from retrieval.ingest.confine import Folders, FoundFileError, find_sidecar, read_sidecar

    secret = f"race-{secrets.token_hex(8)}"
    (tmp_path / "secret.txt").write_text(secret)
    root = tmp_path / "photos"
    _photo(root)
    (root / "photo.txt").write_text("the caption the scan saw\n")
    cap = find_sidecar(str(root / "photo.jpg"), Folders([str(root)]))
    assert not isinstance(cap, str) and cap is not None
    assert read_sidecar(cap, 1000) == b"the caption the scan saw\n"
    (root / "photo.txt").unlink()
    (root / "photo.txt").symlink_to(tmp_path / "secret.txt")  # swapped after the check
    with pytest.raises(FoundFileError, match="changed"):
        read_sidecar(cap, 1000)
    (root / "photo.txt").unlink()
    os.mkfifo(root / "photo.txt")  # and a pipe in its place does not block
    with pytest.raises(FoundFileError):
        read_sidecar(cap, 1000)


def test_training_sidecars_follow_the_same_rule(tmp_path):
    from retrieval.training.data import read_pairs

    secret = f"train-{secrets.token_hex(8)}"
    (tmp_path / "secret.txt").write_text(secret)
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")[0].decode(errors="replace")
    data = tmp_path / "data"
    for i in range(4):
        make_image(data / f"ok{i}.png", seed=i)
        (data / f"ok{i}.txt").write_text(f"caption {i}\n")
    for name, target in (("out", tmp_path / "secret.txt"), ("env", Path("/proc/self/environ")),
                         ("shadow", Path("/etc/shadow"))):
        make_image(data / f"{name}.png", seed=len(name))
        (data / f"{name}.txt").symlink_to(target)
    os.mkfifo(data / "fifo.txt")
    make_image(data / "fifo.png", seed=9)
    pairs, errors = read_pairs(data)
    assert sorted(pairs) == [str(data / f"ok{i}.png") for i in range(4)]
    every_caption = json.dumps(pairs)
    assert secret not in every_caption and environ not in every_caption
    reasons = {Path(e.path).name: e.reason for e in errors}
    for name in ("out", "env", "shadow"):
        assert "links outside the indexed folders" in reasons[f"{name}.txt"], reasons
    assert "named pipe" in reasons["fifo.txt"]


# --- images reached through a link, or named explicitly -----------------------------------------

def _html_png(path: Path) -> Path:
    """A real PNG with a script appended, named ``.html`` (served as a page by its name)."""
    make_image(path.with_suffix(".png.tmp"), 3, fmt="PNG").rename(path)
    with open(path, "ab") as f:
        f.write(SCRIPT)
    return path


def test_an_image_named_link_to_a_file_not_named_as_an_image_is_refused(tmp_path):
    root = tmp_path / "photos"
    _photo(root)
    _html_png(root / "real.html")
    (root / "link.png").symlink_to("real.html")
    (root / "chain.png").symlink_to("link.png")  # a chain ends where its last link does
    col = tmp_path / "col"
    summary = _index(col, root)
    skipped = _skipped(summary)
    for name in ("link.png", "chain.png"):
        assert skipped[str(root / name)] == "links to a file not named as an image: real.html"
    assert (summary["added"], summary["failed"]) == (1, 2)
    with Collection(col) as c:
        assert {it.path for it in c._catalog.get_items(range(1, 100)).values()} == {
            str(root / "photo.jpg")}
    assert SCRIPT not in _catalog_bytes(col)


def test_a_file_named_explicitly_must_be_named_as_an_image(tmp_path):
    root = tmp_path / "photos"
    page = _html_png(root / "real.html")
    (root / "link.png").symlink_to("real.html")
    col = tmp_path / "col"
    summary = _index(col, page)
    reason = _skipped(summary)[str(page)]
    assert reason.startswith("not named as an image or video (.html"), reason
    assert "\n" not in reason
    summary = _index(col, root / "link.png")
    assert _skipped(summary)[str(root / "link.png")] == (
        "links to a file not named as an image: real.html")
    with Collection(col) as c:
        assert c._catalog.counts() == {"image": 0, "text": 0}
    # an image named explicitly is indexed, wherever a link to it leads
    elsewhere = make_image(tmp_path / "elsewhere" / "a.jpg", 5)
    (root / "a-link.jpg").symlink_to(elsewhere)
    assert _index(col, root / "a-link.jpg")["added"] == 1


def test_links_leading_out_of_the_indexed_folders_are_refused(tmp_path):
    root, other, outside = tmp_path / "photos", tmp_path / "other", tmp_path / "outside"
    _photo(root)
    inside = make_image(root / "sub" / "inside.jpg", 2)
    theirs = make_image(other / "theirs.jpg", 3)
    make_image(outside / "out.jpg", 4)
    make_image(outside / "dir" / "deep.jpg", 5)
    (root / "inner-link.jpg").symlink_to(inside)  # inside the folder: indexed
    (root / "to-other.jpg").symlink_to(theirs)  # into another folder of the collection
    (root / "out-link.jpg").symlink_to(outside / "out.jpg")
    (root / "outdir").symlink_to(outside / "dir")  # a folder leading out is not entered
    (root / "subdir-link").symlink_to(root / "sub")  # one leading inside is (seen: once)
    col = tmp_path / "col"
    summary = _index(col, root, other)
    skipped = _skipped(summary)
    assert skipped == {
        str(root / "out-link.jpg"): "links outside the indexed folders: "
                                    + shown(str(outside / "out.jpg")),
        str(root / "outdir"): "folder links outside the indexed folders: "
                              + shown(str(outside / "dir")),
    }
    with Collection(col) as c:
        stored = {it.path for it in c._catalog.get_items(range(1, 100)).values()}
    assert stored == {str(root / "photo.jpg"), str(inside), str(root / "inner-link.jpg"),
                      str(root / "to-other.jpg"), str(theirs)}
    # a later run over one folder still knows the collection's other folders
    again = _index(col, root)
    assert (again["added"], again["removed"], again["failed"]) == (0, 0, 2)


def test_an_indexed_image_replaced_by_a_link_to_a_page_is_removed(tmp_path):
    root = tmp_path / "photos"
    _photo(root)
    make_image(root / "link.png", 7, fmt="PNG")
    col = tmp_path / "col"
    assert _index(col, root)["added"] == 2
    _html_png(root / "real.html")
    (root / "link.png").unlink()
    (root / "link.png").symlink_to("real.html")
    summary = _index(col, root)
    assert (summary["removed"], summary["failed"]) == (1, 1)
    with Collection(col) as c:
        assert c._catalog.counts() == {"image": 1, "text": 0}
