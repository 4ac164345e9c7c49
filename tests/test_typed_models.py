"""Real tabular models (issue 15), packaged with `irisserve package` and served by real uvicorn and
functions-framework processes: the churn pipeline (imputers + OneHotEncoder over a table with gaps),
LGBMClassifier and XGBRegressor fitted on DataFrames with gaps, HistGradientBoostingClassifier with NaNs.

Every CSV row (gaps sent as JSON null) through /predict, /predict/batch and the function equals the model's own
predict / predict_proba (labels exactly, probabilities within 1e-5, regression within the manifest's tolerance);
an unseen category is predicted and flagged; hostile typed input is refused alike by both doors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import numpy as np
import pandas as pd
import pytest

import models_zoo
from support import both_doors, package_with_cli

PROBABILITY_TOLERANCE = 1e-5


class Served(NamedTuple):
    zoo: models_zoo.ZooModel
    manifest: dict[str, Any]
    web: httpx.Client
    function: httpx.Client


@pytest.fixture(scope="module", params=list(models_zoo.TYPED_BUILDERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The model packaged by the CLI (refused unless its ONNX export agrees on every row and 100,000 points), served."""
    folder = tmp_path_factory.mktemp(request.param)
    zoo = models_zoo.TYPED_BUILDERS[request.param](folder / "source")
    manifest = package_with_cli(zoo, name=request.param, out=folder / "artifact")
    with both_doors(folder / "artifact", folder, timeout=60) as (web, function):
        yield Served(zoo, manifest, web, function)


def json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table's rows as a client sends them: a gap is null."""
    return [{key: None if not isinstance(value, str) and pd.isna(value) else value for key, value in row.items()}
            for row in table.astype(object).to_dict(orient="records")]


def expected(served: Served, table: pd.DataFrame) -> list[Any]:
    estimator = served.zoo.estimator
    if served.manifest["task"] == "classification":
        return list(zip([str(label) for label in estimator.predict(table)], estimator.predict_proba(table).tolist(), strict=True))
    return estimator.predict(table).tolist()


def assert_answer(served: Served, answer: dict[str, Any], want: Any) -> None:
    if served.manifest["task"] == "classification":
        label, probabilities = want
        assert answer["prediction"] == label
        assert np.abs(np.asarray(list(answer["probabilities"].values())) - probabilities).max() <= PROBABILITY_TOLERANCE
    else:
        assert abs(answer["prediction"] - want) <= served.manifest["onnx"]["export_check"]["tolerance"]


def test_the_manifest_types_the_features(served: Served) -> None:
    features = {feature["name"]: feature for feature in served.manifest["features"]}
    table = served.zoo.features
    assert [name for name, feature in features.items() if feature.get("nullable")] == [c for c in table if table[c].isna().any()]
    if served.manifest["name"] == "churn":
        assert features["plan"]["type"] == "category" and features["plan"]["categories"] == ["basic", "pro"]
        assert features["country"]["unknown"] == "ignore" and features["tenure_months"]["type"] == "integer"
        assert served.manifest["onnx"]["inputs"] == list(table.columns)


def test_every_row_one_at_a_time_on_both_doors(served: Served) -> None:
    table = served.zoo.features
    for row, want in zip(json_rows(table), expected(served, table), strict=True):
        web = served.web.post("/predict", json=row)
        function = served.function.post("/", json=row)
        assert web.status_code == function.status_code == 200, (row, web.text)
        assert web.content == function.content
        assert_answer(served, web.json(), want)


def test_every_row_in_one_batch_on_both_doors(served: Served) -> None:
    table = served.zoo.features
    rows = json_rows(table)
    web = served.web.post("/predict/batch", json={"instances": rows})
    function = served.function.post("/", json={"instances": rows})
    assert web.status_code == function.status_code == 200, web.text
    assert web.content == function.content
    for answer, want in zip(web.json()["predictions"], expected(served, table), strict=True):
        assert_answer(served, answer, want)


def test_an_omitted_nullable_feature_is_missing(served: Served) -> None:
    table = served.zoo.features
    nullable = next(column for column in table if table[column].isna().any())
    row = json_rows(table.head(1))[0]
    omitted = {key: value for key, value in row.items() if key != nullable}
    gap = table.head(1).copy()
    gap[nullable] = np.nan
    for client, path in ((served.web, "/predict"), (served.function, "/")):
        answer = client.post(path, json=omitted)
        assert answer.status_code == 200, answer.text
        assert_answer(served, answer.json(), expected(served, gap)[0])


# The tests below need categories: the churn pipeline's alone (indirect: the served fixture with that one model).
only_churn = pytest.mark.parametrize("served", ["churn"], indirect=True)


@only_churn
def test_an_unseen_category_is_predicted_and_flagged(served: Served) -> None:
    table = served.zoo.features.head(3).assign(country=["JP", None, "BR"])
    rows = json_rows(table)
    for client, path in ((served.web, "/predict/batch"), (served.function, "/")):
        answer = client.post(path, json={"instances": rows})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for got, want in zip(predictions, expected(served, table), strict=True):
            assert_answer(served, got, want)
        assert [p["out_of_range_features"] for p in predictions] == [["country"], [], ["country"]]


@only_churn
@pytest.mark.parametrize(
    ("change", "error_type"),
    [
        ({"plan": 1}, "string_type"),  # a number for a category
        ({"plan": None}, "string_type"),  # null for a non-nullable feature
        ({"monthly_fee": "20"}, "float_type"),  # a string for a number
        ({"tenure_months": 2.5}, "int_from_float"),
        ({"country": "x" * 10_000}, "string_too_long"),  # a 10 KB category string
    ],
)
def test_hostile_typed_input_is_refused_alike(served: Served, change: dict[str, Any], error_type: str) -> None:
    row = {**json_rows(served.zoo.features.head(1))[0], **change}
    web = served.web.post("/predict", json=row)
    function = served.function.post("/", json=row)
    assert web.status_code == function.status_code == 422
    assert web.content == function.content
    assert [error["type"] for error in web.json()["detail"]] == [error_type]
    assert len(web.content) < 2000  # the 10 KB string is cut short in the echo


@only_churn
def test_many_distinct_unseen_categories_leave_metrics_bounded(served: Served) -> None:
    row = json_rows(served.zoo.features.head(1))[0]
    before = len(served.web.get("/metrics").content)
    for batch in range(100):  # 100,000 distinct unseen countries
        instances = [{**row, "country": f"c{batch}-{i}"} for i in range(1000)]
        assert served.web.post("/predict/batch", json={"instances": instances}).status_code == 200
    metrics = served.web.get("/metrics").text
    assert "c99-999" not in metrics and "c0-0" not in metrics
    assert len(metrics) < before + 5000  # counters change, no label per value
    drift = served.web.get("/model/drift").json()["features"]["country"]
    assert drift["window_shares"][-1] > 0.99  # the unseen share


def test_v2_refuses_a_typed_model_instead_of_misreading_its_tensor(served: Served) -> None:
    """The V2 route's one FP32 tensor cannot carry a category or a gap: such a model's infer is a 400 naming the
    features and the route to use, never a prediction from category codes sent as numbers."""
    typed = [f["name"] for f in served.manifest["features"] if f.get("type") in ("category", "boolean") or f.get("nullable")]
    width = len(served.manifest["features"])
    body = {"inputs": [{"name": "input", "shape": [1, width], "datatype": "FP32", "data": [1.0] * width}]}
    answer = served.web.post(f"/v2/models/{served.manifest['name']}/infer", json=body)
    assert typed and answer.status_code == 400, answer.text
    assert "POST /predict" in answer.json()["error"] and repr(typed[0]) in answer.json()["error"]
