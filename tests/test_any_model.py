"""Bring your own model: packaged with `irisserve package`, served by real uvicorn and functions-framework
processes, every CSV row's answer equal to scikit-learn's own.

Three models besides Iris: wine (RandomForestClassifier, 13 features, 3 classes), diabetes
(GradientBoostingRegressor, 10 features) and a Pipeline(StandardScaler, LogisticRegression) on the
breast-cancer data, whose feature names have spaces. For each: /predict row by row, /predict/batch, V2
infer and the function agree with ``predict`` / ``predict_proba`` on that row (labels equal, probabilities
within 1e-5, regression values within the tolerance the manifest states), /openapi.json lists the
model's features, and a missing or unknown feature gets a 422 naming it, from both doors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest

import models_zoo
from support import both_doors, package_with_cli

IRISSERVE = str(Path(sys.executable).parent / "irisserve")
PROBABILITY_TOLERANCE = 1e-5


class Served(NamedTuple):
    zoo: models_zoo.ZooModel
    artifact: Path
    manifest: dict[str, Any]
    web: httpx.Client
    function: httpx.Client
    package_seconds: float


@pytest.fixture(scope="module", params=list(models_zoo.BUILDERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The model packaged by the CLI, then served by uvicorn and by functions-framework, on loopback."""
    folder = tmp_path_factory.mktemp(request.param)
    zoo, out = models_zoo.BUILDERS[request.param](folder / "source"), folder / "artifact"
    started = time.perf_counter()
    manifest = package_with_cli(zoo, name=request.param, out=out, version="2.1.0")
    package_seconds = time.perf_counter() - started
    with both_doors(out, folder) as (web, function):
        yield Served(zoo, out, manifest, web, function, package_seconds)
    print(f"\n{request.param}: packaged in {package_seconds:.2f} s")


def rows_of(served: Served) -> list[dict[str, float]]:
    return served.zoo.features.to_dict(orient="records")


def expected_answers(served: Served) -> list[Any]:
    """scikit-learn's own answers on every CSV row: (label, probabilities) or the regression value."""
    estimator, features = served.zoo.estimator, served.zoo.features
    if served.manifest["task"] == "classification":
        labels = [str(label) for label in estimator.predict(features)]
        return list(zip(labels, estimator.predict_proba(features).tolist()))
    return estimator.predict(features).tolist()


def regression_tolerance(served: Served, expected: float) -> float:
    """The absolute difference the manifest allows this model's float32 arithmetic (docs/artifact.md)."""
    return served.manifest["onnx"]["export_check"]["tolerance"]


def assert_answer(served: Served, answer: dict[str, Any], expected: Any) -> None:
    assert answer["model_version"] == "2.1.0"
    if served.manifest["task"] == "classification":
        label, probabilities = expected
        assert answer["prediction"] == label
        classes = served.manifest["targets"]
        assert list(answer["probabilities"]) == classes
        for got, want in zip(answer["probabilities"].values(), probabilities, strict=True):
            assert abs(got - want) <= PROBABILITY_TOLERANCE
        assert answer["confidence"] == answer["probabilities"][label]
    else:
        assert set(answer) == {"prediction", "model_version", "out_of_range_features"}
        assert abs(answer["prediction"] - expected) <= regression_tolerance(served, expected), (answer, expected)
    assert answer["out_of_range_features"] == []  # training rows are inside the training range


def test_every_row_one_at_a_time_on_both_doors(served: Served) -> None:
    for row, expected in zip(rows_of(served), expected_answers(served), strict=True):
        web = served.web.post("/predict", json=row)
        function = served.function.post("/", json=row)
        assert web.status_code == function.status_code == 200, (web.text, function.text)
        assert web.content == function.content
        assert_answer(served, web.json(), expected)


def test_every_row_in_one_batch_on_both_doors(served: Served) -> None:
    rows = rows_of(served)
    web = served.web.post("/predict/batch", json={"instances": rows})
    function = served.function.post("/", json={"instances": rows})
    assert web.status_code == function.status_code == 200
    assert web.content == function.content
    for answer, expected in zip(web.json()["predictions"], expected_answers(served), strict=True):
        assert_answer(served, answer, expected)


def test_v2_infer_on_every_row(served: Served) -> None:
    features = served.zoo.features
    name = served.manifest["name"]
    request = {"inputs": [{"name": "input", "shape": list(features.shape), "datatype": "FP64", "data": features.to_numpy().tolist()}]}
    response = served.web.post(f"/v2/models/{name}/infer", json=request)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    expected = expected_answers(served)
    if served.manifest["task"] == "classification":
        assert outputs["label"]["data"] == [label for label, _ in expected]
        probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
        assert np.abs(probabilities - np.asarray([p for _, p in expected])).max() <= PROBABILITY_TOLERANCE
    else:
        assert list(outputs) == ["predict"] and outputs["predict"]["shape"] == [len(features)]
        for got, want in zip(outputs["predict"]["data"], expected, strict=True):
            assert abs(got - want) <= regression_tolerance(served, want)
    metadata = served.web.get(f"/v2/models/{name}").json()
    assert metadata["inputs"][0]["shape"] == [-1, features.shape[1]]
    assert metadata["inputs"][0]["parameters"]["feature_names"] == list(features.columns)


def test_openapi_and_model_info_describe_the_model(served: Served) -> None:
    columns = list(served.zoo.features.columns)
    schemas = served.web.get("/openapi.json").json()["components"]["schemas"]
    (request_schema,) = [schema for name, schema in schemas.items() if name.endswith("Features")]
    assert list(request_schema["properties"]) == columns == request_schema["required"]
    (example,) = request_schema["examples"]
    assert served.web.post("/predict", json=example).status_code == 200
    info = served.web.get("/model/info").json()
    assert info["model_name"] == served.manifest["name"] and info["feature_names"] == columns
    assert info["task"] == served.manifest["task"]
    assert served.function.get("/").json()["model"] == info


def test_missing_and_unknown_features_are_named_by_both_doors(served: Served) -> None:
    row = rows_of(served)[0]
    first = next(iter(row))
    cases = {"missing": ({k: v for k, v in row.items() if k != first}, first), "unknown": ({**row, "colour": 1.0}, "colour")}
    for kind, (body, named) in cases.items():
        web = served.web.post("/predict", json=body)
        function = served.function.post("/", json=body)
        assert web.status_code == function.status_code == 422, kind
        assert web.content == function.content
        (error,) = web.json()["detail"]
        assert error["loc"] == ["body", named]
        assert error["type"] == ("missing" if kind == "missing" else "extra_forbidden")


def test_the_function_bundle_serves_the_model(served: Served, tmp_path: Path) -> None:
    """`irisserve bundle-function --model-dir` ships this artifact; the bundle answers as the web service does."""
    bundle = tmp_path / "bundle"
    result = subprocess.run(
        [IRISSERVE, "bundle-function", "--model-dir", str(served.artifact), "--out", str(bundle)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    row = rows_of(served)[0]
    script = (
        "import json, functions_framework\nfrom starlette.testclient import TestClient\n"
        f"app = functions_framework.create_app(target='predict', source={str(bundle / 'main.py')!r})\n"
        f"print(TestClient(app).post('/', json={row!r}).text)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRISSERVE_") and k != "PYTHONPATH"}
    answer = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().splitlines()[-1] == served.web.post("/predict", json=row).text
