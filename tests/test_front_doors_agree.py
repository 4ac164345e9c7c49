"""The web service and the Cloud Function give the same status and body for the same request.

The web service takes singles at /predict and batches at /predict/batch; the function takes both at its
URL and tells them apart by the ``instances`` key. Both call the same request pipeline, so every case here,
hostile ones included, gets byte-for-byte the same JSON from both, and no answer is over 64 KB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi.testclient import TestClient

from irisserve.web.app import create_app
from irisserve.core.settings import Settings
from support import ALLOWED_ORIGIN, SEED_EXAMPLE, VIRGINICA, RunningServer, function_env, with_value
from test_function import function_app

JSON = {"content-type": "application/json"}


def raw(template: str) -> bytes:
    return template.encode()


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# name -> (is_batch, body bytes)
CASES: dict[str, tuple[bool, bytes]] = {
    "seed example": (False, encode(SEED_EXAMPLE)),
    "virginica": (False, encode(VIRGINICA)),
    "out of range": (False, encode(with_value("petal_width", 30.0))),
    "integers": (False, encode({"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 1})),
    "batch": (True, encode({"instances": [SEED_EXAMPLE, VIRGINICA, with_value("sepal_length", 9.5)]})),
    "missing field": (False, encode({k: v for k, v in SEED_EXAMPLE.items() if k != "petal_width"})),
    "all fields missing": (False, encode({})),
    "string number": (False, encode(with_value("sepal_length", "5.1"))),
    "boolean": (False, encode(with_value("sepal_width", True))),
    "null": (False, encode(with_value("petal_length", None))),
    "negative": (False, encode(with_value("petal_length", -1.4))),
    "zero": (False, encode(with_value("petal_width", 0))),
    "larger than float32": (False, encode(with_value("sepal_length", 1e39))),
    "NaN": (False, raw('{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}')),
    "Infinity": (False, raw('{"sepal_length": 5.1, "sepal_width": Infinity, "petal_length": 1.4, "petal_width": 0.2}')),
    "-Infinity": (False, raw('{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": -Infinity, "petal_width": 0.2}')),
    "extra field": (False, encode({**SEED_EXAMPLE, "color": "blue"})),
    "several errors": (False, encode({"sepal_length": "x", "sepal_width": -1, "petal_length": None, "size": 3})),
    "array instead of object": (False, raw("[5.1, 3.5, 1.4, 0.2]")),
    "string instead of object": (False, raw('"setosa"')),
    "null body": (False, raw("null")),
    "empty batch": (True, encode({"instances": []})),
    "instances not a list": (True, encode({"instances": SEED_EXAMPLE})),
    "bad row in a batch": (True, encode({"instances": [SEED_EXAMPLE, with_value("sepal_width", -3.0)]})),
    "row not an object": (True, encode({"instances": [SEED_EXAMPLE, [6.7, 3.0, 5.2, 2.3]]})),
    "extra key beside instances": (True, encode({"instances": [SEED_EXAMPLE], "model": "other"})),
    "too many rows": (True, encode({"instances": [SEED_EXAMPLE] * 1001})),
    "body over the size limit": (True, b'{"instances": [' + b" " * 1_048_576 + b"]}"),
    "empty body": (False, b""),
    "not JSON": (False, b"not json"),
    "truncated JSON": (False, b'{"sepal_length": 5.1'),
    "not UTF-8": (False, b'{"sepal_length": "\xff\xfe"}'),
    # Hostile bodies: each must be refused cheaply, with a short answer that says what to fix.
    "80,000 unknown keys": (False, encode({str(i): 0 for i in range(80_000)})),
    "1,500 invalid rows": (True, encode({"instances": [{"x": "y"}] * 1500})),
    "1 MB string value": (False, encode({"x": "a" * 1_000_000})),
    "JSON nested 5,000 deep": (False, b'{"sepal_length": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "number with 5,000 digits": (False, b'{"sepal_length": ' + b"1" * 5000 + b"}"),
    "batch rows of 1,000 keys each": (True, encode({"instances": [{str(i): 0 for i in range(1000)}] * 50})),
}
MAX_ANSWER_BYTES = 64 * 1024


class FrontDoors(NamedTuple):
    web: httpx.Client
    function: httpx.Client


@pytest.fixture(scope="module", params=["live processes", "in process"])
def doors(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[FrontDoors]:
    """uvicorn and functions-framework over HTTP; or FastAPI's TestClient and functions-framework's Flask app."""
    if request.param == "live processes":
        web_server: RunningServer = request.getfixturevalue("live_server")
        function_server: RunningServer = request.getfixturevalue("live_function")
        with httpx.Client(base_url=web_server.base_url, timeout=30) as web, \
                httpx.Client(base_url=function_server.base_url, timeout=30) as fn:
            yield FrontDoors(web, fn)
        return
    with TestClient(create_app(Settings(model_dir=model_dir, cors_origins=[ALLOWED_ORIGIN]))) as web, function_app(function_env(model_dir)) as fn:
        yield FrontDoors(web, fn)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_same_status_and_body(doors: FrontDoors, case: str) -> None:
    is_batch, body = CASES[case]
    web = doors.web.post("/predict/batch" if is_batch else "/predict", content=body, headers=JSON)
    function = doors.function.post("/", content=body, headers=JSON)
    assert web.headers["content-type"] == function.headers["content-type"] == "application/json"
    assert function.status_code == web.status_code
    assert function.content == web.content
    assert len(web.content) <= MAX_ANSWER_BYTES
    if web.status_code >= 400:
        assert web.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_read_whatever_its_content_type(doors: FrontDoors, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    web = doors.web.post("/predict", content=encode(SEED_EXAMPLE), headers=headers)
    function = doors.function.post("/", content=encode(SEED_EXAMPLE), headers=headers)
    assert web.status_code == function.status_code == 200
    assert web.json() == function.json()


def test_cors_is_the_same_on_both_doors(doors: FrontDoors) -> None:
    """The live fixtures and the in-process apps allow ALLOWED_ORIGIN (support.function_env)."""
    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
    answers = [doors.web.options("/predict", headers=preflight), doors.function.options("/", headers=preflight)]
    for answer in answers:
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "POST" in answer.headers["access-control-allow-methods"]
    web = doors.web.post("/predict", json=SEED_EXAMPLE, headers={"Origin": ALLOWED_ORIGIN})
    function = doors.function.post("/", json=SEED_EXAMPLE, headers={"Origin": ALLOWED_ORIGIN})
    assert web.headers["access-control-allow-origin"] == function.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    other = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in doors.web.post("/predict", json=SEED_EXAMPLE, headers=other).headers
    assert "access-control-allow-origin" not in doors.function.post("/", json=SEED_EXAMPLE, headers=other).headers


def test_get_is_the_web_services_health_plus_model_info(doors: FrontDoors) -> None:
    health, info = doors.web.get("/health").json(), doors.web.get("/model/info").json()
    function = doors.function.get("/").json()
    assert {k: function[k] for k in ("status", "model_loaded", "model_version")} == {
        k: health[k] for k in ("status", "model_loaded", "model_version")
    }
    assert function["model"] == info
