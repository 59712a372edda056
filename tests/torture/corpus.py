"""A hostile corpus: every kind of file an indexer meets in the wild or from an attacker.

``make_corpus(root, outside)`` writes it under ``root`` (``outside`` is a folder beside it, for
links that lead out) and returns what each entry should become: indexed, or skipped with a
reason that contains a given phrase. Names are bytes where it matters (Linux allows any byte
but ``/`` and NUL in a name).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from conftest import make_image


@dataclass(frozen=True)
class Expect:
    """What indexing a corpus entry must give: ``reason`` None means indexed."""

    kind: str
    path: str  # as os.fsdecode gives it
    reason: str | None = None


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's first bytes)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _animated_gif(frames: int) -> bytes:
    from PIL import Image

    images = [Image.new("P", (16, 16), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return buf.getvalue()


def make_corpus(root: Path, outside: Path, *, as_root: bool) -> list[Expect]:
    """Write the corpus; ``as_root``: permission tricks do not apply to this process."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    broot = os.fsencode(root)
    out: list[Expect] = []

    def good(kind: str, name: bytes, seed: int, fmt: str | None = None) -> None:
        path = os.path.join(broot, name)
        make_image(Path(os.fsdecode(path)), seed, fmt=fmt)
        out.append(Expect(kind, os.fsdecode(path)))

    def bad(kind: str, name: bytes, reason: str, data: bytes | None = None) -> Path:
        path = Path(os.fsdecode(os.path.join(broot, name)))
        if data is not None:
            path.write_bytes(data)
        out.append(Expect(kind, str(path), reason))
        return path

    good("plain jpeg", b"plain.jpg", 1)
    good("png", b"plain.png", 2)
    good("newline and a byte that is not UTF-8 in the name", b"bad\nname\xff.png", 3)
    good("invalid UTF-8 sequence in the name", b"caf\xc3(\xa9.jpg", 4)
    good("U+FFFF in the name", "odd\uffffname.jpg".encode(), 5)
    good("shell metacharacters in the name", b"$(touch pwned); rm -rf ~ 'x\".jpg", 6)
    good("leading dash", b"-rf --help.jpg", 7)
    good("longest name the file system allows", b"n" * 251 + b".jpg", 8)
    good("right-to-left override in the name", "gnp\u202e.jpg".encode(), 9)
    good("PNG bytes behind a .jpg name", b"png-inside.jpg", 10, fmt="PNG")
    good("animated GIF with 3000 frames", b"anim.gif", 0)
    (root / "anim.gif").write_bytes(_animated_gif(3000))

    fifo = root / "fifo.jpg"
    os.mkfifo(fifo)
    out.append(Expect("named pipe", str(fifo), "named pipe"))
    sock_path = root / "sock.png"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
    out.append(Expect("socket", str(sock_path), "socket"))
    (root / "zero.jpg").symlink_to("/dev/zero")
    out.append(Expect("link to a device", str(root / "zero.jpg"), "character device"))
    (root / "dangling.jpg").symlink_to(root / "no-such-file.jpg")
    out.append(Expect("broken symbolic link", str(root / "dangling.jpg"), "broken symbolic link"))
    (root / "loop").mkdir()
    (root / "loop" / "again").symlink_to(root / "loop")  # a folder loop: entered once
    make_image(outside / "elsewhere.jpg", 11)
    (root / "link-out.jpg").symlink_to(outside / "elsewhere.jpg")
    out.append(Expect("symbolic link to an image outside", str(root / "link-out.jpg"),
                      "links outside the indexed folders"))
    make_image(outside / "dir" / "deep.jpg", 15)
    (root / "dir-out").symlink_to(outside / "dir")
    out.append(Expect("symbolic link to a folder outside", str(root / "dir-out"),
                      "folder links outside the indexed folders"))
    page = make_image(root / "real.png", 16, fmt="PNG").rename(root / "real.html")
    with open(page, "ab") as f:
        f.write(b"<script>alert(document.domain)</script>")
    (root / "page.png").symlink_to("real.html")
    out.append(Expect("image-named link to a PNG with a script, named real.html",
                      str(root / "page.png"), "links to a file not named as an image: real.html"))
    secret = outside / "secret.txt"
    secret.write_text("password: hunter2\n")
    (root / "plain.txt").symlink_to(secret)  # the sidecar caption of plain.jpg and plain.png
    out.append(Expect("caption linking to a secret outside", str(root / "plain.txt"),
                      "caption file links outside the indexed folders"))
    (root / "anim.txt").symlink_to("/proc/self/environ")
    out.append(Expect("caption linking to /proc/self/environ", str(root / "anim.txt"),
                      "caption file links outside the indexed folders"))
    os.mkfifo(root / "png-inside.txt")
    out.append(Expect("caption that is a named pipe", str(root / "png-inside.txt"),
                      "caption file is not a regular file (a named pipe)"))
    os.link(secret, root / "hardlink.jpg")
    out.append(Expect("hard link to a text file outside", str(root / "hardlink.jpg"),
                      "not a recognised image format"))
    bad("empty file", b"empty.jpg", "empty file", b"")
    bad("text behind a .png name", b"lying.png", "not a recognised image format",
        b"this is not an image\n" * 20)
    bad("decompression bomb (100000 x 100000 PNG header)", b"bomb.png", "--max-pixels",
        _png_header(100_000, 100_000))
    bad("zero-width PNG header", b"zero-width.png", "", _png_header(0, 16))
    data = make_image(outside / "whole.jpg", 12, size=(400, 300)).read_bytes()
    bad("truncated JPEG", b"truncated.jpg", "corrupt or truncated", data[: len(data) // 3])
    bad("JPEG header then garbage", b"garbage.jpg", "", data[:600] + os.urandom(4000))
    (root / "folder.jpg").mkdir()
    out.append(Expect("folder named like an image", str(root / "folder.jpg"), "is a directory"))
    hidden = root / ".hidden.jpg"
    make_image(hidden, 13)  # skipped silently unless --hidden: neither indexed nor an error
    if not as_root:
        locked = root / "locked.jpg"
        make_image(locked, 14)
        locked.chmod(0)
        out.append(Expect("unreadable file", str(locked), "permission denied"))
    return out
