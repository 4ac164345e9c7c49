"""The web service's public API, in process (TestClient) and through a real uvicorn process (httpx)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from irisserve.web.app import create_app
from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from support import (
    INVALID_SINGLE,
    REPO_ROOT,
    SEED_ANSWER,
    SEED_EXAMPLE,
    RunningServer,
    free_port,
    run_server,
    uvicorn_command,
    with_value,
)



@pytest.fixture(scope="module", params=["in-process", "uvicorn"])
def client(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[httpx.Client]:
    """The same tests run against TestClient and against a live uvicorn process."""
    if request.param == "in-process":
        with TestClient(create_app(Settings(model_dir=model_dir))) as test_client:
            yield test_client
    else:
        server: RunningServer = request.getfixturevalue("live_server")
        with httpx.Client(base_url=server.base_url, timeout=10) as live_client:
            yield live_client



def test_health_reports_loaded_model(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("status", "model_loaded", "model_version")} == {
        "status": "healthy", "model_loaded": True, "model_version": "1.0.0",
    }
    assert {"imports_done", "model_loaded", "warmed_up", "ready"} <= set(body["startup"])


def test_predict_seed_example(client: httpx.Client) -> None:
    response = client.post("/predict", json=SEED_EXAMPLE)
    assert response.status_code == 200
    assert response.json() == SEED_ANSWER


def test_predict_virginica(client: httpx.Client) -> None:
    body = client.post("/predict", json={"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}).json()
    assert body["prediction"] == "virginica" and body["prediction_id"] == 2
    assert body["confidence"] == body["probabilities"]["virginica"] > 0.5


def test_integers_are_numbers_too(client: httpx.Client) -> None:
    response = client.post("/predict", json={"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 1})
    assert response.status_code == 200


def test_out_of_range_input_is_predicted_and_flagged(client: httpx.Client) -> None:
    body = client.post("/predict", json=with_value("petal_width", 30.0)).json()
    assert body["out_of_range_features"] == ["petal_width"]
    assert body["prediction"] in {"setosa", "versicolor", "virginica"}




@pytest.mark.parametrize("case", INVALID_SINGLE, ids=list(INVALID_SINGLE))
def test_predict_rejects_invalid_input_with_fastapi_422(client: httpx.Client, case: str) -> None:
    payload, field, error_type = INVALID_SINGLE[case]
    response = client.post("/predict", json=payload)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(e["loc"] == ["body", field] and e["type"] == error_type and e["msg"] for e in detail), detail


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_predict_rejects_non_finite_numbers(client: httpx.Client, literal: str) -> None:
    """Python's JSON parser accepts NaN/Infinity; they must give a 422, not a 500 or a prediction."""
    body = '{"sepal_length": %s, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}' % literal
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "sepal_length"] and error["type"] == "finite_number"
    assert isinstance(error["input"], str) and not math.isfinite(float(error["input"]))


@pytest.mark.parametrize("body", ["", "not json", "[1, 2, 3, 4]", '"text"', '{"sepal_length": 5.1'])
def test_predict_rejects_bodies_that_are_not_an_object(client: httpx.Client, body: str) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"]


def test_batch_predicts_every_row_in_order(client: httpx.Client) -> None:
    rows = [SEED_EXAMPLE, {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]
    response = client.post("/predict/batch", json={"instances": rows})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1.0.0"
    assert [p["prediction"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert body["predictions"][0] == SEED_ANSWER


def test_batch_names_the_index_of_an_invalid_row(client: httpx.Client) -> None:
    rows = [SEED_EXAMPLE, SEED_EXAMPLE, with_value("sepal_width", -3.0)]
    response = client.post("/predict/batch", json={"instances": rows})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "instances", 2, "sepal_width"]


def test_batch_rejects_empty_and_missing_instances(client: httpx.Client) -> None:
    assert client.post("/predict/batch", json={"instances": []}).json()["detail"][0]["type"] == "too_short"
    assert client.post("/predict/batch", json={}).json()["detail"][0]["loc"] == ["body", "instances"]


def test_batch_over_the_limit_says_the_limit(client: httpx.Client) -> None:
    response = client.post("/predict/batch", json={"instances": [SEED_EXAMPLE] * 1001})
    assert response.status_code == 413
    assert "limit is 1000" in response.json()["detail"]


def test_batch_at_the_limit_is_accepted(client: httpx.Client) -> None:
    response = client.post("/predict/batch", json={"instances": [SEED_EXAMPLE] * 1000})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


def test_model_info(client: httpx.Client, model_dir: Path) -> None:
    body = client.get("/model/info").json()
    assert body["model_type"] == "RandomForestClassifier"
    assert body["model_version"] == "1.0.0"
    assert body["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert body["target_names"] == ["setosa", "versicolor", "virginica"]
    assert body["n_estimators"] == 100
    assert body["backend"] == "onnx"
    assert 0.85 <= body["metrics"]["cv_accuracy_mean"] <= 1
    import hashlib

    assert body["artifact_sha256"] == hashlib.sha256((model_dir / "manifest.json").read_bytes()).hexdigest()
    assert len(body["files"]["model.onnx"]["sha256"]) == 64


def test_docs_and_redoc_are_served(client: httpx.Client) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]


def test_openapi_examples_work_when_pasted(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    (single,) = schemas["IrisFeatures"]["examples"]
    (batch,) = schemas["BatchRequest"]["examples"]
    assert client.post("/predict", json=single).json() == SEED_ANSWER
    assert client.post("/predict/batch", json=batch).status_code == 200


def test_unknown_route_and_wrong_method_are_json_errors(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    response = client.get("/predict")
    assert response.status_code == 405 and response.json()["detail"]


def test_unloaded_model_answers_503(model_dir: Path) -> None:
    app = create_app(Settings(model_dir=model_dir), predictor=Predictor(model_dir))
    test_client = TestClient(app)  # not entered: the lifespan (model load) does not run
    health = test_client.get("/health")
    assert health.status_code == 503
    assert health.json()["model_loaded"] is False and "not loaded" in health.json()["status"]
    assert test_client.post("/predict", json=SEED_EXAMPLE).status_code == 503
    assert test_client.get("/model/info").status_code == 503


def test_small_batch_limit_setting_is_honoured(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, max_batch_size=2))) as test_client:
        response = test_client.post("/predict/batch", json={"instances": [SEED_EXAMPLE] * 3})
    assert response.status_code == 413
    assert "3 instances; the limit is 2" in response.json()["detail"]


def test_sklearn_backend_serves_the_same_answers(model_dir: Path) -> None:
    from sklearn.datasets import load_iris

    rows = [dict(zip(SEED_EXAMPLE, map(float, row))) for row in load_iris().data]
    answers = {}
    for backend in ("onnx", "sklearn"):
        with TestClient(create_app(Settings(model_dir=model_dir, backend=backend))) as test_client:
            answers[backend] = test_client.post("/predict/batch", json={"instances": rows}).json()["predictions"]
            assert test_client.get("/model/info").json()["backend"] == backend
    for onnx_row, sklearn_row in zip(answers["onnx"], answers["sklearn"], strict=True):
        assert onnx_row["prediction"] == sklearn_row["prediction"]
        assert onnx_row["confidence"] == pytest.approx(sklearn_row["confidence"], abs=1e-5)


def test_seed_entry_point_uvicorn_main_app(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"IRISSERVE_MODEL_DIR": str(model_dir)}
    with run_server(uvicorn_command(port, "main:app"), port=port, log_path=tmp_path / "log", env=env) as server:
        assert httpx.post(server.base_url + "/predict", json=SEED_EXAMPLE).json() == SEED_ANSWER


def test_irisserve_serve_honours_port_and_sklearn_backend(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "IRISSERVE_MODEL_DIR": str(model_dir), "IRISSERVE_BACKEND": "sklearn"}
    command = [str(Path(sys.executable).parent / "irisserve"), "serve"]
    with run_server(command, port=port, log_path=tmp_path / "log", env=env) as server:
        assert httpx.get(server.base_url + "/model/info").json()["backend"] == "sklearn"
        assert httpx.post(server.base_url + "/predict", json=SEED_EXAMPLE).json() == SEED_ANSWER


def test_irisserve_serve_port_option_wins_over_the_environment(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    command = [str(Path(sys.executable).parent / "irisserve"), "serve", "--port", str(port), "--model-dir", str(model_dir)]
    with run_server(command, port=port, log_path=tmp_path / "log", env={"PORT": str(free_port())}) as server:
        assert httpx.post(server.base_url + "/predict", json=SEED_EXAMPLE).json() == SEED_ANSWER


def test_server_refuses_to_start_with_a_tampered_artifact(artifact_copy: Path) -> None:
    (artifact_copy / "model.onnx").write_bytes(b"not the model")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "irisserve"), "serve"],
        env={"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "IRISSERVE_MODEL_DIR": str(artifact_copy)},
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert result.returncode != 0
    assert "model.onnx" in result.stderr and "integrity check" in result.stderr


# What the model-agnostic routes changed in the Iris service's OpenAPI document, and why. Everything else
# (paths, request and response schemas, examples, error answers) is as it was before the change.
OPENAPI_CHANGES = {
    # Descriptions generated from the spec, for any model.
    ("info", "description"),
    ("paths", "/predict", "post", "description"),
    ("paths", "/predict/batch", "post", "description"),
    ("paths", "/model/info", "get", "description"),
    ("components", "schemas", "IrisFeatures", "description"),
    ("components", "schemas", "BatchRequest", "description"),
    *[
        ("paths", infer, "post", *where)
        for infer in ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")
        for where in [
            ("description",),
            ("requestBody", "content", "application/json", "schema", "properties", "inputs", "description"),
            ("requestBody", "content", "application/json", "schema", "properties", "outputs", "description"),
        ]
    ],
    # /model/info says whether the model is a classifier or a regressor.
    ("components", "schemas", "ModelInfo", "properties", "task"),
    ("components", "schemas", "ModelInfo", "properties", "target_names", "description"),
    ("components", "schemas", "ModelInfo", "required"),
    # The response's prediction is an enum of the classes (issue 15); /model/info says where its metrics come from.
    ("components", "schemas", "PredictionResponse", "properties", "prediction", "enum"),
    ("components", "schemas", "ModelInfo", "properties", "metrics_source"),
    # The model page (GET /) and the JSON it reads (docs/ui.md): new paths and their own schemas, nothing else touched.
    *[("paths", path) for path in ("/", "/model/inputs", "/model/stats", "/model/drift")],
    *[
        ("components", "schemas", name)
        for name in ("ModelInputs", "FeatureInput", "StatsResponse", "RequestStats", "RouteStats", "PredictionStats",
                     "ValueSummary", "OutOfRangeStats", "DriftReport", "FeatureDrift")
    ],
}


# The model repository (issue 17): every model at /models/{name}/..., Triton's repository extension; nothing else touched.
OPENAPI_CHANGES |= {
    *[("paths", path) for path in (
        "/models", "/models/{model_name}/openapi.json", "/v2/repository/index",
        "/v2/repository/models/{model_name}/load", "/v2/repository/models/{model_name}/unload",
    )],
    *[
        ("paths", base + suffix)
        for base in ("/models/{model_name}", "/models/{model_name}/versions/{model_version}")
        for suffix in ("/predict", "/predict/batch", "/info", "/inputs", "/stats")
    ],
    *[
        ("components", "schemas", name)
        for name in ("ServedModels", "ServedModelSummary", "RepositoryIndexRequest", "RepositoryModelRequest",
                     "RepositoryIndexEntry", "RepositoryChange")
    ],
}


def test_openapi_is_as_before_but_for_the_listed_changes(client: httpx.Client) -> None:
    before = json.loads((REPO_ROOT / "tests" / "golden" / "openapi-before-any-model.json").read_text())
    now = client.get("/openapi.json").json()
    for document in (before, now):
        for path in OPENAPI_CHANGES:
            parent = document
            for key in path[:-1]:
                parent = parent.get(key, {})
            parent.pop(path[-1], None)
    assert now == before
