"""A small Python client for the HTTP service (``retrieval serve``).

    from retrieval import Client
    client = Client("http://127.0.0.1:8000", token=None)
    for hit in client.search("a red bicycle", k=5):
        print(hit.score, hit.path)
    client.search(image="query.jpg", filters=["width >= 800"])
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import QueryError, ServiceError
from ..search import Hit, Term
from ..search.hits import Hits


class Client:
    """Search a remote collection; hits come back as :class:`retrieval.Hit`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 60.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=timeout)

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        res = self._http.request(method, url, **kw)
        if res.status_code >= 400:
            try:
                detail = res.json().get("detail", res.text)
            except ValueError:
                detail = res.text
            raise ServiceError(res.status_code, str(detail))
        return res

    def search(self, text: str | None = None, *,
               image: str | os.PathLike[str] | bytes | None = None, like: int | None = None,
               vector: Sequence[float] | None = None,
               terms: Sequence[Term | Mapping[str, Any]] = (), target: str = "image",
               segments: bool = False, k: int = 10, offset: int = 0, path: str | None = None,
               after: str | None = None, before: str | None = None, tags: Sequence[str] = (),
               filters: Sequence[str] = (), keywords: bool = False, hybrid: bool = False,
               keyword_weight: float | None = None, rerank: str | None = None,
               min_score: float | None = None, cutoff: str | None = None) -> Hits:
        """The same search as :meth:`retrieval.Collection.search`, over HTTP. ``image`` (a
        file or its bytes) and the images of :class:`~retrieval.Term` terms are sent
        base64-encoded; ``terms`` given as mappings go as they are (the JSON body's form).
        With ``min_score`` or ``cutoff`` the hits carry ``total`` and ``threshold``."""
        body: dict[str, Any] = {
            "text": text, "image": None if image is None else _base64(image), "like": like,
            "vector": None if vector is None else [float(x) for x in vector],
            "terms": [_term(t) for t in terms], "target": target, "segments": segments, "k": k,
            "offset": offset, "path": path, "after": after, "before": before, "tags": list(tags),
            "filters": list(filters), "keywords": keywords, "hybrid": hybrid,
            "keyword_weight": keyword_weight, "rerank": rerank, "min_score": min_score,
            "cutoff": cutoff}
        res = self._call("POST", "/search",
                         json={key: value for key, value in body.items() if value is not None})
        data = res.json()
        return Hits((Hit(**h) for h in data["hits"]), total=data.get("total"),
                    threshold=data.get("threshold"), notice=data.get("notice"))

    def item(self, item_id: int) -> Hit:
        return Hit(**self._call("GET", f"/items/{item_id}").json())

    def thumbnail(self, item_id: int, size: int = 256) -> bytes:
        return bytes(self._call("GET", f"/items/{item_id}/thumbnail",
                                params={"size": size}).content)

    def info(self) -> dict[str, Any]:
        return dict(self._call("GET", "/info").json())

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/health").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _term(term: Term | Mapping[str, Any]) -> Any:
    """A term as the JSON body takes it."""
    if not isinstance(term, Term):
        return dict(term)
    value = term.value
    if term.kind == "image":
        value = _base64(value)
    elif term.kind == "vector":
        value = [float(x) for x in value]
    return {"kind": term.kind, "value": value, "weight": term.weight}


def _base64(image: str | os.PathLike[str] | bytes) -> str:
    data = image if isinstance(image, bytes) else _read(image)
    return base64.b64encode(data).decode()


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise QueryError(f"query image {path}: {exc.strerror or exc}") from None
