"""/metrics, the per-request log line, request ids and trace context; metrics summed over two workers."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from irisserve.ops import lifecycle
from irisserve.web.app import create_app
from irisserve.ops.request_log import use_json_logs
from irisserve.ops.tracing import Trace, parse_cloud_trace_context, parse_traceparent
from irisserve.core.settings import Settings
from support import SEED_EXAMPLE, VENV_BIN, RunningServer, free_port, run_server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
OUT_OF_RANGE_EXAMPLE = {**SEED_EXAMPLE, "sepal_length": 9.5, "petal_width": 3.0}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: httpx.Client | TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


def scrape_url(base_url: str) -> Samples:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        return scrape(client)


# The per-model series' labels for the Iris artifact.
IRIS = {"model": "iris", "version": "1.0.0"}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_counted(samples: Samples, route: str, status: int, method: str = "POST") -> float:
    return value(samples, "irisserve_http_requests_total", method=method, route=route, status=str(status))


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning"))) as test_client:
        yield test_client


# -- /metrics -------------------------------------------------------------------------------------


def test_metrics_lists_every_family(client: TestClient) -> None:
    client.post("/predict", json=SEED_EXAMPLE)
    names = {family.name for family in text_string_to_metric_families(client.get("/metrics").text)}
    assert {
        "irisserve_http_requests",
        "irisserve_http_request_duration_seconds",
        "irisserve_http_requests_in_flight",
        "irisserve_inference_duration_seconds",
        "irisserve_validation_errors",
        "irisserve_predictions",
        "irisserve_out_of_range_inputs",
        "irisserve_model_load_seconds",
        "irisserve_process_start_time_seconds",
    } <= names


def test_requests_are_counted_by_route_and_status(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
    assert client.post("/predict", json={**SEED_EXAMPLE, "sepal_length": -1}).status_code == 422
    assert client.post("/predict", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 422
    assert client.post("/predict/batch", json={"instances": [SEED_EXAMPLE] * 2}).status_code == 200
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    def delta(route: str, status: int, method: str = "POST") -> float:
        return requests_counted(after, route, status, method) - requests_counted(before, route, status, method)

    assert delta("/predict", 200) == 3
    assert delta("/predict", 422) == 2
    assert delta("/predict/batch", 200) == 1
    assert delta("unmatched", 404, "GET") == 1
    validation = value(after, "irisserve_validation_errors_total", route="/predict") - value(
        before, "irisserve_validation_errors_total", route="/predict"
    )
    assert validation == 2
    latency = "irisserve_http_request_duration_seconds_count"
    assert value(after, latency, method="POST", route="/predict") - value(before, latency, method="POST", route="/predict") == 5
    inference = value(after, "irisserve_inference_duration_seconds_count", **IRIS) - value(before, "irisserve_inference_duration_seconds_count", **IRIS)
    assert inference == 4  # one model call per successful request, batch included


def test_hostile_paths_and_methods_cannot_grow_the_labels(client: TestClient) -> None:
    before = scrape(client)
    for index in range(5):
        client.get(f"/probe-{index}")
        client.request(f"BREW{index}", "/predict")
    after = scrape(client)
    new_series = set(after) - set(before)
    requests = {dict(labels)["route"] + " " + dict(labels)["method"] for name, labels in new_series if name == "irisserve_http_requests_total"}
    assert requests <= {"unmatched GET", "/predict other"}
    assert requests_counted(after, "/predict", 405, "other") - requests_counted(before, "/predict", 405, "other") == 5


def test_predictions_and_out_of_range_inputs_are_counted(client: TestClient) -> None:
    before = scrape(client)
    response = client.post("/predict", json=OUT_OF_RANGE_EXAMPLE)
    assert response.status_code == 200
    answer = response.json()
    assert answer["out_of_range_features"] == ["sepal_length", "petal_width"]
    batch = client.post("/predict/batch", json={"instances": [SEED_EXAMPLE, OUT_OF_RANGE_EXAMPLE]}).json()
    after = scrape(client)
    predicted = Counter([answer["prediction"], *(row["prediction"] for row in batch["predictions"])])

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("irisserve_out_of_range_inputs_total", feature="sepal_length", **IRIS) == 2
    assert delta("irisserve_out_of_range_inputs_total", feature="petal_width", **IRIS) == 2
    assert delta("irisserve_out_of_range_inputs_total", feature="sepal_width", **IRIS) == 0
    for name in ("setosa", "versicolor", "virginica"):
        assert delta("irisserve_predictions_total", **IRIS, **{"class": name}) == predicted[name]


def test_gauges_describe_the_process(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "irisserve_model_load_seconds", **IRIS) > 0
    started = value(samples, "irisserve_process_start_time_seconds")
    assert time.time() - 3600 < started <= time.time()
    assert value(samples, "irisserve_http_requests_in_flight") == 1  # the scrape itself


# -- Request id and trace context -----------------------------------------------------------------


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    too_long = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert too_long != "x" * 500 and len(too_long) == 32


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    response = client.post("/predict", json={}, headers={"X-Request-ID": "bad-one"})
    assert response.status_code == 422
    assert response.headers["x-request-id"] == "bad-one"


@pytest.mark.parametrize(
    "header, expected",
    [
        (TRACEPARENT, Trace(TRACE_ID, "00f067aa0ba902b7", True)),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", Trace(TRACE_ID, "00f067aa0ba902b7", False)),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
        ("00-nothex-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_traceparent(header: str, expected: Trace | None) -> None:
    assert parse_traceparent(header) == expected


@pytest.mark.parametrize(
    "header, expected",
    [
        (f"{TRACE_ID}/123;o=1", Trace(TRACE_ID, "123", True)),
        (f"{TRACE_ID}/123", Trace(TRACE_ID, "123", False)),
        (TRACE_ID, Trace(TRACE_ID, None, False)),
        ("short/1;o=1", None),
    ],
)
def test_cloud_trace_context(header: str, expected: Trace | None) -> None:
    assert parse_cloud_trace_context(header) == expected


# -- Logs -----------------------------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_cloud_logging_line_per_request(model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")
    with TestClient(create_app(Settings(model_dir=model_dir, log_format="auto"))) as client:
        capsys.readouterr()
        client.post("/predict?x=1", json=SEED_EXAMPLE, headers={"X-Request-ID": "rid-1", "traceparent": TRACEPARENT})
        client.post("/predict", json={}, headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/42;o=1"})
        lines = json_lines(capsys.readouterr().err)
    access = [line for line in lines if line.get("logger") == "irisserve.access"]
    assert len(access) == 2
    ok, bad = access
    assert ok["severity"] == "INFO" and bad["severity"] == "WARNING"
    assert ok["message"].startswith("POST /predict?x=1 200 ")
    http = ok["httpRequest"]
    assert {k: http[k] for k in ("requestMethod", "requestUrl", "status", "protocol")} == {
        "requestMethod": "POST", "requestUrl": "/predict?x=1", "status": 200, "protocol": "HTTP/1.1",
    }
    assert http["latency"].endswith("s") and float(http["latency"][:-1]) > 0
    assert int(http["responseSize"]) > 0 and int(http["requestSize"]) > 0
    assert ok["logging.googleapis.com/labels"] == {"request_id": "rid-1", "model": "iris", "model_version": "1.0.0"}
    assert ok["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert ok["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert ok["logging.googleapis.com/trace_sampled"] is True
    assert bad["httpRequest"]["status"] == 422
    assert bad["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert bad["logging.googleapis.com/spanId"] == "42"
    assert "timestamp" in ok and ok["timestamp"]["seconds"] > 0


def test_hostile_strings_cannot_break_the_json_line(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_format="json"))) as client:
        capsys.readouterr()
        client.get('/health?q="}\\', headers={"User-Agent": 'evil"}\n{"severity":"EMERGENCY', "X-Request-ID": 'a"b'})
        lines = [line for line in capsys.readouterr().err.splitlines() if "irisserve.access" in line]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == "INFO"
    assert entry["httpRequest"]["userAgent"] == 'evil"}\n{"severity":"EMERGENCY'
    assert entry["logging.googleapis.com/labels"]["request_id"] == 'a"b'


def test_log_level_silences_request_lines(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_format="json", log_level="warning"))) as client:
        capsys.readouterr()
        client.get("/health")
        client.post("/predict", json={})
        access = [line for line in json_lines(capsys.readouterr().err) if line.get("logger") == "irisserve.access"]
    assert [line["httpRequest"]["status"] for line in access] == [422]


def test_text_logs_for_a_terminal(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_format="text"))) as client:
        capsys.readouterr()
        client.get("/health", headers={"X-Request-ID": "rid-text"})
        err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "irisserve.access" in line)
    assert not line.startswith("{")
    assert "INFO" in line and "GET /health 200" in line and "[rid-text]" in line


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_auto_format_follows_the_terminal() -> None:
    assert use_json_logs("auto", _Terminal()) is False
    assert use_json_logs("auto", open(os.devnull, "w")) is True
    assert use_json_logs("json", _Terminal()) is True
    assert use_json_logs("text", open(os.devnull, "w")) is False


def test_live_server_logs_json_lines(live_server: RunningServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=10) as client:
        response = client.post("/predict", json=SEED_EXAMPLE, headers={"X-Request-ID": "live-rid-7", "traceparent": TRACEPARENT})
        assert response.headers["x-request-id"] == "live-rid-7"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in json_lines(live_server.log()) if line.get("logging.googleapis.com/labels", {}).get("request_id") == "live-rid-7"]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1
    assert lines[0]["httpRequest"]["status"] == 200
    assert lines[0]["logging.googleapis.com/trace"].endswith(TRACE_ID)


# -- Draining -------------------------------------------------------------------------------------


def test_draining_turns_readiness_false_but_keeps_answering(client: TestClient) -> None:
    lifecycle.begin_draining()
    try:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable: draining"
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
    finally:
        lifecycle.end_draining()
    assert client.get("/health").status_code == 200


# -- Several workers ------------------------------------------------------------------------------


def test_two_workers_metrics_add_up(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an old run")
    env = {
        "IRISSERVE_MODEL_DIR": str(model_dir),
        "IRISSERVE_WORKERS": "2",
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    sent = 40
    with run_server([str(VENV_BIN / "irisserve"), "serve"], port=port, log_path=tmp_path / "serve.log", env=env) as server:
        assert not (metrics_dir / "counter_1.db").exists()
        wait_for_workers(server, 2)
        for _ in range(sent):  # a new connection each time, so the kernel spreads them over both workers
            assert httpx.post(server.base_url + "/predict", json=SEED_EXAMPLE, timeout=10).status_code == 200
        for _ in range(4):  # every scrape, whichever worker answers it, sees the sum
            samples = scrape_url(server.base_url)
            assert requests_counted(samples, "/predict", 200) == sent
            assert value(samples, "irisserve_predictions_total", **IRIS, **{"class": "setosa"}) == sent
            assert len(process_series(samples)) == 2
    assert server.process.returncode == 0  # SIGTERM to the whole group: parent and workers shut down cleanly
    assert metrics_dir.is_dir()  # a folder the operator named is kept; only its old files are cleared


def process_series(samples: Samples) -> list[frozenset[tuple[str, str]]]:
    return [labels for name, labels in samples if name == "irisserve_process_start_time_seconds"]


def wait_for_workers(server: RunningServer, count: int, timeout: float = 60) -> None:
    """Both workers have loaded the model once each has written its gauges to the shared folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples = scrape_url(server.base_url)
        if len([labels for name, labels in samples if name == "irisserve_model_load_seconds"]) == count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{count} workers not up:\n{server.log()}")


def test_metrics_are_rendered_at_most_once_per_max_age(model_dir: Path) -> None:
    """Production renders /metrics at most once a second and serves that text in between, so scrapers cost the
    event loop nothing (IRISSERVE_METRICS_MAX_AGE_SECONDS; the tests' default is 0: every scrape renders)."""
    with TestClient(create_app(Settings(model_dir=model_dir, metrics_max_age_seconds=30))) as client:
        first = client.get("/metrics").text
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
        assert client.get("/metrics").text == first  # within the max age: the same text, not rendered again
    with TestClient(create_app(Settings(model_dir=model_dir, metrics_max_age_seconds=0))) as client:
        before = client.get("/metrics").text
        assert client.post("/predict", json=SEED_EXAMPLE).status_code == 200
        assert client.get("/metrics").text != before
