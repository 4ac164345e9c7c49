"""API key, body and batch limits, hostile JSON, and the library-version checks on the artifact."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from irisserve.ops import limits as security
from irisserve.web.app import create_app
from irisserve.core.artifact import MANIFEST_NAME, ONNX_NAME, describe_file
from irisserve.core.errors import ArtifactError
from irisserve.core.pipeline import MAX_ERRORS_SHOWN
from irisserve.core.predictor import Predictor
from irisserve.ops.limits import BodyLimitMiddleware
from irisserve.core.settings import Settings
from support import SEED_EXAMPLE, RunningServer, free_port, run_server, uvicorn_command

API_KEY = "s3cret-key"
SMALL_LIMIT = 2048


@pytest.fixture(scope="module")
def keyed_client(model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, api_key=API_KEY, max_body_bytes=SMALL_LIMIT, max_batch_size=5)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real uvicorn process with an API key and a 2 KiB body limit."""
    port = free_port()
    env = {
        "IRISSERVE_MODEL_DIR": str(model_dir),
        "IRISSERVE_API_KEY": API_KEY,
        "IRISSERVE_MAX_BODY_BYTES": str(SMALL_LIMIT),
    }
    log_path = tmp_path_factory.mktemp("keyed") / "server.log"
    with run_server(uvicorn_command(port), port=port, log_path=log_path, env=env) as server:
        yield server


# -- API key --------------------------------------------------------------------------------------


def test_missing_key_is_401_naming_both_headers(keyed_client: TestClient) -> None:
    response = keyed_client.post("/predict", json=SEED_EXAMPLE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    detail = response.json()["detail"]
    assert "Authorization: Bearer" in detail and "X-API-Key" in detail and "IRISSERVE_API_KEY" in detail


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {API_KEY}"}, {"X-API-Key": API_KEY[:-1]}],
)
def test_wrong_key_is_401(keyed_client: TestClient, headers: dict[str, str]) -> None:
    response = keyed_client.post("/predict", json=SEED_EXAMPLE, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"bearer {API_KEY}"}, {"X-API-Key": API_KEY}]
)
def test_right_key_in_either_header_predicts(keyed_client: TestClient, headers: dict[str, str]) -> None:
    response = keyed_client.post("/predict", json=SEED_EXAMPLE, headers=headers)
    assert response.status_code == 200
    assert response.json()["prediction"] == "setosa"


@pytest.mark.parametrize("path", ["/health", "/metrics", "/v2/health/live", "/v2/health/ready"])
def test_probe_and_scrape_paths_stay_open(keyed_client: TestClient, path: str) -> None:
    assert keyed_client.get(path).status_code == 200


def test_public_paths_setting_can_close_probes(model_dir: Path) -> None:
    settings = Settings(model_dir=model_dir, api_key=API_KEY, public_paths=["/health"])
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": API_KEY}).status_code == 200


def test_key_is_compared_in_constant_time(keyed_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    keyed_client.post("/predict", json=SEED_EXAMPLE, headers={"X-API-Key": "guess"})
    assert calls == [(b"guess", API_KEY.encode())]


def test_no_key_configured_means_open(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200


def test_live_server_enforces_key(keyed_server: RunningServer) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 401
        response = client.post("/predict", json=SEED_EXAMPLE, headers={"Authorization": f"Bearer {API_KEY}"})
        assert response.status_code == 200


# -- Body limit -----------------------------------------------------------------------------------

AUTH = {"X-API-Key": API_KEY}


def padded_body(size: int) -> bytes:
    """A valid /predict body padded with whitespace to exactly ``size`` bytes."""
    body = json.dumps(SEED_EXAMPLE).encode()
    return body + b" " * (size - len(body))


def test_body_at_the_limit_is_accepted(keyed_client: TestClient) -> None:
    response = keyed_client.post(
        "/predict", content=padded_body(SMALL_LIMIT), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 200


def test_content_length_over_the_limit_is_413_naming_the_setting(keyed_client: TestClient) -> None:
    response = keyed_client.post(
        "/predict", content=padded_body(SMALL_LIMIT + 1), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert f"{SMALL_LIMIT + 1} bytes" in detail and str(SMALL_LIMIT) in detail and "IRISSERVE_MAX_BODY_BYTES" in detail


@pytest.mark.anyio
async def test_oversized_content_length_is_refused_before_the_app_and_the_rest_dropped() -> None:
    """The app never sees the body; the middleware reads and drops it (bounded) so the client gets its 413
    instead of a reset (see ops.limits.discard_body)."""
    reads: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reads.append(await receive())

    sent: list[dict[str, Any]] = []
    chunk, total = 65536, 0

    async def receive() -> dict[str, Any]:
        nonlocal total
        total += chunk
        return {"type": "http.request", "body": b" " * chunk, "more_body": total < 5_000_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"5000000")]}
    await BodyLimitMiddleware(app, max_body_bytes=1024)(scope, receive, send)
    assert reads == []
    assert total >= 5_000_000  # dropped to the end, then answered
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["detail"].startswith("The request body is 5000000 bytes")


@pytest.mark.anyio
async def test_dropping_a_refused_body_stops_at_its_bound() -> None:
    from irisserve.core.pipeline import DISCARD_MAX_BYTES

    total = 0

    async def receive() -> dict[str, Any]:
        nonlocal total
        total += 1 << 20
        return {"type": "http.request", "body": b" " * (1 << 20), "more_body": True}  # a body without end

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"10000000000")]}
    await BodyLimitMiddleware(lambda *_: None, max_body_bytes=1024)(scope, receive, send)  # type: ignore[arg-type]
    assert DISCARD_MAX_BYTES <= total <= DISCARD_MAX_BYTES + 2 * (1 << 20)
    assert sent[0]["status"] == 413


def chunks(total: int, size: int = 512) -> Iterator[bytes]:
    body = padded_body(total)
    for start in range(0, total, size):
        yield body[start : start + size]


def test_chunked_body_over_the_limit_is_413(keyed_client: TestClient) -> None:
    response = keyed_client.post(
        "/predict", content=chunks(SMALL_LIMIT * 3), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "IRISSERVE_MAX_BODY_BYTES" in response.json()["detail"]


async def async_chunks(total: int) -> AsyncIterator[bytes]:
    for chunk in chunks(total):
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("total, status", [(SMALL_LIMIT, 200), (SMALL_LIMIT * 4, 413)])
async def test_live_chunked_upload_is_counted(keyed_server: RunningServer, total: int, status: int) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.base_url, timeout=10) as client:
        response = await client.post(
            "/predict", content=async_chunks(total), headers={**AUTH, "Content-Type": "application/json"}
        )
    assert "content-length" not in response.request.headers  # really chunked
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"


def test_live_content_length_over_the_limit_is_413(keyed_server: RunningServer) -> None:
    with httpx.Client(base_url=keyed_server.base_url, timeout=10) as client:
        response = client.post("/predict", content=padded_body(SMALL_LIMIT * 10), headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 413
        # The connection stays usable: the server drained the refused body.
        assert client.post("/predict", json=SEED_EXAMPLE, headers=AUTH).status_code == 200


# -- Hostile JSON ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir))) as test_client:
        yield test_client


def post_raw(client: TestClient, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def test_deep_nesting_is_a_clear_400(client: TestClient) -> None:
    response = post_raw(client, "/predict", "[" * 300_000 + "]" * 300_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_enormous_integer_is_a_clear_400(client: TestClient) -> None:
    body = json.dumps({**SEED_EXAMPLE, "sepal_length": 0}).replace('"sepal_length": 0', '"sepal_length": ' + "9" * 10_000)
    response = post_raw(client, "/predict", body)
    assert response.status_code == 400
    assert "number too long" in response.json()["detail"]


def test_float_overflowing_to_infinity_is_422(client: TestClient) -> None:
    body = json.dumps(SEED_EXAMPLE).replace("5.1", "1e999")
    response = post_raw(client, "/predict", body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "finite_number"


def test_oversized_batch_is_refused_before_its_rows_are_validated(client: TestClient) -> None:
    response = post_raw(client, "/predict/batch", json.dumps({"instances": [{}] * 50_000}))
    assert response.status_code == 413
    assert "50000 instances" in response.json()["detail"] and "IRISSERVE_MAX_BATCH_SIZE" in response.json()["detail"]


def test_thousands_of_schema_errors_give_a_short_answer(client: TestClient) -> None:
    body = json.dumps({f"field{i}": 0 for i in range(5000)})
    response = post_raw(client, "/predict", body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_ERRORS_SHOWN + 1
    assert detail[-1]["type"] == "too_many_errors" and "more errors" in detail[-1]["msg"]
    assert len(response.content) < 10_000  # the 5,000-key input is not echoed back four times
    assert all(not isinstance(error["input"], dict) or len(error["input"]) <= 20 for error in detail)


# -- Library versions recorded in the manifest ----------------------------------------------------


def set_library(artifact: Path, name: str, version: str) -> None:
    """Edit the manifest's recorded library; the manifest's own hash is not in it, so file hashes still pass."""
    path = artifact / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["libraries"][name] = version
    path.write_text(json.dumps(manifest))


def test_pickle_from_another_scikit_learn_is_refused(artifact_copy: Path) -> None:
    pytest.importorskip("sklearn")
    set_library(artifact_copy, "scikit-learn", "0.0.1")
    with pytest.raises(ArtifactError, match=r"pickled by scikit-learn 0\.0\.1 but .* installed.*IRISSERVE_BACKEND=onnx"):
        Predictor(artifact_copy, backend="sklearn").load()


def test_onnx_from_another_onnxruntime_loads_with_a_warning(artifact_copy: Path) -> None:
    set_library(artifact_copy, "onnxruntime", "0.0.1")
    predictor = Predictor(artifact_copy, backend="onnx")
    warnings = io.StringIO()
    handler = logging.StreamHandler(warnings)
    logging.getLogger("irisserve").addHandler(handler)
    try:
        assert predictor.load()
    finally:
        logging.getLogger("irisserve").removeHandler(handler)
    assert "checked with onnxruntime 0.0.1" in warnings.getvalue()
    assert predictor.predict(np.asarray([list(SEED_EXAMPLE.values())], dtype=np.float32)).class_ids == [0]  # type: ignore[union-attr]


def test_onnx_opset_newer_than_the_runtime_is_refused_with_versions(artifact_copy: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model_path = artifact_copy / ONNX_NAME
    model = onnx.load(model_path)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(model, model_path)
    set_library(artifact_copy, "onnxruntime", "99.0.0")
    manifest = json.loads((artifact_copy / MANIFEST_NAME).read_text())
    manifest["files"][ONNX_NAME] = describe_file(model_path)  # a re-exported model, hashed as training would
    (artifact_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"(?s)cannot load .*opset.*checked with onnxruntime 99\.0\.0: install onnxruntime>=99\.0\.0"):
        Predictor(artifact_copy, backend="onnx").load()
