"""The web service behind a path prefix, as an ingress or a shared gateway serves it: ``uvicorn --root-path /iris``
(the proxy strips the prefix) and mounted under a Starlette ``Mount("/iris", ...)``, with and without an API key,
through real uvicorn processes. Every route answers as it does at the root (HEAD included), /health stays public,
and a chunked body over the limit is refused at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import REPO_ROOT, SEED_EXAMPLE, VENV_BIN, RunningServer, free_port, run_server, uvicorn_command

PREFIX = "/iris"
API_KEY = "prefix-key"
SMALL_LIMIT = 4096
V2_INFER = {
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(SEED_EXAMPLE.values())}],
}
# (method, path, JSON body): every route of the app, the model page included.
REQUESTS: list[tuple[str, str, object]] = [
    ("GET", "/", None),
    ("GET", "/health", None),
    ("HEAD", "/health", None),
    ("POST", "/predict", SEED_EXAMPLE),
    ("POST", "/predict", {"sepal_length": "x"}),
    ("POST", "/predict/batch", {"instances": [SEED_EXAMPLE, SEED_EXAMPLE]}),
    ("GET", "/model/info", None),
    ("HEAD", "/model/info", None),
    ("GET", "/model/inputs", None),
    ("GET", "/model/stats", None),
    ("GET", "/model/drift", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/v2", None),
    ("GET", "/v2/health/live", None),
    ("HEAD", "/v2/health/ready", None),
    ("GET", "/v2/models/iris", None),
    ("GET", "/v2/models/iris/ready", None),
    ("GET", "/v2/models/iris/versions/1.0.0", None),
    ("POST", "/v2/models/iris/infer", V2_INFER),
    ("POST", "/v2/models/iris/versions/1.0.0/infer", V2_INFER),
    ("POST", "/v2/models/nope/infer", V2_INFER),
    ("GET", "/nowhere", None),
    ("GET", "/v2/nowhere", None),
    ("DELETE", "/predict", None),
]
PUBLIC = {"/health", "/v2/health/live", "/v2/health/ready", "/metrics", "/"}
# Bodies that differ run to run (timings, counters, the page's nonce) are compared by status and shape only.
VOLATILE = {"/health", "/model/stats", "/model/drift", "/metrics", "/", "/docs", "/openapi.json"}


def _server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, *, mode: str, key: bool) -> Iterator[tuple[RunningServer, str]]:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_MAX_BODY_BYTES": str(SMALL_LIMIT)}
    if key:
        env["IRISSERVE_API_KEY"] = API_KEY
    if mode == "root-path":
        command, mount = uvicorn_command(port, "irisserve.web.app:app", "--root-path", PREFIX), ""
    else:
        command = [
            str(VENV_BIN / "uvicorn"), "--app-dir", str(REPO_ROOT / "tests"), "--factory", "ui_prefix_app:create",
            "--host", "127.0.0.1", "--port", str(port),
        ]
        mount = PREFIX
    log_path = tmp_path_factory.mktemp(f"{mode}-{key}") / "server.log"
    with run_server(command, port=port, log_path=log_path, env=env, ready_path=f"{mount}/health") as server:
        yield server, server.base_url + mount


@pytest.fixture(scope="module")
def at_root(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_MAX_BODY_BYTES": str(SMALL_LIMIT)}
    with run_server(uvicorn_command(port), port=port, log_path=tmp_path_factory.mktemp("root") / "server.log", env=env) as server:
        yield server.base_url


@pytest.fixture(scope="module", params=[("root-path", False), ("root-path", True), ("mount", False), ("mount", True)], ids=str)
def prefixed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[tuple[str, bool]]:
    mode, key = request.param
    for _, base in _server(tmp_path_factory, model_dir, mode=mode, key=key):
        yield base, key


def _send(base: str, method: str, path: str, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, base + path, json=body, headers=headers, timeout=10)


def _shape(response: httpx.Response) -> object:
    if response.headers.get("content-type", "").startswith("application/json") and response.content:
        payload = response.json()
        return sorted(payload) if isinstance(payload, dict) else type(payload).__name__
    return response.headers.get("content-type")


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_every_route_answers_behind_the_prefix_as_at_the_root(
    at_root: str, prefixed: tuple[str, bool], method: str, path: str, body: object
) -> None:
    base, key = prefixed
    expected = _send(at_root, method, path, body)
    headers = {"Authorization": f"Bearer {API_KEY}"} if key else None
    got = _send(base, method, path, body, headers)
    assert got.status_code == expected.status_code, got.text
    if path == "/openapi.json":  # behind a root path FastAPI adds it as the document's server
        assert got.json()["paths"].keys() == expected.json()["paths"].keys()
    else:
        assert _shape(got) == _shape(expected)
    if path not in VOLATILE:
        assert got.content == expected.content
    if method == "HEAD":
        assert got.content == b"" and got.headers["content-type"] == expected.headers["content-type"]
    if key and path not in PUBLIC and path not in {"/nowhere", "/v2/nowhere"}:
        refused = _send(base, method, path, body)
        assert refused.status_code == 401
        if method != "HEAD":
            assert ("error" if path.startswith("/v2") else "detail") in refused.json()


def test_health_is_public_behind_the_prefix(prefixed: tuple[str, bool]) -> None:
    base, _ = prefixed
    for path in ("/health", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(base + path).status_code == 200
        assert httpx.head(base + path).status_code == 200


def _chunked_upload(host: str, port: int, path: str, size: int) -> tuple[float, bytes]:
    """Send a whole chunked body of ``size`` bytes in one write; the seconds until the answer, and the answer."""
    payload = b"x" * size
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    with socket.create_connection((host, port), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return time.perf_counter() - started, answer


def test_a_whole_chunked_body_over_the_limit_is_refused_at_once(at_root: str) -> None:
    """The 413 for a complete chunked body comes at once (it used to wait 5 s for body that would never come);
    100 of them in a row hold no connection for seconds."""
    url = httpx.URL(at_root)
    host, port = url.host, url.port
    assert port is not None
    seconds, answer = _chunked_upload(host, port, "/predict", 2 * SMALL_LIMIT)
    assert answer.startswith(b"HTTP/1.1 413") and b"IRISSERVE_MAX_BODY_BYTES" in answer
    assert seconds < 0.1
    started = time.perf_counter()
    for _ in range(100):
        _, answer = _chunked_upload(host, port, "/v2/models/iris/infer", 2 * SMALL_LIMIT)
        assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer
    assert time.perf_counter() - started < 10
