"""The README's screenshots of the web page: ``docs/page.png`` (results) and ``docs/viewer.png``
(the viewer on the first result), 1280 x 800, of the demo collection (``retrieval demo``'s 300
images, with zero-shot tags and the demo captioner's captions) served in this process.

    .venv/bin/python tests/screenshots.py [--out docs]

Needs Chromium at /usr/bin/chromium and the playwright package (the browser tests' needs).
PNGs are reduced to 256 colours, which a page of flat colours and shapes keeps as it is.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from browser import ROOT, TIMEOUT_MS, chromium, thumbnails_loaded
from PIL import Image
from servers import free_port

SIZE = {"width": 1280, "height": 800}
QUERY = "?q=a+red+circle&cutoff=auto"
TAGS = ["circle", "square", "triangle", "star", "cross", "red", "blue", "green", "yellow",
        "orange", "purple"]


@contextmanager
def demo_server(base: Path) -> Iterator[str]:
    """The demo collection, tagged and captioned, served on a free port; yields its URL."""
    import uvicorn

    from retrieval.interfaces.server import create_app
    from retrieval.training.demo import prepare_demo

    col, _ = prepare_demo(base / "images", base / "collection")
    col.tag(TAGS)
    col.generate_captions("demo-captioner")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(col), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        col.close()


def save(page: Any, path: Path) -> None:
    page.screenshot(path=str(path))
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def take(url: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_context(viewport=SIZE).new_page()
        page.goto(url + "/" + QUERY, timeout=TIMEOUT_MS)
        page.wait_for_selector(".hit", timeout=TIMEOUT_MS)
        thumbnails_loaded(page, ".hit:nth-child(-n+18) img")
        page.wait_for_function("() => document.querySelector('#collection').textContent",
                               timeout=TIMEOUT_MS)
        save(page, out / "page.png")
        page.locator(".hit .open").first.click()
        page.wait_for_function("""() => {
            const img = document.querySelector('#viewer[open] .stage img');
            return img && img.complete && img.naturalWidth > 0;
        }""", timeout=TIMEOUT_MS)
        save(page, out / "viewer.png")
    return [out / "page.png", out / "viewer.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    # a short path for the viewer to show, not a random one
    base = Path(tempfile.gettempdir()) / "retrieval-screenshots"
    shutil.rmtree(base, ignore_errors=True)
    try:
        with demo_server(base) as url:
            for path in take(url, args.out):
                print(f"{path}: {path.stat().st_size / 1000:.0f} KB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
