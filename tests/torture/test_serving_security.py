"""What the HTTP service serves, and how it answers hostile requests (issue 19, items 1 and 6).

A PNG with a script appended is served by the type its content decodes as, never by its name
(a ``.jpg`` name, or a ``.png`` link to a ``.html`` file); every response says ``nosniff``; files
and thumbnails carry a sandboxing Content-Security-Policy; the page runs no inline script; the
page's token lives in an HttpOnly cookie set by ``POST /session``, never in storage a script
can read; a ``Host`` outside the allowed names is refused (DNS rebinding); and the upload form
answers every bad field with a 4xx and a one-line ``detail``.

All in-process (``TestClient``) over a real collection indexed with the tiny test model.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from retrieval import Collection
from retrieval.interfaces.page import WEB_FILES
from retrieval.interfaces.server import create_app

TOKEN = "s3cret-token"
SCRIPT = b"<script>document.title='pwned:'+document.cookie</script>"
LOOPBACK = ["127.0.0.1", "localhost", "[::1]"]
FUZZ_EXAMPLES = int(os.environ.get("RETRIEVAL_FUZZ_EXAMPLES", "100"))


def _png_with_script() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue() + SCRIPT


def _dib() -> bytes:
    """A BMP without its 14-byte file header: Pillow decodes it as "DIB", which browsers do
    not show, so it has no safe image type."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "BMP")
    return buf.getvalue()[14:]


@dataclass
class Site:
    col: Collection
    root: Path
    ids: dict[str, int]  # file name -> item id
    http: TestClient  # no token, no Host check
    guarded: TestClient  # token and loopback Host check


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("serving")
    root = base / "photos"
    make_image(root / "plain.jpg", seed=1)
    (root / "pic.jpg").write_bytes(_png_with_script())  # a PNG named as a JPEG
    (root / "real.html").write_bytes(_png_with_script())
    os.symlink("real.html", root / "link.png")  # an image name for an HTML file
    (root / "bitmap.dib").write_bytes(_dib())
    col = Collection(base / "col", encoder=encoder)
    col.index([root], workers=0)
    items = col._catalog.get_items(col._catalog.vector_ids("image").tolist())
    ids = {os.path.basename(it.path): i for i, it in items.items()}
    # link.png may be refused at indexing (it names an HTML file); the others are images
    assert {"plain.jpg", "pic.jpg", "bitmap.dib"} <= set(ids), ids
    guarded = TestClient(create_app(col, token=TOKEN, allowed_hosts=LOOPBACK,
                                    max_body_bytes=4096),
                         base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    yield Site(col, root, ids, TestClient(create_app(col), raise_server_exceptions=False),
               guarded)
    col.close()


def _csp(r: Any) -> dict[str, str]:
    """The response's Content-Security-Policy as {directive: value}."""
    out = {}
    for part in r.headers.get("content-security-policy", "").split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            out[name.lower()] = value.strip()
    return out


# --- item files: the type of their content, never of their name ---------------------------------

def test_media_type_comes_from_the_decoded_content() -> None:
    from retrieval.media import open_image
    from retrieval.search.files import media_type_for

    with open_image(io.BytesIO(_png_with_script())) as img:
        assert img.format == "PNG"
        assert media_type_for(img.format) == "image/png"
    with open_image(io.BytesIO(_dib())) as img:
        assert media_type_for(img.format) == "application/octet-stream"
    for fmt in ("HTML", "SVG", "", None, "EPS"):
        assert media_type_for(fmt) == "application/octet-stream", fmt
    assert media_type_for("JPEG") == media_type_for("MPO") == "image/jpeg"


def test_a_png_named_jpg_is_served_as_png(site: Site) -> None:
    r = site.http.get(f"/items/{site.ids['pic.jpg']}/image")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content == _png_with_script()
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = _csp(r)
    assert csp.get("default-src") == "'none'" and "sandbox" in csp, csp


def test_an_image_named_link_to_an_html_file_is_never_html(site: Site) -> None:
    """The reported attack: ``link.png -> real.html`` holding a PNG and a script. Whether the
    link is refused at indexing or indexed, it is never served as HTML."""
    if "link.png" not in site.ids:
        return  # refused at indexing: nothing to serve
    r = site.http.get(f"/items/{site.ids['link.png']}/image")
    assert r.status_code in (200, 403, 404, 409), r.text
    assert "html" not in r.headers["content-type"]
    if r.status_code == 200:
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in _csp(r)


def test_a_format_without_a_safe_type_is_a_download(site: Site) -> None:
    r = site.http.get(f"/items/{site.ids['bitmap.dib']}/image")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_thumbnails_are_sandboxed_jpegs(site: Site) -> None:
    r = site.http.get(f"/items/{site.ids['pic.jpg']}/thumbnail?size=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in _csp(r) and _csp(r)["default-src"] == "'none'"


# --- headers on every response ------------------------------------------------------------------

def _every_kind_of_response(site: Site) -> list[tuple[str, Any]]:
    jpeg = (site.root / "plain.jpg").read_bytes()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    g = site.guarded
    return [
        ("page", site.http.get("/")),
        ("health", site.http.get("/health")),
        ("search", site.http.post("/search", json={"text": "x", "k": 1})),
        ("400", site.http.post("/search", json={"text": "x", "k": 0})),
        ("422", site.http.post("/search", json={"bogus": 1})),
        ("404 route", site.http.get("/nowhere")),
        ("405", site.http.delete("/health")),
        ("404 item", site.http.get("/items/987654")),
        ("upload", site.http.post("/search/upload", files={"image": ("q.jpg", jpeg)})),
        ("401", g.get("/health")),
        ("413", g.post("/search", content=b"x" * 5000, headers=auth)),
        ("400 host", g.get("/health", headers={**auth, "host": "evil.example"})),
        ("guarded ok", g.get("/health", headers=auth)),
    ]


def test_every_response_says_nosniff(site: Site) -> None:
    for name, r in _every_kind_of_response(site):
        assert r.headers.get("x-content-type-options") == "nosniff", (name, r.status_code)
        assert r.headers.get("referrer-policy") == "no-referrer", name
        assert r.headers.get("x-frame-options") == "DENY", name
        assert _csp(r).get("frame-ancestors") == "'none'", (name, _csp(r))


def test_a_server_error_says_nosniff_too(site: Site) -> None:
    """An exception the app did not expect: a one-line JSON 500 with the same headers."""
    app = create_app(site.col)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert r.headers.get("x-content-type-options") == "nosniff"


# --- the page: no inline script, a strict policy --------------------------------------------------

def test_the_page_forbids_inline_script(site: Site) -> None:
    r = site.http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = _csp(r)
    assert csp.get("default-src") == "'none'", csp
    assert csp.get("script-src") == "'self'", csp  # no 'unsafe-inline', no 'unsafe-eval'
    assert "unsafe" not in csp.get("style-src", ""), csp
    assert set(csp.get("img-src", "").split()) <= {"'self'", "blob:", "data:"}, csp
    assert csp.get("connect-src") == "'self'" and csp.get("base-uri") == "'none'", csp
    html = r.text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "an inline event handler"
    assert not re.search(r"<style|\sstyle\s*=", html, re.I), "inline style"
    assert '<script type="module" src="/app.js">' in html and "/app.css" in html
    for url in WEB_FILES:
        asset = site.guarded.get(url)  # public, like the page
        assert asset.status_code == 200, url
        kind = "text/html" if url == "/" else "text/css" if url.endswith(".css") \
            else "text/javascript"
        assert asset.headers["content-type"].startswith(kind), asset.headers
        assert asset.headers["x-content-type-options"] == "nosniff"


def _scripts(site: Site) -> dict[str, str]:
    return {url: site.http.get(url).text for url in WEB_FILES if url.endswith(".js")}


def test_the_page_keeps_no_token_where_a_script_can_read_it(site: Site) -> None:
    scripts = _scripts(site)
    for url, js in scripts.items():
        for name in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert name not in js, (url, name)
    assert "/session" in scripts["/app.js"]


def test_the_page_never_parses_data_as_html(site: Site) -> None:
    """Paths, captions and texts go into the page as text nodes: no script of the page parses
    a string as HTML or runs one as code."""
    for url, js in _scripts(site).items():
        for name in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                     "eval(", "new Function", "setTimeout(\"", "DOMParser"):
            assert name not in js, (url, name)


# --- the token: an HttpOnly cookie --------------------------------------------------------------

def _cookie_attrs(r: Any) -> tuple[str, str, set[str]]:
    name_value, *attrs = [p.strip() for p in r.headers["set-cookie"].split(";")]
    name, _, value = name_value.partition("=")
    return name, value, {a.lower() for a in attrs}


def test_session_cookie_is_httponly_and_strict(site: Site, encoder: Any) -> None:
    http = TestClient(create_app(site.col, token=TOKEN), raise_server_exceptions=False)
    assert http.get("/session").json() == {"token_required": True, "signed_in": False}
    assert http.get("/health").status_code == 401
    wrong = http.post("/session", json={"token": "nope"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    ok = http.post("/session", json={"token": TOKEN})
    assert ok.status_code == 204, ok.text
    name, value, attrs = _cookie_attrs(ok)
    assert TOKEN not in value and value  # the cookie is not the token itself
    assert {"httponly", "samesite=strict", "path=/"} <= attrs, attrs
    assert "secure" not in attrs  # plain http: a Secure cookie would never come back
    assert http.get("/health").status_code == 200  # the cookie authenticates
    assert http.get("/session").json() == {"token_required": True, "signed_in": True}
    # a request from another site (or another port of this host) does not ride on the cookie
    for site_kind in ("cross-site", "same-site"):
        r = http.get("/health", headers={"Sec-Fetch-Site": site_kind})
        assert r.status_code == 401, site_kind
    assert http.get("/health", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    out = http.delete("/session")
    assert out.status_code == 204
    assert _cookie_attrs(out)[0] == name and "max-age=0" in _cookie_attrs(out)[2]
    assert http.get("/health").status_code == 401


def test_session_cookie_is_secure_over_https(site: Site) -> None:
    http = TestClient(create_app(site.col, token=TOKEN), base_url="https://testserver")
    r = http.post("/session", json={"token": TOKEN})
    assert r.status_code == 204
    assert "secure" in _cookie_attrs(r)[2]


def test_a_cross_site_form_cannot_sign_in(site: Site) -> None:
    http = TestClient(create_app(site.col, token=TOKEN), raise_server_exceptions=False)
    r = http.post("/session", json={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code in (401, 403) and "set-cookie" not in r.headers
    r = http.post("/session", data={"token": TOKEN})  # a plain HTML form's encoding
    assert r.status_code == 422 and "set-cookie" not in r.headers


# --- Host header ----------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "localhost.evil", "", "[::2]:8000", "127.0.0.2"])
def test_a_foreign_host_is_refused(site: Site, host: str) -> None:
    r = site.guarded.get("/", headers={"host": host})
    assert r.status_code == 400, (host, r.status_code)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Host" in detail


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:1", "LOCALHOST",
                                  "[::1]:8000", "[::1]"])
def test_loopback_hosts_are_answered(site: Site, host: str) -> None:
    assert site.guarded.get("/", headers={"host": host}).status_code == 200, host


def test_default_allowed_hosts_follow_the_bound_address() -> None:
    from retrieval.interfaces.http_guards import default_allowed_hosts

    for bound in ("127.0.0.1", "localhost", "::1"):
        assert set(default_allowed_hosts(bound)) == set(LOOPBACK), bound
    assert "127.0.0.5" in default_allowed_hosts("127.0.0.5")
    for public in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert default_allowed_hosts(public) is None, public


def test_allowed_hosts_option() -> None:
    from conftest import run_cli

    from retrieval.interfaces.http_guards import parse_hosts

    assert parse_hosts("example.org, 10.0.0.2,[::1]") == ["example.org", "10.0.0.2", "[::1]"]
    assert parse_hosts("*") is None and parse_hosts("a,*") is None
    out = run_cli("serve", "--help").stdout
    assert "--allowed-hosts" in out and "rebinding" in out
    bad = run_cli("serve", "--allowed-hosts", " , ", check=False)
    assert bad.returncode == 2 and "--allowed-hosts" in bad.stderr, bad.stderr


# --- the upload form: every bad field is a 4xx with one line --------------------------------------

def _one_line_4xx(r: Any) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    return detail


def test_upload_with_too_many_filters_is_4xx(site: Site) -> None:
    jpeg = (site.root / "plain.jpg").read_bytes()
    r = site.http.post("/search/upload", files={"image": ("q.jpg", jpeg)},
                       data={"filters": [f"width >= {i}" for i in range(33)]})
    assert "filters" in _one_line_4xx(r)
    ok = site.http.post("/search/upload", files={"image": ("q.jpg", jpeg)},
                        data={"filters": [f"width >= {i}" for i in range(32)]})
    assert ok.status_code in (200, 400), ok.text  # within the limit: the engine judges them


def _junk() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.integers(-2**70, 2**70).map(str),
                     st.sampled_from(["", "0", "1e3", "NaN", "-1", "10001", "texts", "null",
                                      "width >= 10", "exact,mmr:0.5", "x" * 1001,
                                      "x" * 200_000]))


def _or_junk(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly values the field accepts, so that one bad field is often the only one."""
    return st.one_of(valid, valid, valid, _junk())


def _repeated(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """A field given once, a few times, or about as many times as a limit allows (32)."""
    return st.one_of(st.lists(values, min_size=1, max_size=3),
                     st.lists(values, min_size=28, max_size=40))


FILTERS = st.sampled_from(["width >= 10", "height < 1000", "path ~ *.jpg", "date >= 2001",
                           "kind = image", "tag = cat", "meta.brand = zeta"])
# Each form field: given or not, with values mostly of its own kind; tags, hybrid and path are
# not fields of the upload form (ignored), but a client may send them.
FORM = st.fixed_dictionaries({}, optional={
    "k": _or_junk(st.integers(1, 30).map(str)).map(lambda v: [v]),
    "offset": _or_junk(st.integers(0, 5).map(str)).map(lambda v: [v]),
    "target": _or_junk(st.sampled_from(["image", "text", "images", "texts"])).map(
        lambda v: [v]),
    "text": _or_junk(st.text(max_size=60)).map(lambda v: [v]),
    "filters": _repeated(_or_junk(FILTERS)),
    "rerank": _or_junk(st.sampled_from(["exact", "mmr:0.5", "dedup:0.9", "exact,mmr:0.7"])
                       ).map(lambda v: [v]),
    "tags": _repeated(_junk()),
    "hybrid": st.lists(_junk(), min_size=1, max_size=2),
    "path": st.lists(_junk(), min_size=1, max_size=2),
})


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=FORM,
       image=st.sampled_from(["jpeg", "jpeg", "png", "empty", "junk", "none"]))
def test_upload_form_fuzz_never_5xx(site: Site, form: dict[str, list[str]], image: str) -> None:
    data = {"jpeg": (site.root / "plain.jpg").read_bytes(), "png": _png_with_script(),
            "empty": b"", "junk": b"\x00garbage"}
    files = {} if image == "none" else {"image": ("q", data[image])}
    r = site.http.post("/search/upload", data=form, files=files)
    assert r.status_code < 500, (form, image, r.status_code, r.text[:300])
    if r.status_code != 200:
        _one_line_4xx(r)
