"""The bucket map's WSGI app: Flower's credentials, and a failed read said, not raised."""

from __future__ import annotations

import base64
import json
from typing import Any

from allot.metrics.bucket_map import authorized, credentials, map_app

DATA = {"epoch": 2, "at": "now", "nodes": [], "buckets": [], "cycles": []}


def call(app: Any, path: str, auth: str | None = None) -> tuple[str, bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    seen: list[str] = []
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], body


def test_flower_credentials_are_read_as_flower_reads_them() -> None:
    assert credentials("a:1, b:2:x ,bad,:nouser") == [("a", "1"), ("b", "2:x")]
    assert credentials(None) == []


def test_only_the_listed_credentials_open_the_page() -> None:
    app = map_app(lambda: DATA, "operator:s3cret,viewer:pw")
    assert call(app, "/map")[0].startswith("401")
    assert call(app, "/map", "operator:wrong")[0].startswith("401")
    status, page = call(app, "/map", "viewer:pw")
    assert status.startswith("200")
    assert b"bucket map" in page
    status, body = call(app, "/map.json", "operator:s3cret")
    assert status.startswith("200")
    assert json.loads(body) == DATA
    assert not authorized("Basic !!!not-base64", [("a", "b")])


def test_a_worker_without_credentials_refuses_the_page() -> None:
    status, body = call(map_app(lambda: DATA, None), "/map", "any:thing")
    assert status.startswith("403")
    assert b"FLOWER_BASIC_AUTH" in body


def test_a_failed_read_answers_503_with_the_reason() -> None:
    def read() -> dict[str, Any]:
        raise RuntimeError("ZooKeeper is not connected")

    status, body = call(map_app(read, "u:p"), "/map.json", "u:p")
    assert status.startswith("503")
    assert json.loads(body) == {"error": "ZooKeeper is not connected"}
