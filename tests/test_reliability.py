"""A client's mistake is never a 500, shutdown loses no request, headers and refused bodies are bounded.

Table-driven against both live front doors (uvicorn, functions-framework) and V2: every hostile request
gets a 4xx whose message says what to fix, no ERROR line is logged, and the 5xx counter does not move.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irisserve.core.settings import Settings
from irisserve.web.app import create_app
from support import SEED_EXAMPLE, RunningServer, free_port, function_command, function_env, run_server, stop
from test_function import function_app

IRISSERVE = str(Path(sys.executable).parent / "irisserve")
JSON = {"content-type": "application/json"}


def nested(depth: int) -> bytes:
    return b'{"sepal_length": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


# name -> (body, extra headers, expected status, a phrase the message must hold)
HOSTILE: dict[str, tuple[bytes, dict[str, str], int, str]] = {
    "JSON nested 500 deep (1 KB)": (nested(500), {}, 422, "valid number"),
    "JSON nested 900 deep": (nested(900), {}, 422, "valid number"),
    "JSON nested 5,000 deep": (nested(5000), {}, 400, "nested too deeply"),
    "integer of 5,000 digits": (b'{"sepal_length": ' + b"7" * 5000 + b"}", {}, 400, "number too long"),
    "not UTF-8": (b'{"sepal_length": "\xff\xfe"}', {}, 400, "not UTF-8"),
    "gzip body": (gzip.compress(json.dumps(SEED_EXAMPLE).encode()), {"content-encoding": "gzip"}, 415, "uncompressed"),
    "1 MB string value": (json.dumps({"x": "a" * 1_000_000}).encode(), {}, 422, "Field required"),
    "repeated keys": (b'{"sepal_length": 1, "sepal_length": "x", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}', {}, 422, "valid number"),
}


def server_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"severity": "ERROR"' in line or '"severity":"ERROR"' in line or "Traceback" in line]


def five_xx(client: httpx.Client) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("irisserve_http_requests_total") and 'status="5' in line
    )


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_get_a_4xx_that_says_what_to_fix_on_both_doors(
    live_server: RunningServer, live_function: RunningServer, case: str
) -> None:
    body, headers, status, phrase = HOSTILE[case]
    with httpx.Client(base_url=live_server.base_url, timeout=30) as web, httpx.Client(base_url=live_function.base_url, timeout=30) as fn:
        errors_before, five_xx_before = len(server_errors(live_server.log())), five_xx(web)
        function_errors_before = len(server_errors(live_function.log()))
        answers = [web.post("/predict", content=body, headers={**JSON, **headers}), fn.post("/", content=body, headers={**JSON, **headers})]
        for answer in answers:
            assert answer.status_code == status, answer.text[:300]
            assert phrase in answer.text and len(answer.content) < 64 * 1024
        assert answers[0].content == answers[1].content
        assert five_xx(web) == five_xx_before
        assert len(server_errors(live_server.log())) == errors_before
        assert len(server_errors(live_function.log())) == function_errors_before


def v2_request(data: Any, shape: Any = None) -> bytes:
    tensor = {"name": "input", "shape": shape or [1, 4], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


V2_HOSTILE: dict[str, tuple[bytes, dict[str, Any], str]] = {
    "5,000-digit number in data": (v2_request([5.1, 3.5, 1.4, 0.2]).replace(b"5.1", b"5" * 5000), {}, "number too long"),
    "5,000-digit number in shape": (v2_request([5.1, 3.5, 1.4, 0.2]).replace(b"[1, 4]", b"[" + b"1" * 5000 + b", 4]"), {}, "number too long"),
    "header length of superscript two": (v2_request([5.1, 3.5, 1.4, 0.2]), {"Inference-Header-Content-Length": "²".encode()}, "byte length of the JSON header"),
    "header length of 5,000 digits": (v2_request([5.1, 3.5, 1.4, 0.2]), {"Inference-Header-Content-Length": "9" * 5000}, "byte length of the JSON header"),
    "data nested 900 deep": (v2_request(json.loads(b"[" * 900 + b"1" + b"]" * 900)), {}, "nested data must be"),
    "gzip body": (gzip.compress(v2_request([5.1, 3.5, 1.4, 0.2])), {"content-encoding": "gzip"}, "uncompressed"),
}


@pytest.mark.parametrize("case", list(V2_HOSTILE))
def test_hostile_v2_requests_get_a_4xx_error_object(live_server: RunningServer, case: str) -> None:
    body, headers, phrase = V2_HOSTILE[case]
    with httpx.Client(base_url=live_server.base_url, timeout=30) as web:
        errors_before, five_xx_before = len(server_errors(live_server.log())), five_xx(web)
        answer = web.post("/v2/models/iris/infer", content=body, headers={**JSON, **headers})
        assert 400 <= answer.status_code < 500, answer.text[:300]
        assert set(answer.json()) == {"error"} and phrase in answer.json()["error"]
        assert five_xx(web) == five_xx_before
        assert len(server_errors(live_server.log())) == errors_before


# JSON text that nests, repeats keys and mixes types: what a fuzzer or a broken client sends.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0"]).map(lambda text: text),
)


def _encode_scalar(value: Any) -> str:
    return value if isinstance(value, str) and value in {"NaN", "Infinity", "-Infinity", "1e999", "-0"} else json.dumps(value)


json_texts = st.recursive(
    json_scalars.map(_encode_scalar),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(
            st.tuples(st.sampled_from([*SEED_EXAMPLE, "instances", "x", ""]), children), max_size=6
        ).map(lambda pairs: "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in pairs) + "}"),
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def both_in_process(model_dir: Path) -> Iterator[tuple[TestClient, httpx.Client]]:
    with TestClient(create_app(Settings(model_dir=model_dir)), raise_server_exceptions=False) as web, function_app(function_env(model_dir)) as fn:
        yield web, fn


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=json_texts, batch=st.booleans())
def test_any_json_text_gets_the_same_non_5xx_answer_from_both_doors(both_in_process: tuple[TestClient, httpx.Client], text: str, batch: bool) -> None:
    web, fn = both_in_process
    body = text.encode()
    if batch:
        body = b'{"instances": [' + body + b"]}"
    answers = [web.post("/predict/batch" if batch else "/predict", content=body), fn.post("/", content=body)]
    assert answers[0].status_code < 500 and answers[1].status_code < 500, answers[0].text
    if batch or not text.startswith("{") or '"instances"' not in text:
        assert answers[0].status_code == answers[1].status_code
        assert answers[0].content == answers[1].content


def test_v2_paths_answer_every_error_as_an_error_object(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, api_key="s3cret"))) as client:
        unauthorised = client.get("/v2/models/iris")
        assert unauthorised.status_code == 401 and set(unauthorised.json()) == {"error"}
        key = {"X-API-Key": "s3cret"}
        for method, path, status in [("GET", "/v2/nope", 404), ("POST", "/v2/health/live", 405), ("GET", "/v2/models/iris/config", 404)]:
            answer = client.request(method, path, headers=key)
            assert answer.status_code == status and set(answer.json()) == {"error"}, (path, answer.text)
        too_big = client.post("/v2/models/iris/infer", content=b"x" * 2_000_000, headers=key)
        assert too_big.status_code == 413 and set(too_big.json()) == {"error"}
        assert set(client.get("/nope", headers=key).json()) == {"detail"}


def test_head_health_and_no_redirect_for_a_trailing_slash(live_server: RunningServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        head = client.head("/health")
        assert head.status_code == 200 and head.content == b""
        slash = client.post("/predict/", json=SEED_EXAMPLE)
        assert slash.status_code == 404 and "location" not in slash.headers and slash.json()["detail"]


def test_openapi_declares_the_api_key_so_swagger_ui_can_send_it(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, api_key="s3cret"))) as client:
        schema = client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        assert "securitySchemes" not in client.get("/openapi.json").json()["components"]


def send_partial_body(base_url: str, path: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n".encode() + b'{"inputs": [')
        time.sleep(0.2)


@pytest.mark.parametrize("path", ["/v2/models/iris/infer", "/predict"])
def test_a_client_that_drops_mid_body_is_not_a_server_error(live_server: RunningServer, path: str) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as web:
        errors_before, five_xx_before = len(server_errors(live_server.log())), five_xx(web)
        send_partial_body(live_server.base_url, path)
        time.sleep(0.5)
        assert five_xx(web) == five_xx_before
        assert len(server_errors(live_server.log())) == errors_before
        assert "disconnected before sending the whole body" in live_server.log()


def upload_with_urllib(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError) as error:
        return -1 if "reset" in str(error).lower() or "broken pipe" in str(error).lower() else -2


@pytest.mark.parametrize("door", ["web", "function"])
def test_every_oversized_upload_gets_its_413(live_server: RunningServer, live_function: RunningServer, door: str) -> None:
    url = live_server.base_url + "/predict" if door == "web" else live_function.base_url + "/"
    body = b'{"instances": [' + b" " * (2 * 1024 * 1024) + b"]}"
    statuses = [upload_with_urllib(url, body) for _ in range(50)]
    with httpx.Client(timeout=30) as client:
        statuses += [client.post(url, content=body, headers=JSON).status_code for _ in range(50)]
    assert statuses == [413] * 100, {status: statuses.count(status) for status in set(statuses)}


# --- irisserve serve: bounded headers, lossless shutdown --------------------------------------------------------


def serve_command() -> list[str]:
    return [IRISSERVE, "serve"]


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def raw_request_status(port: int, header_bytes: int) -> int | None:
    """Send one request with a User-Agent of ``header_bytes``; the status answered, or None if the connection broke."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with contextlib.suppress(OSError):  # the server may stop reading once it has refused
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: ")
                chunk = b"a" * 65536
                sent = 0
                while sent < header_bytes:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return None
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None


def test_headers_over_the_limit_get_431_and_memory_stays_bounded(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_HOST": "127.0.0.1"}
    with run_server(serve_command(), port=port, log_path=tmp_path / "serve.log", env=env) as server:
        assert raw_request_status(port, 100 * 1024) == 431
        before = rss_kib(server.process.pid)
        threads = [threading.Thread(target=raw_request_status, args=(port, 30 * 1024 * 1024)) for _ in range(10)]
        for thread in threads:
            thread.start()
        peak = before
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, rss_kib(server.process.pid))
            time.sleep(0.02)
        assert peak - before < 50 * 1024, f"RSS grew by {(peak - before) / 1024:.0f} MiB"
        assert httpx.get(server.base_url + "/health").status_code == 200
        small = httpx.get(server.base_url + "/health", headers={"User-Agent": "u" * 1_000})
        assert small.status_code == 200
        # Only headers count: a large body arriving in the same packets as its headers is not refused.
        batch = json.dumps({"instances": [SEED_EXAMPLE] * 1000}).encode()
        for _ in range(10):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", "/predict/batch", body=batch, headers={"Content-Type": "application/json"})
            assert connection.getresponse().status == 200
            connection.close()


@pytest.mark.parametrize("door", ["web", "function"])
def test_a_later_request_on_a_kept_alive_connection_meets_the_header_limit_too(model_dir: Path, tmp_path: Path, door: str) -> None:
    """The second request's head, arriving whole in one packet after a first request was answered on the same
    connection, is counted from its first byte: 431, as on a fresh connection (both doors run the same protocol)."""
    port = free_port()
    env = {"PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_HOST": "127.0.0.1", "IRISSERVE_MAX_HEADER_BYTES": "4096"}
    command = serve_command() if door == "web" else function_command(port)
    with run_server(command, port=port, log_path=tmp_path / "serve.log", env=env), \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = http.client.HTTPResponse(sock)
        first.begin()
        first.read()
        assert first.status == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"a" * 20_000 + b"\r\n\r\n")
        second = http.client.HTTPResponse(sock)
        second.begin()
        assert second.status == 431, second.read()


class LoadResult:
    def __init__(self) -> None:
        self.answered = 0
        self.statuses: dict[int, int] = {}
        self.lost: list[str] = []  # sent, then no answer
        self.refused = 0  # refused at connect: allowed once the server stops listening
        self.lock = threading.Lock()


def keep_alive_client(port: int, stop_at: threading.Event, result: LoadResult) -> None:
    body = json.dumps(SEED_EXAMPLE).encode()
    connection: http.client.HTTPConnection | None = None
    while not stop_at.is_set():
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                connection.connect()
            except OSError:
                with result.lock:
                    result.refused += 1
                connection = None
                time.sleep(0.05)
                continue
        try:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as error:
            with result.lock:
                result.lost.append(repr(error))
            connection.close()
            connection = None
            continue
        with result.lock:
            result.answered += 1
            result.statuses[answer.status] = result.statuses.get(answer.status, 0) + 1
        if answer.getheader("connection", "").lower() == "close":
            connection.close()
            connection = None


def sigterm_under_load(server: RunningServer, port: int, clients: int = 32) -> tuple[LoadResult, int, int, float]:
    """Keep-alive clients posting in a loop; after a second, SIGTERM to the server's first process (as a
    container runtime signals PID 1). The load's result, the answers before the signal, the exit code and
    the seconds from the signal to the exit."""
    result, stop_at = LoadResult(), threading.Event()
    threads = [threading.Thread(target=keep_alive_client, args=(port, stop_at, result)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    answered_before = result.answered
    signalled = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    code = server.process.wait(timeout=15)
    exited = time.monotonic() - signalled
    stop_at.set()
    for thread in threads:
        thread.join(timeout=20)
    return result, answered_before, code, exited


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_keep_alive_load_loses_no_request(model_dir: Path, tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = {
        "PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_WORKERS": str(workers), "IRISSERVE_HOST": "127.0.0.1",
        "IRISSERVE_DRAIN_SECONDS": "1",
    }
    with run_server(serve_command(), port=port, log_path=tmp_path / "serve.log", env=env) as server:
        result, answered_before, code, exited = sigterm_under_load(server, port)
        log_lines = [line for line in server.log().splitlines() if line.strip()]
    assert answered_before > 100 and result.answered > answered_before
    not_json = [line for line in log_lines if not line.startswith("{")]
    assert not_json == [], f"with {workers} worker(s), lines that are not JSON: {not_json[:3]}"
    assert result.lost == [], f"{len(result.lost)} requests sent without an answer: {result.lost[:3]}"
    assert set(result.statuses) == {200}
    assert code == 0 and exited < 10, (code, exited)


def test_readiness_turns_503_at_once_and_answers_close_their_connection(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_DRAIN_SECONDS": "1", "IRISSERVE_HOST": "127.0.0.1"}
    with run_server(serve_command(), port=port, log_path=tmp_path / "serve.log", env=env) as server:
        os.kill(server.process.pid, signal.SIGTERM)
        time.sleep(0.2)
        health = httpx.get(server.base_url + "/health")
        assert health.status_code == 503 and "draining" in health.json()["status"]
        assert health.headers["connection"] == "close"
        prediction = httpx.post(server.base_url + "/predict", json=SEED_EXAMPLE)
        assert prediction.status_code == 200 and prediction.headers["connection"] == "close"
        assert server.process.wait(timeout=15) == 0
    assert stop(server.process) == 0


def test_an_upload_still_arriving_at_the_deadline_gets_a_json_503(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_DRAIN_SECONDS": "0.5", "IRISSERVE_HOST": "127.0.0.1",
        "IRISSERVE_FINISH_SECONDS": "1",  # the graceful timeout this test waits out (5 s in production)
    }
    with run_server(serve_command(), port=port, log_path=tmp_path / "serve.log", env=env) as server:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
            time.sleep(0.2)
            os.kill(server.process.pid, signal.SIGTERM)
            reply = b""
            while chunk := sock.recv(65536):  # the server answers when its graceful timeout ends, then closes
                reply += chunk
        assert server.process.wait(timeout=15) == 0
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head.lower()
        assert "send the request again" in json.loads(body)["detail"]
        # uvicorn says it cancelled the task (ERROR, its own line) and the 503 is logged; no traceback.
        assert "Traceback" not in server.log() and "Exception in ASGI application" not in server.log()


# --- Artifacts that cannot load say why ---------------------------------------------------------------------------


def broken_manifests(good: dict[str, Any]) -> dict[str, Any]:
    """A manifest body per case (None: manifest.json is a folder, so it cannot be read) and what the refusal names."""
    files_as_strings = {**good, "files": {name: "abc" for name in good["files"]}}
    no_features = {**good, "features": []}
    return {
        "a number": (b"3", "format_version"),
        "a list": (b"[1, 2]", "format_version"),
        "files values that are strings": (json.dumps(files_as_strings).encode(), "files.model.onnx"),
        "no features": (json.dumps(no_features).encode(), "features"),
        "not JSON": (b"{oops", "not valid JSON"),
        "unreadable": (None, "Cannot read"),
    }


def break_artifact(folder: Path, case: str) -> str:
    good = json.loads((folder / "manifest.json").read_text())
    body, named = broken_manifests(good)[case]
    (folder / "manifest.json").unlink()
    if body is None:
        (folder / "manifest.json").mkdir()
    else:
        (folder / "manifest.json").write_bytes(body)
    return named


BROKEN = ["a number", "a list", "files values that are strings", "no features", "not JSON", "unreadable"]


@pytest.mark.parametrize("case", BROKEN)
def test_the_web_service_refuses_a_broken_artifact_before_listening(artifact_copy: Path, case: str) -> None:
    named = break_artifact(artifact_copy, case)
    env = {"PATH": os.environ["PATH"], "PORT": str(free_port()), "IRISSERVE_MODEL_DIR": str(artifact_copy)}
    result = subprocess.run([IRISSERVE, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "manifest.json" in result.stderr and named in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", BROKEN)
def test_the_function_answers_503_naming_the_file(artifact_copy: Path, case: str) -> None:
    named = break_artifact(artifact_copy, case)
    with function_app(function_env(artifact_copy)) as client:
        for answer in (client.get("/", headers={"Accept": "application/json"}), client.post("/", json=SEED_EXAMPLE)):
            assert answer.status_code == 503
            text = answer.json().get("status") or answer.json().get("detail")
            assert "manifest.json" in text and named in text


def test_the_function_in_import_mode_fails_at_import_naming_the_file(artifact_copy: Path) -> None:
    named = break_artifact(artifact_copy, "files values that are strings")
    env = {**os.environ, **function_env(artifact_copy, IRISSERVE_FUNCTION_LOAD="import")}
    command = [str(Path(sys.executable).parent / "functions-framework"), "--source", "cloud_function/main.py", "--target", "predict", "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode != 0
    assert named in result.stderr
