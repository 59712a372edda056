"""The Python client (``retrieval.interfaces.client.Client``), its HTTP calls sent in-process
to the service.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_fixtures import RARE_CAPTION, TOKEN, Served, jpeg_size

from retrieval.errors import QueryError
from retrieval.interfaces.client import Client, ServiceError
from retrieval.interfaces.server import create_app


def _client(app: Any, token: str | None = None) -> Client:
    """A :class:`Client` whose HTTP calls go to ``app`` in-process."""
    client = Client("http://testserver", token=token)
    headers = dict(client._http.headers)
    client._http.close()
    client._http = TestClient(app, base_url="http://testserver", headers=headers,
                              raise_server_exceptions=False)
    return client


def test_client_in_process(served: Served) -> None:
    with _client(create_app(served.col)) as client:
        assert client.health()["status"] == "ok"
        assert client.info()["counts"] == {"image": 23, "text": 5}
        hits = client.search("a red circle", k=5)
        assert [h.id for h in hits] == [h.id for h in served.col.search("a red circle", k=5)]
        assert hits[0].kind == "image" and hits[0].path and isinstance(hits[0].score, float)
        by_path = client.search(image=served.file("img005.jpg"), k=2)
        assert by_path[0].id == served.ids["img005.jpg"]
        by_bytes = client.search(image=served.file("img005.jpg").read_bytes(), k=2)
        assert [h.id for h in by_bytes] == [h.id for h in by_path]
        like = client.search(like=served.ids["img009.jpg"], k=1)
        assert like[0].id == served.ids["img009.jpg"]
        texts = client.search("lamp", target="texts", filters=["brand = zeta"])
        assert [h.id for h in texts] == [served.texts["prod-lamp"]]
        hybrid = client.search("zq7731", hybrid=True, k=1)
        assert hybrid[0].id == served.ids["img000.jpg"]
        deduped = client.search(like=served.ids["img001.jpg"], k=2, rerank="dedup:0.99")
        assert deduped[0].metadata["duplicates"]
        _, vec = served.col._catalog.vectors([served.ids["img009.jpg"]], served.col.dim)
        assert client.search(vector=np.asarray(vec[0]), k=1)[0].id == served.ids["img009.jpg"]
        page2 = client.search("a red circle", k=2, offset=2)
        assert [h.id for h in page2] == [h.id for h in hits[2:4]]
        item = client.item(served.ids["img000.jpg"])
        assert item.text == RARE_CAPTION and item.score is None
        assert jpeg_size(client.thumbnail(served.ids["wide.jpg"], size=128)) == (128, 64)
        with pytest.raises(ServiceError) as err:
            client.item(987654)
        assert err.value.status == 404 and "987654" in str(err.value)
        with pytest.raises(ServiceError) as err:
            client.search("x", filters=["colour = red"])
        assert err.value.status == 400 and "colour" in str(err.value)
        with pytest.raises(ServiceError) as err:
            client.thumbnail(served.ids["link.jpg"])
        assert err.value.status == 403
        with pytest.raises(QueryError, match=r"missing\.jpg"):
            client.search(image=served.base / "missing.jpg")


def test_client_token(served: Served) -> None:
    app = create_app(served.col, token=TOKEN)
    with _client(app) as anonymous, _client(app, token="wrong") as wrong, \
            _client(app, token=TOKEN) as right:
        for client in (anonymous, wrong):
            with pytest.raises(ServiceError) as err:
                client.search("x")
            assert err.value.status == 401
            with pytest.raises(ServiceError):
                client.health()
        assert right.health()["status"] == "ok"
        assert len(right.search("x", k=3)) == 3
