"""The HTTP service: a FastAPI app over one :class:`~retrieval.Collection`.

The model and the indexes are loaded once per process. Searches run on a pool of long-lived
engine threads, one per core by default (``search_threads``), each encoding on one core, so
throughput grows with concurrent clients up to the cores; an index catching up with the catalog
waits for the searches in flight and they for it. Searches never block on an index run writing
to the same collection: the catalog is read in WAL mode and indexes catch up from the change
log in memory.

Security: the server binds to 127.0.0.1 unless told otherwise, and can refuse a ``Host`` it
does not answer to (DNS rebinding); an optional bearer token protects every endpoint but the
page, which signs in with an HttpOnly cookie (:mod:`.http_guards`); files are served only by
item id, only while the item's file lies under a folder the collection indexed and is still the
file that was indexed, and only as the image or video type their content decodes as
(:mod:`retrieval.search.files`, :mod:`.item_files`), in a sandbox; every response says
``nosniff``; the page runs no inline script; uploads are bounded in bytes and pixels; every bad
request gets a 4xx with a one-line message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
)

from ..collection import Collection, Hit
from ..errors import (
    CollectionError,
    FileOutsideError,
    ItemNotFoundError,
    ModelError,
    ModelNotFoundError,
    QueryError,
    RetrievalError,
    SearchInterrupted,
)
from ..pathnames import shown
from ..search.builder import build_query
from ..search.fields import FIELDS, QueryField
from ..search.query import Term
from .http_guards import (
    DEFAULT_CSP,
    SECURITY_HEADERS,
    BearerAuth,
    BodyLimit,
    HostCheck,
    SecurityHeaders,
    size_text,
)
from .item_files import ItemId, file_routes
from .page import PUBLIC_PATHS, page_routes
from .uploads import UploadStore, upload_routes

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 50_000_000
SEARCH_TIMEOUT = 10.0  # seconds a search may take, queueing for an engine thread included
WATCHER_GRACE = 10.0  # seconds a stopping service waits for its watcher's batch in flight
# A hit's fields that only a video's hit has.
VIDEO_FIELDS = ("video", "start", "end")


class TermIn(BaseModel):
    """A weighted query term."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["text", "image", "like", "vector"]
    value: Any = Field(description="text; base64 image bytes; a stored item's id; or a list of "
                                   "floats")
    weight: float = 1.0


def _request_model(name: str, doc: str, fields: Sequence[QueryField],
                   extra: Literal["forbid", "ignore"]) -> type[BaseModel]:
    """A request model of these query fields: JSON types, defaults, descriptions and bounds
    from the declaration (:mod:`retrieval.search.fields`); terms are :class:`TermIn`."""
    spec: dict[str, Any] = {}
    for f in fields:
        kw: dict[str, Any] = {"description": f.description}
        if f.max_length is not None:
            kw["max_length"] = f.max_length
        if f.example is not None:
            kw["examples"] = [f.example]
        default = {"default_factory": list} if f.repeatable else {"default": f.default}
        spec[f.name] = (list[TermIn] if f.name == "terms" else f.json, Field(**default, **kw))
    return create_model(name, __config__=ConfigDict(extra=extra), __doc__=doc, **spec)


if TYPE_CHECKING:
    from ..ingest.watch import Watcher

    SearchIn: TypeAlias = BaseModel
    SearchForm: TypeAlias = BaseModel
else:
    SearchIn = _request_model(
        "SearchIn", "A search request; at least one of text, image, like, vector or terms. "
        "Values are checked by the engine's query builder, the same rules as for the command "
        "line and the Python API (a 400 with a one-line ``detail`` when one is broken).",
        FIELDS, extra="forbid")
    # The upload form: the fields with ``form`` (its file is the image; vector and terms have
    # no form spelling). Unknown form fields are ignored, an empty one is the field's default.
    SearchForm = _request_model(
        "SearchForm", "The fields of an upload search besides its image file.",
        [f for f in FIELDS if f.form], extra="ignore")


class HitOut(BaseModel):
    id: int = Field(description="The item's id; a video hit's is its shot's.")
    score: float | None
    kind: str = Field(description="image, text or video.")
    path: str | None = Field(description="An image's or a video's file; a caption's image's.")
    text: str | None = Field(description="A text hit's text; an image's sidecar caption.")
    metadata: dict[str, Any] = Field(description=(
        "What else is known: an image's width, height, taken_at, camera and size; "
        "generated_caption and ocr_text (the text recognised in the image), tags; a text's "
        "source (texts, caption, generated, ocr) and caption_of (its image's id). A search's "
        "hits add score_kind (similarity, fused, keywords or reranked), scores (the parts), "
        "and match: {source, text, words}, the text that made the hit match (source caption, "
        "generated, ocr, text or name) and the query words found in it. A video's: its "
        "duration, codec, container, fps, rotation and has_audio."))
    video: int | None = Field(None, description=(
        "Video hits only (kind video): the video item's id; the hit's id is the shot's (a "
        "video looked up by its own id: the same id). Its file is /items/{id}/video."))
    start: float | None = Field(None, description="Video hits only: where the shot starts, in "
                                "seconds from the video's start (0 for a whole video).")
    end: float | None = Field(None, description="Video hits only: where the shot ends, in "
                              "seconds (a whole video's duration).")

    # No return annotation: pydantic would take the response schema from it, not the fields.
    @model_serializer(mode="wrap")
    def _video_fields_on_video_hits(  # type: ignore[no-untyped-def]
            self, handler: SerializerFunctionWrapHandler):
        """An image's or a text's hit keeps the fields it always had (as ``Hit.to_dict``)."""
        out: dict[str, Any] = handler(self)
        if self.kind != "video":
            for name in VIDEO_FIELDS:
                out.pop(name, None)
        return out


class SearchOut(BaseModel):
    hits: list[HitOut]
    took_ms: float
    total: int | None = Field(None, description="With min_score or cutoff: how many results "
                              "the cut kept, every page together (counted up to 20,000).")
    threshold: float | None = Field(None, description="With min_score or cutoff: the lowest "
                                    "score kept.")
    notice: str | None = Field(None, description="A line for whoever asked: a query in a "
                               "script the collection's model was not trained for, and which "
                               "multilingual model to use.")


class ErrorOut(BaseModel):
    """Every error: one line for a person, and for a 422 the first problems in detail."""

    detail: str
    errors: list[dict[str, Any]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": what} for status, what in (
        (400, "a search the engine cannot run as given, or a Host the server does not answer"),
        (401, "missing or wrong bearer token (when the service has one)"),
        (403, "the item's file is outside the indexed folders"),
        (404, "no such item, or its file is gone"),
        (409, "the item's file changed since it was indexed, or the collection is busy"),
        (413, "the request body is over the limit"),
        (422, "the request does not match the schema"),
        (503, "the model's weights are missing on the server, the search ran past the "
              "service's deadline, or the service is stopping"))}


def _hit_out(h: Hit) -> HitOut:
    return HitOut(**h.to_dict())


class _Service:
    """The collection behind the app, its engine threads and the service's upload limits."""

    def __init__(self, collection: Collection, max_upload_bytes: int, max_pixels: int,
                 threads: int, timeout: float | None, watcher: Watcher | None = None) -> None:
        self.collection = collection
        self.watcher = watcher
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.engine = ThreadPoolExecutor(threads, thread_name_prefix="retrieval-engine")
        self.timeout = timeout
        self.inflight: set[threading.Event] = set()  # cancel flags of the searches running
        if threads > 1:
            # Concurrent searches each encode on one core: more searches per second from
            # several clients than with every core per encoding, for a little more time per
            # search alone (benchmarks/serve_load.py).
            collection.set_search_threads(1)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        if self.watcher is not None:
            self.watcher.start()  # indexes on its own thread: searches never wait for it
        yield
        self.stop_searches()
        if self.watcher is not None:
            self.watcher.stop()  # a batch in flight stops at its next progress report
            await asyncio.to_thread(self.watcher.join, WATCHER_GRACE)
        self.engine.shutdown(wait=True, cancel_futures=True)

    def stop_searches(self) -> None:
        """Cancel every search in flight: each ends at its next check (the service is
        stopping)."""
        for cancel in list(self.inflight):
            cancel.set()

    async def on_engine(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.engine, fn, *args)

    async def bounded_search(self, request: Request, fields: dict[str, Any],
                             upload: bytes | None = None) -> SearchOut:
        """A search on an engine thread, within the service's deadline (time spent waiting
        for a thread counts); a client that goes away, or the server stopping, cancels it."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        cancel = threading.Event()
        self.inflight.add(cancel)
        watcher = asyncio.ensure_future(_until_disconnected(request, cancel))
        try:
            return await self.on_engine(self.search, fields, upload, deadline, cancel)
        finally:
            cancel.set()  # finished, abandoned or interrupted: no engine work goes on for it
            watcher.cancel()
            self.inflight.discard(cancel)

    def search(self, fields: dict[str, Any], upload: bytes | None = None,
               deadline: float | None = None, cancel: threading.Event | None = None
               ) -> SearchOut:
        """A search from a request's query fields (of a JSON body or an upload form, images
        in base64) and an uploaded file; each image is decoded once, by the search, within
        the service's pixel limit."""
        fields = dict(fields)
        terms = [self._image(_b64(t["value"]), t["weight"]) if t["kind"] == "image" else t
                 for t in fields.pop("terms", ())]
        image = fields.pop("image", None)
        for data in (upload, _b64(image) if image is not None else None):
            if data is not None:
                terms.append(self._image(data))
        query = build_query(terms=terms, **fields)
        for term in query.terms:  # the service's own limit on uploaded bytes
            if term.kind == "image" and len(term.value) > self.max_upload_bytes:
                raise QueryError("uploaded image is larger than the limit of "
                                 f"{size_text(self.max_upload_bytes)}")
        start = time.perf_counter()
        hits = self.collection.run(query, deadline=deadline, cancel=cancel)
        return SearchOut(hits=[_hit_out(h) for h in hits],
                         took_ms=round((time.perf_counter() - start) * 1000, 2),
                         total=hits.total, threshold=hits.threshold, notice=hits.notice)

    def _image(self, data: bytes, weight: Any = 1.0) -> Term:
        """An uploaded image as a term, decoded (by the search) within the service's limit."""
        return Term("image", data, weight, max_pixels=self.max_pixels)


def create_app(collection: Collection, *, token: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_UPLOAD_PIXELS, search_threads: int | None = None,
               max_body_bytes: int | None = None,
               allowed_hosts: Sequence[str] | None = None,
               search_timeout: float | None = SEARCH_TIMEOUT,
               watcher: Watcher | None = None) -> FastAPI:
    """The ASGI app serving ``collection``; ``token`` enables bearer authentication.

    ``search_threads`` searches run at once (default: one per core); ``max_body_bytes`` bounds
    every request body (default: room for the largest upload, base64-encoded in JSON);
    ``allowed_hosts`` are the ``Host`` names answered, any port (default: any Host;
    ``retrieval serve`` passes the loopback names when bound to a loopback address);
    ``search_timeout`` seconds a search may take before it is stopped with a 503 (None: no
    limit); ``watcher`` (:class:`~retrieval.ingest.watch.Watcher`) keeps folders indexed
    while the app runs, its state in ``/info``."""
    from ..encoders.runtime import cpu_threads

    service = _Service(collection, max_upload_bytes, max_pixels,
                       search_threads or cpu_threads(), search_timeout, watcher)
    body_limit = max_body_bytes or (max_upload_bytes * 4 // 3 + (1 << 20))
    app = FastAPI(title="retrieval", version=_version(), lifespan=service.lifespan,
                  summary="Search images by text, by image, and texts by image.",
                  responses=ERRORS)
    # The last added runs first: headers on everything, then Host, body size, token.
    if token is not None:
        app.add_middleware(BearerAuth, token=token, public=PUBLIC_PATHS)
    app.add_middleware(BodyLimit, max_bytes=body_limit)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(RetrievalError, _library_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal)
    app.state.stop_searches = service.stop_searches  # for a server's signal handler
    _search_routes(app, service)
    _item_routes(app, service)
    upload_routes(app, UploadStore(), max_upload_bytes, max_pixels)  # the page's image queries
    page_routes(app, token)
    return app


def _library_error(_req: Request, exc: RetrievalError) -> JSONResponse:
    if isinstance(exc, SearchInterrupted):  # past the deadline, or the service is stopping
        return JSONResponse({"detail": shown(str(exc))}, 503, headers={"Retry-After": "1"})
    status = 404 if isinstance(exc, ItemNotFoundError) else 400
    if isinstance(exc, FileOutsideError):
        status = 403
    if isinstance(exc, ModelError) and not isinstance(exc, ModelNotFoundError):
        status = 503  # weights missing on the server: not the client's fault
    elif isinstance(exc, CollectionError):
        status = 409
    return JSONResponse({"detail": shown(str(exc))}, status_code=status)


def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return JSONResponse({"detail": "the request body is not valid JSON"}, 422)
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "invalid request")
    return JSONResponse({"detail": f"{where}: {msg}" if where else msg,
                         "errors": _safe_errors(exc)}, status_code=422)


def _internal(_req: Request, _exc: Exception) -> JSONResponse:
    # Starlette answers an unexpected exception outside every middleware: the headers here.
    return JSONResponse({"detail": "internal server error"}, 500, headers={
        **SECURITY_HEADERS, "Content-Security-Policy": DEFAULT_CSP})


def _search_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness: the collection is open."""
        return {"status": "ok", "collection": str(service.collection.path)}

    @app.get("/info", tags=["service"])
    async def info() -> dict[str, Any]:
        """Model, counts, indexes and disk use of the collection; with a watcher, its state
        under ``watch``."""
        info = await service.on_engine(service.collection.info)
        if service.watcher is not None:
            info["watch"] = service.watcher.state()
        return info

    @app.post("/search", response_model=SearchOut, tags=["search"])
    async def search(body: SearchIn, request: Request) -> Response:
        """Search by text, base64 image, stored item, raw vector or weighted terms, with
        filters, hybrid keyword fusion and a re-ranking pipeline."""
        return _json(await service.bounded_search(request, body.model_dump()))

    @app.post("/search/upload", response_model=SearchOut, tags=["search"])
    async def search_upload(
        request: Request,
        image: Annotated[UploadFile, File(description="an image file")],
        form: Annotated[SearchForm, Form()],
    ) -> Response:
        """Search with an uploaded image file (multipart form), optionally plus text, with the
        fields of a JSON search but vector and terms."""
        fields = {name: [v for v in value if v] if isinstance(value, list) else value
                  for name, value in form.model_dump().items()}  # empty list entries left out
        data = await image.read(service.max_upload_bytes + 1)
        return _json(await service.bounded_search(request, fields, data))


def _item_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/items/{item_id}", response_model=HitOut, tags=["items"])
    def item(item_id: ItemId) -> HitOut:
        """An item's metadata."""
        return _hit_out(service.collection.get(item_id))

    file_routes(app, service.collection)


async def _until_disconnected(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client goes away. The request's body has been read whole by
    then, so the next message the server sends up is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


def _json(out: BaseModel) -> Response:
    """An already validated model as a JSON response: FastAPI would validate it again."""
    return Response(out.model_dump_json(), media_type="application/json")


def _version() -> str:
    from .. import __version__

    return __version__


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors()[:10]:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))})
    return out


def _b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise QueryError("an image is sent as a base64 string")
    try:
        return base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text,
                                validate=True)
    except (binascii.Error, ValueError):
        raise QueryError("image is not valid base64") from None


__all__ = ["create_app"]
