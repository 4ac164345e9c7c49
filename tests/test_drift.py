"""Input drift per feature: the sliding window and PSI (ops/drift.py) directly, then through both front doors,
in process and live: rows drawn from the Iris training data stay under PSI 0.1; shift one feature by two
standard deviations and that feature, only that one, passes 0.25 and is reported drifted."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from irisserve.core.spec import Feature, ModelSpec
from irisserve.ops.drift import DEFAULT_WINDOW_ROWS, PSI_EPSILON, DriftMonitor, psi
from irisserve.web.app import create_app
from support import free_port, function_env, run_server, uvicorn_command
from test_function import function_app
from test_observability import parse_metrics

ROWS = 2_000
BATCH = 500
STABLE_PSI = 0.1
DRIFTED_PSI = 0.25
SEED = 20261126
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def training_rows(count: int = ROWS, *, shift: str | None = None, seed: int = SEED) -> np.ndarray:
    """``count`` rows drawn (with replacement) from the Iris training data; ``shift`` moves one feature up by two
    of its standard deviations (up, so every value stays above the features' exclusive minimum of 0)."""
    data = load_iris().data
    rows = data[np.random.default_rng(seed).integers(0, len(data), count)].copy()
    if shift is not None:
        column = FEATURES.index(shift)
        rows[:, column] += 2 * data[:, column].std()
    return rows


def as_instances(rows: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]


def psi_by_feature(report: dict[str, Any]) -> dict[str, float]:
    return {name: entry["psi"] for name, entry in report["features"].items()}


def assert_stable(report: dict[str, Any]) -> None:
    assert report["rows"] == ROWS
    assert all(value < STABLE_PSI for value in psi_by_feature(report).values()), psi_by_feature(report)
    assert report["drifted_features"] == [] and not any(entry["drifted"] for entry in report["features"].values())


def assert_only_drifted(report: dict[str, Any], feature: str) -> None:
    values = psi_by_feature(report)
    assert values[feature] > DRIFTED_PSI, values
    assert report["features"][feature]["drifted"] is True
    assert report["drifted_features"] == [feature]
    assert all(value < report["threshold"] for name, value in values.items() if name != feature), values


@pytest.fixture(scope="module")
def spec(model_dir: Path) -> ModelSpec:
    return Predictor(model_dir).spec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- PSI and the window, directly ------------------------------------------------------------------


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins() -> None:
    shares = np.array([0.25, 0.25, 0.5])
    assert psi(shares, shares) == 0.0
    value = psi(shares, np.array([0.0, 0.0, 1.0]))
    expected = sum((a - e) * math.log(a / e) for a, e in [(PSI_EPSILON, 0.25), (PSI_EPSILON, 0.25), (1.0, 0.5)])
    assert value == pytest.approx(expected)


def test_the_training_data_itself_has_psi_zero(spec: ModelSpec) -> None:
    """The rows arrive as float32; values equal to an edge (Iris: 1.4, 5.0) must land in the training's bin."""
    monitor = DriftMonitor(spec)
    monitor.observe(load_iris().data.astype(np.float32))
    assert set(psi_by_feature(monitor.report()).values()) == {0.0}


@pytest.mark.parametrize("feature", FEATURES)
def test_training_rows_are_stable_and_a_shifted_feature_drifts(spec: ModelSpec, feature: str) -> None:
    monitor = DriftMonitor(spec)
    monitor.observe(training_rows().astype(np.float32))
    assert_stable(monitor.report())
    monitor.observe(training_rows(shift=feature, seed=SEED + 1).astype(np.float32))
    report = monitor.report()
    assert report["rows"] == 2 * ROWS  # the window holds both: half the rows shifted is drift enough
    assert_only_drifted(report, feature)


def test_the_window_keeps_the_last_rows_across_the_ring_end(spec: ModelSpec) -> None:
    monitor = DriftMonitor(spec, window_rows=100)
    shifted = training_rows(60, shift="petal_length").astype(np.float32)
    monitor.observe(training_rows(70).astype(np.float32))
    monitor.observe(shifted)  # wraps: 30 slots at the end, 30 at the start
    monitor.observe(shifted[:40])  # overwrites the last 40 training rows
    assert monitor.report()["rows"] == 100
    window = DriftMonitor(spec, window_rows=100)
    window.observe(np.vstack([shifted, shifted[:40]]))
    assert monitor.report()["features"] == window.report()["features"]
    monitor.observe(training_rows(250).astype(np.float32))  # more than the window in one call
    assert monitor.report()["rows"] == 100


def test_the_default_window_is_ten_thousand_rows(spec: ModelSpec) -> None:
    monitor = DriftMonitor(spec)
    for _ in range(6):
        monitor.observe(training_rows().astype(np.float32))
    assert DEFAULT_WINDOW_ROWS == 10_000 and monitor.report()["rows"] == 10_000


def test_rows_older_than_the_age_bound_leave_the_window(spec: ModelSpec) -> None:
    clock = FakeClock()
    monitor = DriftMonitor(spec, max_age_seconds=3600, clock=clock)
    monitor.observe(training_rows(300, shift="sepal_width").astype(np.float32))
    clock.now += 1800
    monitor.observe(training_rows(200).astype(np.float32))
    assert monitor.report()["rows"] == 500 and monitor.report()["drifted_features"] == ["sepal_width"]
    clock.now += 1801  # the shifted rows are now 3601 s old
    report = monitor.report()
    assert report["rows"] == 200 and report["drifted_features"] == []
    clock.now += 1800
    assert monitor.report()["rows"] == 0 and set(psi_by_feature(monitor.report()).values()) == {None}


def test_few_rows_are_never_flagged(spec: ModelSpec) -> None:
    monitor = DriftMonitor(spec, min_rows=100)
    monitor.observe(training_rows(99, shift="petal_width").astype(np.float32))
    report = monitor.report()
    assert report["features"]["petal_width"]["psi"] > 1 and report["drifted_features"] == []
    monitor.observe(training_rows(1, shift="petal_width").astype(np.float32))
    assert monitor.report()["drifted_features"] == ["petal_width"]


def test_a_feature_without_bins_has_no_psi() -> None:
    spec = ModelSpec(
        name="m", version="1", task="regression", targets=("y",), examples=({"a": 1.0, "b": 1.0},),
        features=(Feature("a", 0.0, 2.0, bin_edges=(1.0,), bin_shares=(0.5, 0.5)), Feature("b", 0.0, 2.0)),
    )
    monitor = DriftMonitor(spec)
    monitor.observe(np.array([[0.5, 1.0], [1.5, 1.0]], dtype=np.float32))
    features = monitor.report()["features"]
    assert features["a"]["psi"] == 0.0 and features["a"]["window_shares"] == [0.5, 0.5]
    assert features["b"] == {"psi": None, "drifted": False, "training_shares": [], "window_shares": []}


def test_threads_observing_at_once_lose_no_rows(spec: ModelSpec) -> None:
    monitor = DriftMonitor(spec, window_rows=100_000)
    row = training_rows(1).astype(np.float32)

    def observe() -> None:
        for _ in range(2_000):
            monitor.observe(row)

    threads = [threading.Thread(target=observe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert monitor.report()["rows"] == 16_000


def test_settings_refuse_a_threshold_that_is_not_positive(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="drift_psi_threshold"):
        Settings(model_dir=model_dir, drift_psi_threshold=0)


# -- through the front doors ---------------------------------------------------------------------------


def post_rows(client: httpx.Client | TestClient, rows: np.ndarray, path: str = "/predict/batch") -> None:
    """The rows in batches of BATCH, plus the first few one at a time through /predict (or the function)."""
    single = 5
    for row in as_instances(rows[:single]):
        response = client.post("/predict" if path == "/predict/batch" else path, json=row)
        assert response.status_code == 200, response.text
    instances = as_instances(rows[single:])
    for start in range(0, len(instances), BATCH):
        response = client.post(path, json={"instances": instances[start : start + BATCH]})
        assert response.status_code == 200, response.text


def drift_gauges(text: str) -> dict[str, float]:
    samples = parse_metrics(text)
    return {  # the Iris artifact's (this process's registry also holds the gauges of the models other tests served)
        dict(labels)["feature"]: value
        for (name, labels), value in samples.items()
        if name == "irisserve_feature_drift_psi" and (dict(labels)["model"], dict(labels)["version"]) == ("iris", "1.0.0")
    }


def check_web_drift(client: httpx.Client | TestClient, feature: str) -> None:
    """The issue's scenario against a fresh web service: /model/drift, /model/stats and /metrics agree."""
    post_rows(client, training_rows())
    report = client.get("/model/drift").json()
    assert_stable(report)
    assert report["threshold"] == 0.2 and report["window_max_rows"] == 10_000
    assert all(value < STABLE_PSI for value in drift_gauges(client.get("/metrics").text).values())
    post_rows(client, training_rows(shift=feature, seed=SEED + 1))
    report = client.get("/model/drift").json()
    assert report["rows"] == 2 * ROWS
    assert_only_drifted(report, feature)
    assert client.get("/model/stats").json()["drift"] == report
    gauges = drift_gauges(client.get("/metrics").text)
    assert gauges == pytest.approx(psi_by_feature(report)) and gauges[feature] > DRIFTED_PSI


def test_web_service_in_process(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning"))) as client:
        check_web_drift(client, "petal_length")


def test_web_service_live(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_LOG_LEVEL": "warning"}
    with run_server(uvicorn_command(port), port=port, log_path=tmp_path / "web.log", env=env) as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        check_web_drift(client, "sepal_width")


def test_the_threshold_setting_decides_what_drifted(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning", drift_psi_threshold=1.0))) as client:
        post_rows(client, training_rows())
        post_rows(client, training_rows(shift="petal_width", seed=SEED + 1))
        report = client.get("/model/drift").json()
        assert report["threshold"] == 1.0 and report["features"]["petal_width"]["psi"] > DRIFTED_PSI
        assert report["drifted_features"] == []


def test_the_function_reports_drift_in_its_get_json(model_dir: Path) -> None:
    with function_app(function_env(model_dir)) as client:
        post_rows(client, training_rows(), path="/")
        stats = client.get("/").json()["stats"]
        assert_stable(stats["drift"])
        assert stats["predictions"]["rows"] == ROWS
        post_rows(client, training_rows(shift="sepal_length", seed=SEED + 1), path="/")
        assert_only_drifted(client.get("/").json()["stats"]["drift"], "sepal_length")


def test_both_doors_report_the_same_drift_for_the_same_rows(model_dir: Path) -> None:
    rows = training_rows(shift="petal_length")
    with TestClient(create_app(Settings(model_dir=model_dir, log_level="warning"))) as web, \
            function_app(function_env(model_dir)) as function:
        post_rows(web, rows)
        post_rows(function, rows, path="/")
        assert web.get("/model/drift").json() == function.get("/").json()["stats"]["drift"]
