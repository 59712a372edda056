"""The web page: its files (``/``, ``/app.css``, ``/app.js`` and the modules it imports) and its
sign-in (``/session``).

The page holds no data and runs no inline script (its Content-Security-Policy allows scripts
from the server only). On a server with a token, the page sends the token the user types to
``POST /session`` once; the answer is an HttpOnly cookie (:mod:`.http_guards`) that the page's
requests carry from then on, so no script of the origin ever holds the token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route

from .http_guards import (
    PAGE_CSP,
    BearerAuth,
    expired_cookie,
    own_request,
    session_cookie,
    token_matches,
)

WEB = Path(__file__).parent / "web"
# The page and its files: path -> (file, media type). Served without the token.
# The script is a few ES modules (app.js imports the others), no build step.
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
             "/app.css": ("app.css", "text/css; charset=utf-8"),
             **{f"/{name}": (name, "text/javascript; charset=utf-8")
                for name in ("app.js", "util.js", "results.js", "viewer.js", "info.js")}}
# Served without the token: the page and its files, and signing in and out.
PUBLIC_PATHS = frozenset({*WEB_FILES, "/session"})


class SessionIn(BaseModel):
    """The token typed into the page."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=4096)


class SessionOut(BaseModel):
    token_required: bool
    signed_in: bool = Field(description="whether this request would be let in")


def page_routes(app: FastAPI, token: str | None) -> None:
    """The page's routes on ``app``: its files, and signing in and out with ``token``."""

    def web_file(request: Request) -> Response:
        # The page and its files are public (they hold no data); the page signs in when needed.
        name, media_type = WEB_FILES[request.url.path]
        headers = {"Cache-Control": "no-cache"}
        if name == "index.html":
            headers["Content-Security-Policy"] = PAGE_CSP
        return Response((WEB / name).read_bytes(), media_type=media_type, headers=headers)

    for path in WEB_FILES:
        app.add_api_route(path, web_file, methods=["GET"], include_in_schema=False)

    guard = BearerAuth(None, token) if token is not None else None

    @app.get("/session", response_model=SessionOut, tags=["service"])
    def session(request: Request) -> SessionOut:
        """Whether the service needs a token, and whether this request carries it."""
        return SessionOut(token_required=guard is not None, signed_in=guard is None or
                          guard.allows(dict(request.scope["headers"])))

    @app.post("/session", status_code=204, tags=["service"])
    def sign_in(body: SessionIn, request: Request) -> Response:
        """Check the token typed into the page and sign the page in: an HttpOnly, SameSite=Strict
        cookie the page's requests carry instead of the token."""
        if token is None:
            raise HTTPException(400, "this server needs no token")
        if not own_request(dict(request.scope["headers"])):
            raise HTTPException(403, "sign in from the server's own page")
        if not token_matches(body.token, token):
            raise HTTPException(401, "wrong token")
        https = request.url.scheme == "https"
        return Response(status_code=204, headers={"Set-Cookie": session_cookie(token, https)})

    @app.delete("/session", status_code=204, tags=["service"])
    def sign_out(request: Request) -> Response:
        """Sign the page out (forget its cookie)."""
        return Response(status_code=204,
                        headers={"Set-Cookie": expired_cookie(request.url.scheme == "https")})

    # Starlette's 405 names only the methods of the first route of a path: this last route,
    # an ASGI app and so taking any method, names them all.
    app.router.routes.append(Route("/session", _NotAllowed("DELETE, GET, POST"),
                                   include_in_schema=False))


class _NotAllowed:
    """ASGI app: a 405 naming the methods ``allow``."""

    def __init__(self, allow: str) -> None:
        self.allow = allow

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({"detail": "Method Not Allowed"}, 405,
                           headers={"Allow": self.allow})(scope, receive, send)

__all__ = ["PUBLIC_PATHS", "page_routes"]
