"""The HTTP service's guards: plain ASGI middlewares that run before any routing or body parsing.

From the outside in: :class:`SecurityHeaders` (every response says ``nosniff``, sends no
referrer and may not be framed), :class:`HostCheck` (a ``Host`` outside the allowed names gets a
400: a page on another site that rebinds its DNS name to 127.0.0.1 reaches the server under its
own name, never under ``localhost``), :class:`BodyLimit` (413) and :class:`BearerAuth` (401).
Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per
request.

The web page authenticates with a cookie instead of a header: ``POST /session`` checks the token
typed into the page and sets :data:`SESSION_COOKIE`, HttpOnly (no script of the origin can read
it), ``SameSite=Strict`` and ``Path=/`` (``Secure`` over https). Its value is an HMAC of the token,
not the token. A cookie is taken only from requests the browser marks as made by the server's
own pages (``Sec-Fetch-Site``), so a page on another port of the same host cannot ride on it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse

SESSION_COOKIE = "retrieval-session"
# Every response unless it sets its own: nothing may run in it, frame it or learn where it came
# from. The page, the files and the API documentation set their own policies.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' blob: data:; media-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
FILE_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
# FastAPI's documentation pages load Swagger UI and ReDoc from a CDN with inline script.
DOCS_CSP = "frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# Sec-Fetch-Site values of requests a cookie is taken from: the server's own pages, or the
# user typing the address. Browsers that do not send the header (old ones) are trusted to
# honour SameSite=Strict.
OWN_REQUESTS = frozenset({b"", b"same-origin", b"none"})


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: derived from it, never the token itself."""
    return hmac.new(token.encode(), b"retrieval web session v1", hashlib.sha256).hexdigest()


def session_cookie(token: str, https: bool) -> str:
    """A ``Set-Cookie`` value signing the page in."""
    secure = "; Secure" if https else ""
    return f"{SESSION_COOKIE}={session_value(token)}; HttpOnly; SameSite=Strict; Path=/{secure}"


def expired_cookie(https: bool) -> str:
    """A ``Set-Cookie`` value signing the page out."""
    secure = "; Secure" if https else ""
    return f"{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def own_request(headers: dict[bytes, bytes]) -> bool:
    """Whether the browser says the request comes from the server's own pages (or none)."""
    return headers.get(b"sec-fetch-site", b"").lower() in OWN_REQUESTS


def cookie_of(headers: dict[bytes, bytes], name: str = SESSION_COOKIE) -> bytes:
    """A cookie's value from the request's Cookie header, or b""."""
    for part in headers.get(b"cookie", b"").split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value.strip()
    return b""


def default_allowed_hosts(bound: str) -> list[str] | None:
    """The Host names to accept when bound to ``bound``: the loopback names (and the address
    itself) for a loopback address; None, any Host, for any other address."""
    name = bound.strip("[]").lower()
    if name == "localhost":
        return list(LOOPBACK_NAMES)
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    own = f"[{name}]" if address.version == 6 else name
    return list(dict.fromkeys([*LOOPBACK_NAMES, own]))


def parse_hosts(value: str) -> list[str] | None:
    """``--allowed-hosts`` as a list of names; None for ``*`` (any Host)."""
    names = [h.strip() for h in value.split(",") if h.strip()]
    return None if "*" in names else names


def _host_name(host: bytes) -> str:
    """The name in a Host header, without the port (an IPv6 address keeps its brackets)."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[:text.find("]") + 1] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


async def _refuse(scope: Any, receive: Any, send: Any, status: int, detail: str,
                  headers: dict[str, str] | None = None) -> None:
    await JSONResponse({"detail": detail}, status, headers=headers)(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` and a Content-Security-Policy (unless the
    response sets its own) on every HTTP response, the middlewares' own refusals included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else DEFAULT_CSP

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = {**SECURITY_HEADERS, "Content-Security-Policy": csp}
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()
                            if k.lower().encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class HostCheck:
    """ASGI middleware: a request whose Host is not one of ``allowed`` (names, any port) gets a
    400 before anything else is read."""

    def __init__(self, app: Any, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(_host_name(h.encode()) for h in allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"")
            if _host_name(host) not in self.allowed:
                shown = host.decode("latin-1")[:100].encode("unicode_escape").decode()
                await _refuse(scope, receive, send, 400,
                              f"Host {shown!r} is not one this server answers to "
                              "(retrieval serve --allowed-hosts)")
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """ASGI middleware: every HTTP request but those for ``public`` paths needs the bearer
    token, or the page's session cookie on a request from the server's own pages."""

    def __init__(self, app: Any, token: str, public: Iterable[str] = ()) -> None:
        self.app, self.public = app, frozenset(public)
        self.expected = f"Bearer {token}".encode()
        self.session = session_value(token).encode()

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        if hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            return True
        cookie = cookie_of(headers)
        return bool(cookie) and own_request(headers) and hmac.compare_digest(cookie,
                                                                             self.session)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public and not self.allows(
                dict(scope["headers"])):
            await _refuse(scope, receive, send, 401, "missing or wrong bearer token",
                          {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 before it is read whole
    (by its Content-Length when given, else by counting as it streams in)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        refused = False

        async def counted() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # answer now; the app sees the client leave
                refused = True
                await self._refuse(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def quiet(message: Any) -> None:
            if not refused:  # after a 413 the app's own answer goes nowhere
                await send(message)

        await self.app(scope, counted, quiet)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        detail = f"the request body is larger than the limit of {size_text(self.max_bytes)}"
        await _refuse(scope, receive, send, 413, detail, {"Connection": "close"})


def size_text(n: int) -> str:
    """A byte count for a message: "20 MB", "512 KB", "100 bytes"."""
    for unit, scale in (("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
