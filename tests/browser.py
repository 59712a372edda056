"""What the browser tests share: Chromium (Playwright), a page opened on a server, waiting for a
search the page runs and for the cards it shows, and axe-core.

Chromium is Debian's at /usr/bin/chromium; without it (or without the playwright package) the
tests are skipped, unless ``RETRIEVAL_REQUIRE_BROWSER=1`` (CI), where they fail. axe-core is
npm's ``axe-core`` package: ``$RETRIEVAL_AXE_JS`` names its ``axe.min.js``, else it is looked for
where ``npm install --prefix .cache/npm axe-core@4`` puts it in the repository (CI installs it
so); without it the accessibility test is skipped, with CI's variable it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MODEL = os.environ.get("RETRIEVAL_BROWSER_MODEL", "demo")
ARTIFACTS = ROOT / "artifacts"
TIMEOUT_MS = 20_000
AXE_JS = ROOT / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"


def _missing(problem: str) -> None:
    if os.environ.get("RETRIEVAL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{problem}, and RETRIEVAL_REQUIRE_BROWSER=1")
    pytest.skip(problem)


def require_browser() -> None:
    """Skip (or, in CI, fail) where there is no Chromium or no playwright package."""
    if not os.path.exists(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")


def axe_source() -> str:
    """axe-core's script (skips, or in CI fails, where it is not installed)."""
    path = Path(os.environ.get("RETRIEVAL_AXE_JS") or AXE_JS)
    if not path.is_file():
        _missing(f"no axe-core at {path} (npm install --prefix .cache/npm axe-core@4, or set "
                 "RETRIEVAL_AXE_JS to its axe.min.js)")
    return path.read_text(encoding="utf-8")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch_problems(page: Any, expected: tuple[str, ...] = ()) -> list[str]:
    """The list the page's errors and console errors are written to (the favicon's, and those
    containing one of ``expected``, aside)."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "favicon" not in (msg.location or {}).get("url", "")
            and not any(e in msg.text for e in expected) else None)
    return problems


@contextlib.contextmanager
def chromium_page(url: str, expected: tuple[str, ...] = (), **context: Any
                  ) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page opened at ``url`` (1280 x 900 unless ``context`` says
    otherwise: Playwright's new_context options), and the list its problems are written to
    (:func:`watch_problems`)."""
    with chromium() as browser:
        ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context})
        page = ctx.new_page()
        problems = watch_problems(page, expected)
        page.goto(url, timeout=TIMEOUT_MS)
        yield page, problems


def cards(page: Any) -> list[dict[str, str]]:
    return list(page.eval_on_selector_all(".hit", """cards => cards.map(c => ({
        id: c.dataset.id,
        name: c.querySelector('.meta .name').textContent,
        caption: c.querySelector('.meta .caption').textContent,
        score: c.querySelector('.meta .score').textContent}))"""))


def is_search(r: Any) -> bool:
    return r.request.method == "POST" and r.url.split("?")[0].endswith(
        ("/search", "/search/upload"))


def search_response(page: Any, action: Callable[[], None]) -> dict[str, Any]:
    """Run ``action``, wait for the search it triggers and for the grid to show its hits;
    returns the request's parameters and the JSON the page received."""
    with page.expect_response(is_search, timeout=TIMEOUT_MS) as info:
        action()
    response = info.value
    assert response.status == 200, (response.status, response.text())
    data = response.json()
    hits = data["hits"]
    assert hits, "the search came back empty"
    page.wait_for_function(
        """([n, first]) => {
            const cards = document.querySelectorAll('.hit');
            return cards.length === n && cards[0].dataset.id === String(first);
        }""", arg=[len(hits), hits[0]["id"]], timeout=TIMEOUT_MS)
    request = response.request
    if request.url.endswith("/search/upload"):
        params = {"kind": "upload"}  # Chromium does not report multipart bodies with files
    else:
        params = {"kind": "json", **json.loads(request.post_data)}
    shown = cards(page)
    assert [int(c["id"]) for c in shown] == [h["id"] for h in hits]
    assert [c["name"] for c in shown] == [Path(h["path"]).name for h in hits]
    assert [c["caption"] for c in shown] == [h["text"] or "" for h in hits]
    status = page.inner_text("#status")
    assert status.startswith(f"{len(hits)} results in "), status
    return {"params": params, "hits": hits, "cards": shown, "data": data}


def thumbnails_loaded(page: Any, selector: str = ".hit img") -> None:
    """Wait for the thumbnails ``selector`` finds to be loaded, from the thumbnail route."""
    page.wait_for_function(
        """selector => [...document.querySelectorAll(selector)].every(
            img => img.currentSrc.includes('/thumbnail?size=') && img.complete &&
                   img.naturalWidth > 0)""", arg=selector, timeout=TIMEOUT_MS)
