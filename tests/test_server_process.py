"""``retrieval serve`` as a real process, talked to over TCP (marked slow), and its help."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_image, make_images, retrieval_exe
from server_fixtures import JSON, TOKEN, _ids_by_name, _swap_for_link, jpeg_size
from servers import ServerProcess

from retrieval import Collection
from retrieval.interfaces.client import Client, ServiceError


def raw_get(port: int, target: str, token: str) -> bytes:
    """Send a request line exactly as given (no client-side path normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
                  "\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class ServedFolder:
    """A collection made for the process, and what the test needs to know of it."""

    path: Path
    root: Path
    outside: Path
    names: dict[str, int]  # file name -> item id
    expected: list[int]  # the library's ids for "a red circle", k=4


def _collection(encoder: Any, tmp_path: Path) -> ServedFolder:
    root = tmp_path / "photos"
    make_images(root, 6)
    make_image(root / "wide.jpg", seed=60, size=(600, 300))
    (root / "img002.txt").write_text("a caption with the word quokka\n")
    make_image(tmp_path / "outside" / "secret.jpg", seed=99)
    make_image(root / "link.jpg", seed=97)
    col_path = tmp_path / "col"
    with Collection(col_path, encoder=encoder) as col:
        assert col.index([root], workers=0).added == 8
        _swap_for_link(root / "link.jpg", tmp_path / "outside" / "secret.jpg")
        names = _ids_by_name(col, root)
        expected = [h.id for h in col.search("a red circle", k=4)]
    return ServedFolder(col_path, root, tmp_path / "outside", names, expected)


def _refused_before_anything(server: ServerProcess) -> None:
    # a body declared larger than the limit is refused before it is read, token or not
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 104857600\r\n\r\n{")
        assert conn.recv(4096).startswith(b"HTTP/1.1 413")
    # bound to 127.0.0.1: another Host name (a DNS rebinding page) gets a 400, token or not
    rebound = httpx.get(f"{server.url}/health", headers={
        "Host": f"evil.example:{server.port}", "Authorization": f"Bearer {TOKEN}"})
    assert rebound.status_code == 400 and "Host" in rebound.json()["detail"]
    assert rebound.headers["x-content-type-options"] == "nosniff"
    # without (or with a wrong) token: 401 everywhere but the page
    assert httpx.get(f"{server.url}/health").status_code == 401
    assert httpx.post(f"{server.url}/search", json={"text": "a"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{server.url}/items/1/image", headers=wrong).status_code == 401
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and 'name="q"' in page.text
    with Client(server.url) as anonymous, pytest.raises(ServiceError) as err:
        anonymous.search("a red circle")
    assert err.value.status == 401


def _client_calls(server: ServerProcess, served: ServedFolder) -> None:
    names, root = served.names, served.root
    with Client(server.url, token=TOKEN) as client:
        assert client.health() == {"status": "ok", "collection": str(served.path)}
        assert client.info()["counts"]["image"] == 8
        hits = client.search("a red circle", k=4)
        assert [h.id for h in hits] == served.expected
        first = client.search(image=root / "img004.jpg", k=3)
        assert first[0].id == names["img004.jpg"]
        assert first[0].score == pytest.approx(1.0, abs=1e-3)
        assert client.search("quokka", hybrid=True, k=1)[0].id == names["img002.jpg"]
        item = client.item(names["img002.jpg"])
        assert item.path == str(root / "img002.jpg")
        assert item.text == "a caption with the word quokka"
        assert jpeg_size(client.thumbnail(names["wide.jpg"], size=128)) == (128, 64)
        with pytest.raises(ServiceError) as err:
            client.thumbnail(names["link.jpg"])
        assert err.value.status == 403
        with pytest.raises(ServiceError) as err:
            client.item(987654)
        assert err.value.status == 404


def _raw_requests(server: ServerProcess, served: ServedFolder) -> None:
    names, root = served.names, served.root
    auth = {"Authorization": f"Bearer {TOKEN}"}
    upload = httpx.post(f"{server.url}/search/upload", headers=auth, data={"k": "2"},
                        files={"image": ("q.jpg", (root / "img003.jpg").read_bytes(),
                                         "image/jpeg")}, timeout=30)
    assert upload.status_code == 200
    assert upload.json()["hits"][0]["id"] == names["img003.jpg"]
    original = httpx.get(f"{server.url}/items/{names['img001.jpg']}/image", headers=auth)
    assert original.content == (root / "img001.jpg").read_bytes()
    # path tricks sent byte for byte, past any client-side normalisation
    secret = (served.outside / "secret.jpg").read_bytes()
    for target in ("/items/../../../../etc/passwd", "/items/1/../../../etc/passwd",
                   "/items/..%2F..%2F..%2Fetc%2Fpasswd/image", "/items/%2e%2e/image",
                   f"/items/{names['link.jpg']}/image", "/../../etc/passwd",
                   f"/items/{names['img001.jpg']}/image/../../../../etc/passwd"):
        response = raw_get(server.port, target, TOKEN)
        status = int(response.split(b" ", 2)[1])
        assert status in (400, 403, 404, 422), (target, response[:300])
        assert b"root:" not in response and secret[:200] not in response, target
    # a request the server cannot parse as JSON is a 422, and the process survives it
    bad = httpx.post(f"{server.url}/search", headers={**auth, **JSON}, content=b"{")
    assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
    assert httpx.get(f"{server.url}/health", headers=auth).status_code == 200


@pytest.mark.slow
def test_real_server_process(encoder: Any, tmp_path: Path) -> None:
    served = _collection(encoder, tmp_path)
    server = ServerProcess(served.path, tmp_path / "server.log",
                           env={"RETRIEVAL_TOKEN": TOKEN})
    try:
        server.wait_ready()
        _refused_before_anything(server)
        _client_calls(server, served)
        _raw_requests(server, served)
        assert "Traceback" not in server.output()
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_server_command_help() -> None:
    out = subprocess.run([retrieval_exe(), "serve", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for option in ("--host", "--port", "--token", "RETRIEVAL_TOKEN", "--max-upload",
                   "--allowed-hosts"):
        assert option in out.stdout, option
