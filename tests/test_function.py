"""The Cloud Function front door: cloud_function/main.py in functions-framework, in process and as a real process."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import functions_framework
import httpx
import pytest
from starlette.testclient import TestClient

from irisserve.function import handler as function
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import model_info_body
from irisserve.core.settings import get_settings
from support import (
    ALLOWED_ORIGIN,
    FUNCTION_SOURCE,
    INVALID_SINGLE,
    SEED_ANSWER,
    SEED_EXAMPLE,
    VIRGINICA,
    RunningServer,
    free_port,
    function_command,
    function_env,
    run_server,
    with_value,
)

@contextlib.contextmanager
def function_app(env: Mapping[str, str]) -> Iterator[httpx.Client]:
    """cloud_function/main.py in functions-framework's ASGI app, in this process, with ``env`` as its settings.

    The model cache and the settings cache start empty and everything (environment included) is restored
    afterwards: functions-framework's create_app writes FUNCTION_TARGET into os.environ."""
    saved_env = dict(os.environ)
    saved_predictor = function._REGISTRY
    os.environ.update(env)
    get_settings.cache_clear()
    function._REGISTRY = None
    try:
        app = functions_framework.create_app(target="predict", source=str(FUNCTION_SOURCE))
        with TestClient(app, base_url="http://function.test") as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        get_settings.cache_clear()
        function._REGISTRY = saved_predictor


@pytest.fixture(scope="module", params=["in-process", "functions-framework"])
def client(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[httpx.Client]:
    """The same tests through Flask in process and through the real functions-framework process."""
    if request.param == "in-process":
        with function_app(function_env(model_dir)) as in_process:
            yield in_process
        return
    server: RunningServer = request.getfixturevalue("live_function")
    with httpx.Client(base_url=server.base_url, timeout=10) as live:
        yield live



def assert_json_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "x-google-status" not in response.headers  # functions-framework's crash marker
    return response.json()["detail"]


def test_get_reports_health_startup_marks_and_model(client: httpx.Client, model_dir: Path) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("status", "model_loaded", "model_version", "load_mode")} == {
        "status": "healthy", "model_loaded": True, "model_version": "1.0.0", "load_mode": "lazy",
    }
    assert {"imports_done", "first_request", "model_loaded", "warmed_up", "ready"} <= set(body["startup"])
    expected = Predictor(model_dir)
    expected.load()
    assert body["model"] == json.loads(json.dumps(model_info_body(expected)))


def test_head_answers_like_get_without_a_body(client: httpx.Client) -> None:
    response = client.head("/")
    assert response.status_code == 200 and response.content == b""


def test_post_seed_example_on_any_path(client: httpx.Client) -> None:
    for path in ("/", "/predict"):
        response = client.post(path, json=SEED_EXAMPLE)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == SEED_ANSWER
    assert response.headers["server-timing"].startswith("parse;dur=")


def test_post_virginica(client: httpx.Client) -> None:
    body = client.post("/", json=VIRGINICA).json()
    assert body["prediction"] == "virginica" and body["prediction_id"] == 2
    assert body["confidence"] == body["probabilities"]["virginica"] > 0.5


def test_integers_are_numbers_too(client: httpx.Client) -> None:
    response = client.post("/", json={"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 1})
    assert response.status_code == 200


def test_out_of_range_input_is_predicted_and_flagged(client: httpx.Client) -> None:
    body = client.post("/", json=with_value("petal_width", 30.0)).json()
    assert body["out_of_range_features"] == ["petal_width"]




@pytest.mark.parametrize("case", INVALID_SINGLE, ids=list(INVALID_SINGLE))
def test_invalid_input_gets_fastapi_shaped_422(client: httpx.Client, case: str) -> None:
    payload, field, error_type = INVALID_SINGLE[case]
    detail = assert_json_error(client.post("/", json=payload), 422)
    assert any(e["loc"] == ["body", field] and e["type"] == error_type and e["msg"] for e in detail), detail


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_get_422(client: httpx.Client, literal: str) -> None:
    body = '{"sepal_length": %s, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}' % literal
    (error,) = assert_json_error(client.post("/", content=body, headers={"content-type": "application/json"}), 422)
    assert error["loc"] == ["body", "sepal_length"] and error["type"] == "finite_number"
    assert isinstance(error["input"], str) and not math.isfinite(float(error["input"]))


@pytest.mark.parametrize(("body", "error_type"), [("", "missing"), ("not json", "json_invalid"), ('{"sepal_length": 5.1', "json_invalid")])
def test_a_body_that_is_not_json_gets_fastapis_422(client: httpx.Client, body: str, error_type: str) -> None:
    (error,) = assert_json_error(client.post("/", content=body.encode()), 422)
    assert error["type"] == error_type and error["loc"][0] == "body"


def test_a_body_that_is_not_utf8_gets_400_saying_so(client: httpx.Client) -> None:
    assert "not UTF-8" in assert_json_error(client.post("/", content=b'{"sepal_length": "\xff\xfe"}'), 400)


@pytest.mark.parametrize("body", ["[1, 2, 3, 4]", '"text"', "null"])
def test_json_that_is_not_an_object_gets_422(client: httpx.Client, body: str) -> None:
    detail = assert_json_error(client.post("/", content=body, headers={"content-type": "application/json"}), 422)
    assert detail[0]["loc"] == ["body"] and detail[0]["msg"]


def test_batch_predicts_every_row_in_order(client: httpx.Client) -> None:
    response = client.post("/", json={"instances": [SEED_EXAMPLE, VIRGINICA]})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1.0.0"
    assert [p["prediction"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert body["predictions"][0] == SEED_ANSWER


def test_batch_names_the_index_of_an_invalid_row(client: httpx.Client) -> None:
    rows = [SEED_EXAMPLE, SEED_EXAMPLE, with_value("sepal_width", -3.0)]
    detail = assert_json_error(client.post("/", json={"instances": rows}), 422)
    assert detail[0]["loc"] == ["body", "instances", 2, "sepal_width"]


def test_empty_batch_and_empty_object(client: httpx.Client) -> None:
    assert assert_json_error(client.post("/", json={"instances": []}), 422)[0]["type"] == "too_short"
    assert assert_json_error(client.post("/", json={"instances": "many"}), 422)[0]["type"] == "list_type"
    # Without "instances" an object is one flower: {} lacks all four measurements.
    missing = assert_json_error(client.post("/", json={}), 422)
    assert sorted(e["loc"][1] for e in missing) == sorted(SEED_EXAMPLE)


def test_batch_over_the_limit_says_the_limit(client: httpx.Client) -> None:
    detail = assert_json_error(client.post("/", json={"instances": [SEED_EXAMPLE] * 1001}), 413)
    assert "1001 instances; the limit is 1000" in detail


def test_batch_at_the_limit_is_accepted(client: httpx.Client) -> None:
    response = client.post("/", json={"instances": [SEED_EXAMPLE] * 1000})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_with_allow(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/", json=SEED_EXAMPLE)
    assert method in assert_json_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, POST, OPTIONS"


def test_oversized_body_gets_413_before_parsing(client: httpx.Client) -> None:
    limit = get_settings().max_body_bytes
    body = b'{"instances": [' + b" " * limit + b"]}"
    detail = assert_json_error(client.post("/", content=body, headers={"content-type": "application/json"}), 413)
    assert f"is {len(body)} bytes; the limit is {limit} bytes" in detail and "IRISSERVE_MAX_BODY_BYTES" in detail
    assert client.post("/", json=SEED_EXAMPLE).status_code == 200  # the connection and the process carry on


def test_cors_preflight_for_an_allowed_origin(client: httpx.Client) -> None:
    response = client.options("/", headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204 and response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Content-Type" in response.headers["access-control-allow-headers"]
    assert int(response.headers["access-control-max-age"]) > 0
    assert response.headers["vary"] == "Origin"


def test_cors_preflight_for_another_origin_grants_nothing(client: httpx.Client) -> None:
    response = client.options("/", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert not any(name.startswith("access-control-") for name in response.headers)


def test_cors_header_on_answers_and_errors_for_an_allowed_origin(client: httpx.Client) -> None:
    headers = {"Origin": ALLOWED_ORIGIN}
    assert client.post("/", json=SEED_EXAMPLE, headers=headers).headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    bad = client.post("/", json={}, headers=headers)
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in client.post("/", json=SEED_EXAMPLE).headers


def test_cors_any_origin(model_dir: Path) -> None:
    with function_app(function_env(model_dir, IRISSERVE_CORS_ORIGINS='["*"]')) as client:
        response = client.options("/", headers={"Origin": "https://anyone.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "vary" not in response.headers


def test_chunked_oversized_body_gets_413(model_dir: Path, tmp_path: Path) -> None:
    """No Content-Length: the function counts what it reads and stops past the limit (real server only)."""
    port = free_port()
    env = function_env(model_dir, IRISSERVE_MAX_BODY_BYTES="4096")
    with run_server(function_command(port), port=port, log_path=tmp_path / "log", env=env, ready_path="/") as server:
        chunks = iter([b'{"instances": [', b" " * 8192, b"]}"])
        response = httpx.post(server.base_url, content=chunks, headers={"content-type": "application/json"})
        assert "is larger than that; the limit is 4096 bytes" in assert_json_error(response, 413)
        small = iter([json.dumps(SEED_EXAMPLE).encode()])
        assert httpx.post(server.base_url, content=small).json() == SEED_ANSWER


def test_import_mode_loads_before_the_first_request(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = function_env(model_dir, IRISSERVE_FUNCTION_LOAD="import")
    with run_server(function_command(port), port=port, log_path=tmp_path / "log", env=env, ready_path="/") as server:
        body = httpx.get(server.base_url).json()
    marks = body["startup"]
    assert body["load_mode"] == "import"
    assert marks["imports_done"] <= marks["model_loaded"] <= marks["ready"] <= marks["first_request"]


@pytest.mark.parametrize("mode", ["lazy", "import"])
def test_worker_stops_cleanly_after_serving(model_dir: Path, tmp_path: Path, mode: str) -> None:
    """With the model loaded before gunicorn forks (import mode), the worker must still exit at SIGTERM
    instead of hanging in ONNX Runtime's teardown until gunicorn aborts it."""
    port = free_port()
    env = function_env(model_dir, IRISSERVE_FUNCTION_LOAD=mode)
    with run_server(function_command(port), port=port, log_path=tmp_path / "log", env=env, ready_path="/") as server:
        for _ in range(3):
            assert httpx.post(server.base_url, json=SEED_EXAMPLE).json() == SEED_ANSWER
        started = time.monotonic()
        server.process.terminate()  # the master only, as a container runtime signals its PID 1
        assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    log = server.log()
    assert "SIGABRT" not in log and "terminate called" not in log and "Traceback" not in log


def test_lazy_mode_loads_on_the_first_request(live_function: RunningServer) -> None:
    """The readiness probe's GET was this process's first request: it loaded the model."""
    marks = httpx.get(live_function.base_url).json()["startup"]
    assert marks["imports_done"] <= marks["first_request"] <= marks["model_loaded"] <= marks["ready"]


@pytest.mark.parametrize("mode, loaded", [("lazy", False), ("import", True)])
def test_load_setting_decides_whether_import_loads_the_model(model_dir: Path, mode: str, loaded: bool) -> None:
    script = "from irisserve.function import handler as function; print(function._REGISTRY is not None)"
    env = {**os.environ, "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_FUNCTION_LOAD": mode}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(loaded)


def test_missing_artifact_gives_503_with_the_reason(tmp_path: Path) -> None:
    with function_app(function_env(tmp_path / "nowhere")) as client:
        health = client.get("/")
        assert health.status_code == 503
        body = health.json()
        assert body["model_loaded"] is False and body["model_version"] is None
        assert body["status"].startswith("unavailable:") and "manifest.json is missing" in body["status"]
        assert "manifest.json is missing" in assert_json_error(client.post("/", json=SEED_EXAMPLE), 503)
        # The request's shape is the model's: without it, any body gets the same 503.
        assert client.post("/", json={}).status_code == 503


def test_tampered_artifact_gives_503_naming_the_file(artifact_copy: Path) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"not the model")
    with function_app(function_env(artifact_copy)) as client:
        detail = assert_json_error(client.post("/", json=SEED_EXAMPLE), 503)
    assert "model.onnx" in detail and "integrity check" in detail


def test_unexpected_error_is_a_json_500_not_a_crash_page(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Predictor, matrix: Any, **options: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Predictor, "predict", explode)
    with function_app(function_env(model_dir)) as client:
        detail = assert_json_error(client.post("/", json=SEED_EXAMPLE), 500)
    assert detail == function.INTERNAL_ERROR and "boom" not in detail


def test_concurrent_first_requests_load_the_model_once(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []
    original = Predictor.load

    def counting_load(self: Predictor) -> bool:
        loads.append(1)
        return original(self)

    monkeypatch.setattr(Predictor, "load", counting_load)
    monkeypatch.setattr(function, "_REGISTRY", None)
    monkeypatch.setattr(function, "get_settings", lambda: get_settings().model_copy(update={"model_dir": model_dir}))
    barrier = threading.Barrier(8)
    results: list[object] = []

    def first_request() -> None:
        barrier.wait(timeout=30)
        results.append(function.load_model())

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8 and len({id(p) for p in results}) == 1
    assert loads == [1]


def test_import_mode_with_a_broken_artifact_refuses_to_start(tmp_path: Path) -> None:
    """Loading at import fails the start, so a broken deploy is refused instead of serving 503s."""
    env = {**os.environ, **function_env(tmp_path / "nowhere", IRISSERVE_FUNCTION_LOAD="import")}
    result = subprocess.run(function_command(free_port()), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "manifest.json is missing" in result.stderr


def test_the_server_hands_requests_straight_to_the_function_app(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TunedApplication` serves functions-framework's app through ``direct_requests``: main.py's function is marked
    ``answered_by`` its ASGI app, so each request goes to that app without the framework's per-request wrapper, with
    the same answers, the framework's own 404s and 405s included; with LOG_EXECUTION_ID on, the framework's app as is."""
    from irisserve.function.server import DirectRequests, direct_requests

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/", {"json": SEED_EXAMPLE}),
        ("POST", "/any/path", {"json": {"instances": [SEED_EXAMPLE, VIRGINICA]}}),
        ("POST", "/", {"json": INVALID_SINGLE}),
        ("POST", "/", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("PUT", "/", {}),
        ("GET", "/robots.txt", {}),
        ("HEAD", "/favicon.ico", {}),
        ("POST", "/robots.txt", {"json": SEED_EXAMPLE}),
        ("TRACE", "/", {}),
        ("OPTIONS", "/", {"headers": {"origin": ALLOWED_ORIGIN, "access-control-request-method": "POST"}}),
    ]
    with function_app(function_env(model_dir)) as framework:
        direct_app = direct_requests(framework.app)
        assert isinstance(direct_app, DirectRequests)
        with TestClient(direct_app, base_url="http://function.test") as direct:
            for method, path, options in requests:
                expected, got = framework.request(method, path, **options), direct.request(method, path, **options)
                assert (got.status_code, got.headers.get("content-type"), got.content) == (
                    expected.status_code, expected.headers.get("content-type"), expected.content
                ), (method, path)
        monkeypatch.setenv("LOG_EXECUTION_ID", "true")
        assert direct_requests(framework.app) is framework.app
