"""The web page in a real headless Chromium (Playwright), against ``retrieval serve`` on a
collection of captioned synthetic images indexed with the shipped demo model.

What a user does: type the full caption of one image and press Enter, look at the result
cards, click "more like this", upload an image, page forward. Each step is checked both on the
page (cards, names, captions, thumbnails, pager buttons) and against the JSON the page received.
A full-page screenshot is left in ``artifacts/browser-search.png``. A second test types a
Chinese caption and a Chinese word (hybrid search) on a collection captioned in Chinese, and
checks that the characters are drawn (a font with CJK glyphs: ``artifacts/browser-search-zh.png``).
A third signs in to a server with a token: the page keeps no token where a script can read it
(an HttpOnly cookie set by ``POST /session``), its policy refuses inline script, and signing out
locks it again. Another searches videos: a card shows the shot's keyframe and time, and a click
(or Enter) plays the video in the viewer from the shot's start (``artifacts/browser-video.png``).
The viewer, the address, the layout and accessibility are tested in ``test_browser_page.py``.

Needs Chromium at /usr/bin/chromium (and for Chinese a CJK font, e.g. Debian's
fonts-wqy-microhei); without them the tests are skipped, unless
``RETRIEVAL_REQUIRE_BROWSER=1`` (CI), where it fails. ``RETRIEVAL_BROWSER_MODEL`` runs it with
another model than ``demo`` (for example a candidate demo model: ``local-dir:/path``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import (
    ARTIFACTS,
    MODEL,
    TIMEOUT_MS,
    chromium_page,
    require_browser,
    search_response,
    thumbnails_loaded,
)
from conftest import run_cli
from PIL import Image
from servers import ServerProcess

from retrieval.training.demo import DEMO_MODEL_DIR
from retrieval.training.synthetic import write_dataset

pytestmark = pytest.mark.slow

N_IMAGES = 60
PER_PAGE = 24  # the page's default "per page"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server on a demo-model collection; yields it and {file name: caption}."""
    require_browser()
    if MODEL == "demo" and not (DEMO_MODEL_DIR / "open_clip_config.json").exists():
        pytest.fail(f"the demo model is not in {DEMO_MODEL_DIR} (python -m retrieval.training.demo "
                    f"--out {DEMO_MODEL_DIR})")
    folder = tmp_path / "scenes"
    written = write_dataset(folder, N_IMAGES, seed=5, size=64)
    captions = {p.name: p.with_suffix(".txt").read_text().strip() for p, _ in written}
    assert all(captions.values())
    col = tmp_path / "col"
    out = run_cli("index", folder, "--model", MODEL, "--json", collection=col).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["added"], summary["failed"]) == (N_IMAGES, 0), summary
    srv = ServerProcess(col, tmp_path / "server.log")
    try:
        srv.wait_ready()
        yield srv, captions
    finally:
        srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


def _api_upload_page(srv: ServerProcess, image: Path, offset: int) -> list[int]:
    r = httpx.post(f"{srv.url}/search/upload", data={"k": str(PER_PAGE), "offset": str(offset)},
                   files={"image": (image.name, image.read_bytes(), "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def _unique(captions: dict[str, str]) -> list[str]:
    """The images (sorted) whose caption no other image shares."""
    counts = Counter(captions.values())
    return [n for n, c in sorted(captions.items()) if counts[c] == 1]


def _type_a_caption(page: Any, captions: dict[str, str], target: str) -> dict[str, Any]:
    """Step 1: type an exact caption and press Enter; the page's response (a screenshot is
    left in the artifacts)."""
    page.fill("input[name=q]", captions[target])
    text = search_response(page, lambda: page.press("input[name=q]", "Enter"))
    assert text["params"]["text"] == captions[target]
    assert text["params"]["k"] == PER_PAGE and text["params"]["offset"] == 0
    assert len(text["cards"]) == PER_PAGE
    names = [c["name"] for c in text["cards"]]
    assert target in names[:3], (captions[target], [
        (c["name"], c["caption"]) for c in text["cards"][:5]])
    card = text["cards"][names.index(target)]
    assert card["caption"] == captions[target]
    for c in text["cards"]:
        assert c["caption"] == captions[c["name"]]  # every card shows its own caption
    thumbnails_loaded(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-search.png"), full_page=True)
    return text


def _more_like_this(page: Any, first: dict[str, str]) -> None:
    """Step 2: "more like this" on the first card puts that image first."""
    like = search_response(page, lambda: page.locator(".hit .more").first.click())
    assert like["params"]["like"] == int(first["id"])
    assert like["cards"][0]["id"] == first["id"]
    assert like["cards"][0]["name"] == first["name"]
    assert float(like["cards"][0]["score"]) == pytest.approx(1.0, abs=2e-3)


def _upload(page: Any, captions: dict[str, str], path: Path) -> dict[str, Any]:
    """Step 3: upload an image: its own card comes first."""
    upload_name = path.name
    up = search_response(page, lambda: page.set_input_files("input[name=file]", str(path)))
    assert up["params"]["kind"] == "upload"
    assert up["cards"][0]["name"] == upload_name
    assert up["cards"][0]["caption"] == captions[upload_name]
    assert float(up["cards"][0]["score"]) == pytest.approx(1.0, abs=2e-3)
    thumbnails_loaded(page)
    return up


def _page_through(page: Any, srv: ServerProcess, up: dict[str, Any], path: Path) -> None:
    """Step 4: paging: a full page shows Next; Next moves the offset to the next page."""
    assert len(up["cards"]) == PER_PAGE
    assert page.is_visible("#next") and page.is_hidden("#prev")
    page1 = [c["id"] for c in up["cards"]]
    nxt = search_response(page, lambda: page.click("#next"))
    assert nxt["params"]["kind"] == "upload"
    page2 = [c["id"] for c in nxt["cards"]]
    assert page2[0] != page1[0]
    assert not set(page1) & set(page2)
    assert len(page2) == PER_PAGE
    assert page.is_visible("#prev")
    last = search_response(page, lambda: page.click("#next"))
    page3 = [c["id"] for c in last["cards"]]
    assert len(page3) == N_IMAGES - 2 * PER_PAGE  # the short last page
    assert page.is_hidden("#next") and page.is_visible("#prev")
    assert len(set(page1) | set(page2) | set(page3)) == N_IMAGES
    # the pages are the API's pages at offsets 0, 24 and 48 for the same upload
    for offset, shown in ((0, page1), (PER_PAGE, page2), (2 * PER_PAGE, page3)):
        assert _api_upload_page(srv, path, offset) == [int(i) for i in shown], offset
    back = search_response(page, lambda: page.click("#prev"))
    assert [c["id"] for c in back["cards"]] == page2
    thumbnails_loaded(page)


def _cut_off(page: Any, srv: ServerProcess, caption: str) -> None:
    """Step 5: with the cutoff on auto, the results end where the matches do: the status says
    how many there are in all (as the API does), and Next shows only when more are left."""
    page.select_option("#filters [name=cutoff]", "auto")
    page.fill("input[name=q]", caption)
    cut = search_response(page, lambda: page.press("input[name=q]", "Enter"))
    assert cut["params"]["cutoff"] == "auto" and "min_score" not in cut["params"]
    status = page.inner_text("#status")
    found = re.search(r"; (\d+) in all, down to similarity (-?\d\.\d{3})$", status)
    assert found, status
    api = httpx.post(f"{srv.url}/search", json={"text": caption, "k": PER_PAGE,
                                                "cutoff": "auto"}, timeout=60).json()
    assert int(found[1]) == api["total"]
    assert abs(float(found[2]) - api["threshold"]) <= 0.0005 + 1e-9
    assert page.is_hidden("#next") == (api["total"] <= PER_PAGE)
    page.select_option("#filters [name=cutoff]", "")


def test_search_page_in_chromium(server: tuple[ServerProcess, dict[str, str]],
                                 tmp_path: Path) -> None:
    srv, captions = server
    # an image whose full caption no other image shares, preferably one with two objects
    unique = _unique(captions)
    target = next((n for n in unique if " and " in captions[n]), unique[0])

    with chromium_page(srv.url + "/") as (page, problems):
        assert page.title() == "retrieval"
        assert page.locator(".hit").count() == 0
        assert page.is_hidden("#next") and page.is_hidden("#prev")
        text = _type_a_caption(page, captions, target)
        _more_like_this(page, text["cards"][0])
        path = tmp_path / "scenes" / sorted(captions)[17]
        up = _upload(page, captions, path)
        _page_through(page, srv, up, path)
        _cut_off(page, srv, captions[target])
        assert not problems, problems

    shot = ARTIFACTS / "browser-search.png"
    assert shot.exists() and shot.stat().st_size > 20_000, shot
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.width == 1280 and img.height >= 900


# --- Chinese: captions, a typed query, keyword and hybrid search ----------------------------------

@pytest.fixture
def zh_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str], list[str]]]:
    """A server on a collection of images with Chinese captions (their sidecar files) and
    Chinese texts; yields it, {file name: caption} and the texts."""
    from cjk_corpus import corpus

    require_browser()
    _require_cjk_font()
    folder = tmp_path / "scenes"
    written = write_dataset(folder, ZH_IMAGES, seed=11, size=64, languages=("zh", "en"))
    captions = {p.name: p.with_suffix(".txt").read_text(encoding="utf-8").strip()
                for p, _ in written}
    texts = [c.text for c in corpus(per_language=20) if c.lang == "zh"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    col = tmp_path / "col"
    run_cli("index", folder, "--model", MODEL, collection=col)
    run_cli("add-texts", tmp_path / "texts.txt", collection=col)
    srv = ServerProcess(col, tmp_path / "server.log")
    try:
        srv.wait_ready()
        yield srv, captions, texts
    finally:
        srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


ZH_IMAGES = 24
# Distinct Chinese, Japanese and Korean characters: with a font they draw distinct shapes,
# without one every character is the same empty box.
CJK_SAMPLE = "自行车猫の자전"


def _require_cjk_font() -> None:
    import subprocess

    found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    if not found.strip():
        problem = ("no font with Chinese characters for Chromium (apt-get install "
                   "fonts-wqy-microhei or fonts-noto-cjk)")
        if os.environ.get("RETRIEVAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{problem}, and RETRIEVAL_REQUIRE_BROWSER=1")
        pytest.skip(problem)


def _distinct_glyphs(page: Any, selector: str, chars: str) -> int:
    """How many different shapes the characters take when drawn in ``selector``'s font."""
    return int(page.evaluate("""([selector, chars]) => {
        const style = getComputedStyle(document.querySelector(selector));
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 48;
        const g = canvas.getContext("2d");
        g.font = `32px ${style.fontFamily}`;
        const shapes = new Set([...chars].map(ch => {
            g.clearRect(0, 0, 48, 48);
            g.fillText(ch, 4, 38);
            return Array.from(g.getImageData(0, 0, 48, 48).data).join(",");
        }));
        return shapes.size;
    }""", [selector, chars]))


def _text_cards(page: Any) -> list[dict[str, str]]:
    return list(page.eval_on_selector_all(".hit", """cards => cards.map(c => ({
        id: c.dataset.id, text: (c.querySelector('.text') || {}).textContent}))"""))


def test_chinese_search_in_chromium(zh_server: tuple[ServerProcess, dict[str, str], list[str]]
                                    ) -> None:
    srv, captions, texts = zh_server
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in c) for c in captions.values())
    target = _unique(captions)[0]
    word = "自行车"
    with_word = [t for t in texts if word in t]
    assert with_word and len(with_word) < len(texts)

    with chromium_page(srv.url + "/") as (page, problems):
        page.check("[name=hybrid]")

        # 1. type an image's Chinese caption: the image comes first, every card shows
        # its own caption in Chinese
        page.fill("input[name=q]", captions[target])
        found = search_response(page, lambda: page.press("input[name=q]", "Enter"))
        assert found["params"]["text"] == captions[target]
        assert found["params"]["hybrid"] is True
        names = [c["name"] for c in found["cards"]]
        assert target in names[:3], (captions[target], names[:5])
        for c in found["cards"]:
            assert c["caption"] == captions[c["name"]]
        # drawn as characters, not as empty boxes, in the font of the captions
        assert _distinct_glyphs(page, ".hit .meta .caption", CJK_SAMPLE) == len(CJK_SAMPLE)

        # 2. a Chinese word among the texts: keyword search finds it inside sentences
        page.select_option("[name=target]", "text")
        page.fill("input[name=q]", word)
        with page.expect_response(lambda r: r.url.endswith("/search"),
                                  timeout=TIMEOUT_MS) as info:
            page.press("input[name=q]", "Enter")
        hits = info.value.json()["hits"]
        assert json.loads(info.value.request.post_data)["text"] == word
        page.wait_for_function("n => document.querySelectorAll('.hit').length === n",
                               arg=len(hits), timeout=TIMEOUT_MS)
        cards = _text_cards(page)
        assert [c["text"] for c in cards] == [h["text"] for h in hits]
        assert word in cards[0]["text"], [c["text"] for c in cards[:5]]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-search-zh.png"), full_page=True)
        assert not problems, problems


# --- a server with a token: signing in -----------------------------------------------------------

TOKEN = "browser-s3cret"
TOKEN_IMAGES = 12


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server with a token (bound to 127.0.0.1, so it checks Host too) on a small
    demo-model collection; yields it and {file name: caption}."""
    require_browser()
    folder = tmp_path / "scenes"
    written = write_dataset(folder, TOKEN_IMAGES, seed=7, size=64)
    captions = {p.name: p.with_suffix(".txt").read_text().strip() for p, _ in written}
    col = tmp_path / "col"
    run_cli("index", folder, "--model", MODEL, collection=col)
    srv = ServerProcess(col, tmp_path / "server.log", env={"RETRIEVAL_TOKEN": TOKEN})
    try:
        srv.wait_ready()
        yield srv, captions
    finally:
        srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


INLINE_SCRIPT = """() => {
    const s = document.createElement("script");
    s.textContent = "window.__inline = 1";
    document.body.appendChild(s);
    return window.__inline === undefined;
}"""


def test_token_sign_in_in_chromium(token_server: tuple[ServerProcess, dict[str, str]]) -> None:
    srv, captions = token_server
    target = _unique(captions)[0]
    # Chromium logs every 401 answer, and the inline script refused below, as console errors
    expected = ("401", "Content Security Policy")
    with chromium_page(srv.url + "/", expected) as (page, problems):
        page.wait_for_selector("#login", state="visible", timeout=TIMEOUT_MS)
        assert page.is_hidden("#logout")
        # a search before signing in: refused, and the page says why
        page.fill("input[name=q]", captions[target])
        page.press("input[name=q]", "Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent"
                               ".includes('access token')", timeout=TIMEOUT_MS)
        # a wrong token: still signed out, nothing kept
        page.fill("#login [name=token]", "wrong")
        page.press("#login [name=token]", "Enter")
        page.wait_for_function("() => document.querySelector('#status').textContent"
                               ".includes('wrong token')", timeout=TIMEOUT_MS)
        assert page.is_visible("#login") and page.context.cookies() == []
        # the right token: the search typed before runs, thumbnails load with the cookie
        page.fill("#login [name=token]", TOKEN)
        found = search_response(page, lambda: page.press("#login [name=token]", "Enter"))
        assert target in [c["name"] for c in found["cards"]][:3]
        thumbnails_loaded(page)
        assert page.is_hidden("#login") and page.is_visible("#logout")
        assert page.input_value("#login [name=token]") == ""
        # the token is nowhere a script can read it: an HttpOnly, SameSite=Strict cookie
        cookies = page.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("retrieval-session", True, "Strict")], cookies
        assert TOKEN not in cookies[0]["value"]
        assert page.evaluate("() => document.cookie") == ""
        assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
        assert TOKEN not in page.content()
        # the page's policy refuses a script injected inline
        assert page.evaluate(INLINE_SCRIPT) is True
        # signing out: the cookie is gone and the server asks again
        page.click("#logout")
        page.wait_for_selector("#login", state="visible", timeout=TIMEOUT_MS)
        assert page.context.cookies() == []
        assert not problems, problems


# --- text recognised in images: keyword-only search, shown and marked ----------------------------

OCR_TEXTS = {"receipt.png": "HOTEL LINDNER\nINVOICE 4711 Total 120.00",
             "sign.png": "紧急出口请勿堵塞"}


@pytest.fixture
def ocr_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a few images, two with recognised text written as an OCR run writes it."""
    from conftest import make_image

    from retrieval import Collection
    from retrieval.items import RECOGNISED
    from retrieval.media import hash_text
    from retrieval.storage.records import TextRecord

    require_browser()
    folder = tmp_path / "pics"
    for n, name in enumerate([*OCR_TEXTS, "hotel-lobby.png", "plain.png"]):
        make_image(folder / name, seed=n)
    col = tmp_path / "col"
    run_cli("index", folder, "--model", MODEL, collection=col)
    with Collection(col) as c:
        ids = {Path(it.path).name: i for i, it in c._catalog.get_items(
            c._catalog.vector_ids("image").tolist()).items()}
        vectors = c._binding.encoder.embed_texts(list(OCR_TEXTS.values()))
        c._catalog.write_derived(RECOGNISED, [
            TextRecord(text=t, vector=v, content_hash=hash_text(t), source=RECOGNISED,
                       parent_id=ids[name]) for (name, t), v in zip(
                OCR_TEXTS.items(), vectors, strict=True)])
    srv = ServerProcess(col, tmp_path / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


def _ocr_cards(page: Any) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all(".hit", """cards => cards.map(c => ({
        name: c.querySelector('.meta .name').textContent,
        ocr: c.querySelector('.meta .ocr').textContent,
        marked: [...c.querySelectorAll('.meta .ocr mark')].map(m => m.textContent)}))"""))


def test_recognised_text_in_chromium(ocr_server: ServerProcess) -> None:
    """'keywords only' sends keywords (and not hybrid); a card shows the text recognised in its
    image and marks the matched words with <mark>, in English and in Chinese."""
    with chromium_page(ocr_server.url + "/") as (page, problems):
        page.check("[name=hybrid]")
        page.check("[name=keywords]")
        assert not page.is_checked("[name=hybrid]")  # one ranking at a time
        for word, name, marked in (("lindner", "receipt.png", ["LINDNER"]),
                                   ("出口", "sign.png", ["出口"])):
            page.fill("input[name=q]", word)
            found = search_response(page, lambda: page.press("input[name=q]", "Enter"))
            assert found["params"]["keywords"] is True and found["params"]["hybrid"] is False
            cards = _ocr_cards(page)
            assert [c["name"] for c in cards] == [name]
            text = " ".join(OCR_TEXTS[name].split())
            assert cards[0]["ocr"] == f"text in image: {text}"
            assert cards[0]["marked"] == marked
            assert "ranked by keywords" in page.inner_text("#status")
        # an image found by its name shows its recognised text unmarked, if it has any
        page.fill("input[name=q]", "hotel")
        search_response(page, lambda: page.press("input[name=q]", "Enter"))
        by_name = {c["name"]: c for c in _ocr_cards(page)}
        assert set(by_name) == {"receipt.png", "hotel-lobby.png"}
        assert by_name["receipt.png"]["marked"] == ["HOTEL"]
        assert by_name["hotel-lobby.png"]["ocr"] == ""
        assert not problems, problems


# --- videos: keyframes with the shot's time, played from the shot's start -----------------------

VIDEO_FPS = 12


@pytest.fixture
def video_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, dict[str, list[float]]]]:
    """A server on two generated videos (VP9 in WebM, which every Chromium plays, and H.264 in
    MP4) and an image, indexed with the demo model; yields it and {video: its clips' starts}."""
    from videos import (
        BLUE_SQUARE,
        GREEN_STAR,
        PURPLE_TRIANGLE,
        RED_CIRCLE,
        YELLOW_CROSS,
        Clip,
        write_video,
    )

    from retrieval.training.synthetic import render

    require_browser()
    folder = tmp_path / "media"
    folder.mkdir()
    clips = {"holiday.webm": [Clip(RED_CIRCLE, 2.0), Clip(BLUE_SQUARE, 2.0),
                              Clip(GREEN_STAR, 2.0)],
             "garden.mp4": [Clip(YELLOW_CROSS, 2.0), Clip(PURPLE_TRIANGLE, 2.0)]}
    starts = {name: [0.0, *write_video(folder / name, c, fps=VIDEO_FPS, size=(160, 120))]
              for name, c in clips.items()}
    render(RED_CIRCLE, 64).save(folder / "circle.png")
    col = tmp_path / "col"
    run_cli("index", folder, "--model", MODEL, collection=col)
    srv = ServerProcess(col, tmp_path / "server.log")
    try:
        srv.wait_ready()
        yield srv, starts
    finally:
        srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


def _video_cards(page: Any) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all(".hit", """cards => cards.map(c => ({
        id: c.dataset.id,
        name: c.querySelector('.meta .name').textContent,
        time: (c.querySelector('.open .time') || {}).textContent,
        thumb: (c.querySelector('.open img') || {}).src}))"""))


def _played_from(page: Any, start: float) -> dict[str, Any]:
    """Wait for the viewer's player to have played a stretch; where it started, its source
    and state."""
    page.wait_for_selector("#viewer[open] video", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#viewer video').played.length > 0",
                           timeout=TIMEOUT_MS)
    state = dict(page.evaluate("""() => {
        const v = document.querySelector('#viewer video');
        const facts = [...document.querySelectorAll('#viewer .facts dt')];
        const moment = facts.find(dt => dt.textContent === 'Moment');
        return {src: v.currentSrc, from: v.played.start(0), now: v.currentTime,
                title: document.querySelector('#viewer-title').textContent,
                moment: moment && moment.nextElementSibling.textContent};
    }"""))
    assert state["from"] == pytest.approx(start, abs=0.25), state
    assert state["now"] >= start - 0.05, state
    return state


def test_videos_in_chromium(video_server: tuple[ServerProcess, dict[str, list[float]]]) -> None:
    srv, starts = video_server
    with chromium_page(srv.url + "/") as (page, problems):
        assert page.is_hidden("#segments")
        page.select_option("[name=target]", "video")
        assert page.is_visible("#segments")
        # 1. a blue square: the holiday video's second shot, from 2 s to 4 s
        page.fill("input[name=q]", "a blue square")
        found = search_response(page, lambda: page.press("input[name=q]", "Enter"))
        assert found["params"]["target"] == "video" and found["params"]["segments"] is False
        hits, cards = found["hits"], _video_cards(page)
        assert [c["name"] for c in cards] == ["holiday.webm", "garden.mp4"]
        best = hits[0]
        assert best["kind"] == "video" and best["start"] == pytest.approx(starts[
            "holiday.webm"][1], abs=1 / VIDEO_FPS)
        assert cards[0]["time"] == "00:02\u201300:04", cards
        thumbnails_loaded(page)
        # 2. a click plays it in the player, from the shot's start, served by /items/{id}/video
        page.locator(".hit .open").first.click()
        state = _played_from(page, best["start"])
        assert state["src"] == f"{srv.url}/items/{best['id']}/video#t={best['start']:g}", state
        assert state["title"] == "holiday.webm"
        assert state["moment"] == "00:02\u201300:04 of 00:06", state
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-video.png"))
        page.keyboard.press("Escape")  # closes the viewer and lets go of the file
        page.wait_for_function("() => !document.querySelector('#viewer').open && "
                               "document.querySelector('#viewer video').src === ''",
                               timeout=TIMEOUT_MS)
        # 3. every shot: the garden's second shot, played with the keyboard
        page.check("[name=segments]")
        page.fill("input[name=q]", "a purple triangle")
        every = search_response(page, lambda: page.press("input[name=q]", "Enter"))
        assert every["params"]["segments"] is True
        shots = [h for h in every["hits"] if h["path"].endswith("garden.mp4")]
        assert len(every["hits"]) > 2 and len(shots) == 2
        first = every["hits"][0]
        assert first["path"].endswith("garden.mp4") and first["start"] == pytest.approx(
            starts["garden.mp4"][1], abs=1 / VIDEO_FPS)
        page.locator(".hit .open").first.focus()
        page.keyboard.press("Enter")
        _played_from(page, first["start"])
        # the viewer lists the video's moments among the results; another one plays from there
        moments = page.eval_on_selector_all("#viewer .moments button", """buttons =>
            buttons.map(b => [b.textContent, b.getAttribute('aria-pressed')])""")
        garden = [h for h in every["hits"] if h["video"] == first["video"]]
        assert [m[0] for m in moments] == [
            f"00:{int(h['start'] + 0.001):02d}\u201300:{int(h['end'] + 0.001):02d}"
            for h in garden], moments
        assert [m[1] for m in moments] == ["true"] + ["false"] * (len(garden) - 1)
        page.locator("#viewer .moments button").nth(1).click()
        _played_from(page, garden[1]["start"])
        page.click("#viewer .close")
        page.wait_for_selector("#viewer", state="hidden", timeout=TIMEOUT_MS)
        assert not problems, problems
