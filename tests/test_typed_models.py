"""Real tabular models (issue 15), packaged with `irisserve package` and served by real uvicorn and
functions-framework processes: the churn pipeline (imputers + OneHotEncoder over a table with gaps),
LGBMClassifier and XGBRegressor fitted on DataFrames with gaps, HistGradientBoostingClassifier with NaNs, and the
households pipeline, whose integer-coded region and num_children are one-hot encoded (categories of integers).

Every CSV row (gaps sent as JSON null) through /predict, /predict/batch and the function equals the model's own
predict / predict_proba (labels exactly, probabilities within 1e-5, regression within the manifest's tolerance);
an unseen category is predicted and flagged; hostile typed input is refused alike by both doors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
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
    artifact: Path


@pytest.fixture(scope="module", params=list(models_zoo.TYPED_BUILDERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The model packaged by the CLI (refused unless its ONNX export agrees on every row and 100,000 points), served."""
    folder = tmp_path_factory.mktemp(request.param)
    zoo = models_zoo.TYPED_BUILDERS[request.param](folder / "source")
    manifest = package_with_cli(zoo, name=request.param, out=folder / "artifact")
    with both_doors(folder / "artifact", folder, timeout=60) as (web, function):
        yield Served(zoo, manifest, web, function, folder / "artifact")


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
    if served.manifest["name"] == "households":  # one-hot encoded integers are categories; scaled or passed through, integers
        assert (features["region"]["type"], features["region"]["categories"], features["region"]["unknown"]) == ("category", [1, 2, 3, 4, 5], "ignore")
        assert (features["num_children"]["type"], features["num_children"]["categories"], features["num_children"]["unknown"]) == (
            "category", [0, 1, 2, 3, 4], "error")
        assert features["age"]["type"] == features["rooms"]["type"] == "integer" and features["income"]["type"] == "number"
        [example, _] = served.manifest["examples"]  # the first two rows, the categories as JSON integers
        assert example == json_rows(table.head(1))[0] and type(example["region"]) is int


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
    assert_batch_on_both_doors(served, table, json_rows(table), flagged=[["country"], [], ["country"]])


def assert_batch_on_both_doors(served: Served, table: Any, rows: list[dict[str, Any]], *, flagged: list[list[str]]) -> None:
    """``rows`` as one batch through the web service and the function: the model's own answers, ``flagged`` rows."""
    for client, path in ((served.web, "/predict/batch"), (served.function, "/")):
        answer = client.post(path, json={"instances": rows})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for got, want in zip(predictions, expected(served, table), strict=True):
            assert_answer(served, got, want)
        assert [p["out_of_range_features"] for p in predictions] == flagged


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


# --- V2 (Open Inference Protocol): one named input per feature, through the real tritonclient -----------------

KIND_DATATYPES = {"category": "BYTES", "number": "FP64", "integer": "FP64", "boolean": "BOOL"}


def integer_category(feature: dict[str, Any]) -> bool:
    return feature.get("type") == "category" and isinstance(feature["categories"][0], int)


def datatype(feature: dict[str, Any]) -> str:
    """The metadata's datatype for a manifest feature: INT64 for a category of integers, else its kind's."""
    return "INT64" if integer_category(feature) else KIND_DATATYPES[feature.get("type", "number")]


@pytest.fixture(scope="module")
def triton_client(served: Served) -> Iterator[Any]:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=str(served.web.base_url).removeprefix("http://").rstrip("/"))
    yield client
    client.close()


def v2_path(served: Served) -> str:
    return f"/v2/models/{served.manifest['name']}/infer"


def triton_inputs(served: Served, table: pd.DataFrame, *, binary: bool) -> list[Any]:
    """One tritonclient input per feature, as a pandas user builds them: a text column as BYTES (a gap as the empty
    string: tritonclient cannot send null), a whole-number column (a category of integers too) as INT64, any other
    number as FP64 (a gap as NaN)."""
    import tritonclient.http as triton

    inputs = []
    for feature in served.manifest["features"]:
        column = table[feature["name"]]
        if feature.get("type") == "category" and not integer_category(feature):
            values = np.array(["" if pd.isna(value) else str(value) for value in column], dtype=object)
            datatype = "BYTES"
        elif column.dtype.kind in "iu":
            values, datatype = column.to_numpy(dtype=np.int64), "INT64"
        else:
            values, datatype = column.to_numpy(dtype=np.float64), "FP64"
        tensor = triton.InferInput(feature["name"], [len(values)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def assert_v2_answers(served: Served, result: Any, table: pd.DataFrame) -> None:
    want = expected(served, table)
    if served.manifest["task"] == "classification":
        labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label").tolist()]
        assert labels == [label for label, _ in want]
        probabilities = result.as_numpy("probabilities")
        assert np.abs(probabilities - np.asarray([p for _, p in want])).max() <= PROBABILITY_TOLERANCE
    else:
        tolerance = served.manifest["onnx"]["export_check"]["tolerance"]
        assert np.abs(result.as_numpy("predict") - np.asarray(want)).max() <= tolerance


def with_unseen_categories(served: Served, table: pd.DataFrame) -> pd.DataFrame:
    """The table plus, where the model has a category predicted when unseen, three rows with unseen values."""
    features = [f for f in served.manifest["features"] if f.get("type") == "category" and f.get("unknown") == "ignore"]
    if not features:
        return table
    extra = table.head(3).assign(**{f["name"]: [0, 9, 1000] if integer_category(f) else ["JP", "BR", "XX"] for f in features})
    return pd.concat([table, extra], ignore_index=True)


def test_v2_metadata_lists_one_input_per_feature(served: Served, triton_client: Any) -> None:
    metadata = triton_client.get_model_metadata(served.manifest["name"])
    features = served.manifest["features"]
    assert [tensor["name"] for tensor in metadata["inputs"]] == [feature["name"] for feature in features]
    for tensor, feature in zip(metadata["inputs"], features, strict=True):
        assert tensor["datatype"] == datatype(feature)
        assert tensor["shape"] == [-1]
        assert tensor["parameters"]["nullable"] == bool(feature.get("nullable"))
        if feature.get("type") == "category":
            assert tensor["parameters"]["categories"] == feature["categories"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_row_through_v2_with_tritonclient(served: Served, triton_client: Any, binary: bool) -> None:
    """Every CSV row (gaps as NaN and as empty strings), plus unseen categories, in one request equals the model."""
    import tritonclient.http as triton

    table = with_unseen_categories(served, served.zoo.features)
    outputs = ["label", "probabilities"] if served.manifest["task"] == "classification" else ["predict"]
    result = triton_client.infer(
        served.manifest["name"], triton_inputs(served, table, binary=binary),
        outputs=[triton.InferRequestedOutput(name, binary_data=binary) for name in outputs],
    )
    assert_v2_answers(served, result, table)


def test_v2_json_null_is_a_gap_and_answers_equal_predict(served: Served) -> None:
    """JSON null in a nullable feature's data is missing, [N, 1] nested data is taken, and V2 answers /predict's."""
    table = served.zoo.features.head(20).copy()
    nullable = [f["name"] for f in served.manifest["features"] if f.get("nullable")]
    table.loc[table.index[::2], nullable] = np.nan  # every other row: every nullable feature missing
    rows = json_rows(table)
    inputs = [
        {"name": feature["name"], "shape": [len(rows), 1], "datatype": datatype(feature),
         "data": [[row[feature["name"]]] for row in rows]}
        for feature in served.manifest["features"]
    ]
    answer = served.web.post(v2_path(served), json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    batch = served.web.post("/predict/batch", json={"instances": rows}).json()["predictions"]
    outputs = {output["name"]: output["data"] for output in answer.json()["outputs"]}
    if served.manifest["task"] == "classification":
        assert outputs["label"] == [p["prediction"] for p in batch]
        width = len(served.manifest["targets"])
        probabilities = [outputs["probabilities"][i : i + width] for i in range(0, len(outputs["probabilities"]), width)]
        assert probabilities == [list(p["probabilities"].values()) for p in batch]
    else:
        assert outputs["predict"] == [p["prediction"] for p in batch]


def churn_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    datatypes = {"plan": "BYTES", "country": "BYTES", "tenure_months": "INT64", "monthly_fee": "FP64"}
    return [{"name": name, "shape": [len(rows)], "datatype": datatype, "data": [row[name] for row in rows]}
            for name, datatype in datatypes.items()]


@only_churn
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda inputs: inputs[:-1], "Missing input(s) 'monthly_fee'"),
        (lambda inputs: [*inputs, {**inputs[0], "name": "age"}], "Unknown input(s) 'age'"),
        (lambda inputs: [*inputs, inputs[0]], "Input(s) 'plan' sent more than once"),
        (lambda inputs: [{**inputs[0], "shape": [1], "data": inputs[0]["data"][:1]}, *inputs[1:]],
         "Input 'country' has 2 rows but input 'plan' has 1"),
        (lambda inputs: [{**inputs[0], "datatype": "FP64"}, *inputs[1:]], "Input 'plan' has datatype 'FP64'; feature 'plan' is a category"),
        (lambda inputs: [*inputs[:3], {**inputs[3], "datatype": "BYTES"}], "Input 'monthly_fee' has datatype 'BYTES'"),
        (lambda inputs: [*inputs[:3], {**inputs[3], "shape": [2, 2]}], "Input 'monthly_fee' has shape [2, 2]"),
        (lambda inputs: [*inputs[:3], {**inputs[3], "data": [1.0]}], "Input 'monthly_fee' has 1 values; shape [2] needs 2"),
        (lambda inputs: [*inputs[:3], {key: v for key, v in inputs[3].items() if key != "data"}], "Input 'monthly_fee' has no data"),
    ],
    ids=["missing", "unknown", "repeated", "mismatched-n", "fp64-for-category", "bytes-for-number", "shape", "count", "no-data"],
)
def test_v2_typed_request_errors_name_the_input(served: Served, change: Any, needle: str) -> None:
    inputs = change(churn_inputs(json_rows(served.zoo.features.head(2))))
    answer = served.web.post(v2_path(served), json={"inputs": inputs})
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error"} and needle in answer.json()["error"], answer.text


@only_churn
@pytest.mark.parametrize(
    "change",
    [{"plan": 1}, {"plan": None}, {"monthly_fee": "20"}, {"tenure_months": 2.5}, {"country": "x" * 10_000}, {"monthly_fee": True}],
    ids=["number-for-category", "null-non-nullable", "string-for-number", "fraction-for-integer", "long-category", "bool-for-number"],
)
def test_v2_refuses_what_predict_refuses_with_the_same_words(served: Served, change: dict[str, Any]) -> None:
    row = {**json_rows(served.zoo.features.head(1))[0], **change}
    predict = served.web.post("/predict", json=row)
    assert predict.status_code == 422
    [error] = predict.json()["detail"]
    answer = served.web.post(v2_path(served), json={"inputs": churn_inputs([row])})
    assert answer.status_code == 400, answer.text
    name = next(iter(change))
    assert answer.json()["error"].startswith(f"Input {name!r} row 0: {error['msg']}"), answer.text
    assert len(answer.content) < 2000


@only_churn
def test_v2_nan_for_a_non_nullable_number_is_refused(served: Served) -> None:
    inputs = churn_inputs(json_rows(served.zoo.features.head(1)))
    inputs[2] = {**inputs[2], "datatype": "FP64", "data": ["__nan__"]}  # tenure_months: JSON has no NaN, Python's json does
    body = json.dumps({"inputs": inputs}).replace('"__nan__"', "NaN")
    answer = served.web.post(v2_path(served), content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert "Input 'tenure_months' row 0" in answer.json()["error"] and "finite number" in answer.json()["error"]


@only_churn
@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\x05\x00\x00\x00pro", "not 1 BYTES values"),  # a length past the end
        (b"\x03\x00\x00\x00pro\x00", "not 1 BYTES values"),  # bytes left over
        (b"\x02\x00\x00\x00\xff\xfe", "element 0 is not UTF-8 text"),
    ],
    ids=["short", "trailing", "not-utf8"],
)
def test_v2_bad_binary_bytes_are_400(served: Served, raw: bytes, needle: str) -> None:
    rows = json_rows(served.zoo.features.head(1))
    inputs = churn_inputs(rows)
    del inputs[0]["data"]
    inputs[0]["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": inputs}).encode()
    answer = served.web.post(v2_path(served), content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 400, answer.text
    assert "Input 'plan'" in answer.json()["error"] and needle in answer.json()["error"]


@only_churn
def test_v2_errors_reach_tritonclient(served: Served, triton_client: Any) -> None:
    from tritonclient.utils import InferenceServerException

    table = served.zoo.features.head(2).assign(tenure_months=[1.5, 2.0])
    with pytest.raises(InferenceServerException, match="Input 'tenure_months' row 0") as caught:
        triton_client.infer("churn", triton_inputs(served, table, binary=True))
    assert caught.value.status() == "400"


def test_v2_openapi_example_is_one_input_per_feature_and_is_answered(served: Served) -> None:
    operation = served.web.get("/openapi.json").json()["paths"]["/v2/models/{model_name}/infer"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    [example] = schema["examples"]
    assert [tensor["name"] for tensor in example["inputs"]] == [feature["name"] for feature in served.manifest["features"]]
    assert "One tensor per feature" in schema["properties"]["inputs"]["description"]
    answer = served.web.post(v2_path(served), json=example)
    assert answer.status_code == 200, answer.text


# --- Categories of integers (the households pipeline): integer columns the model one-hot encodes -------------------

only_households = pytest.mark.parametrize("served", ["households"], indirect=True)


def households_rows(served: Served, **changes: list[Any]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    table = served.zoo.features.head(3).assign(**changes)
    return table, json_rows(table)


@only_households
def test_integer_categories_are_int64_onnx_inputs_and_the_export_agrees(served: Served) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(served.artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in session.get_inputs()} == {
        "region": "tensor(int64)", "num_children": "tensor(int64)", "age": "tensor(float)", "rooms": "tensor(float)", "income": "tensor(float)",
    }
    check = served.manifest["onnx"]["export_check"]
    assert check["label_mismatches"] == 0 and check["rows_checked"] >= 100_000


@only_households
def test_an_unseen_integer_is_predicted_and_flagged_where_the_encoder_ignores_it(served: Served) -> None:
    table, rows = households_rows(served, region=[9, 3, 0])
    assert_batch_on_both_doors(served, table, rows, flagged=[["region"], [], ["region"]])


@only_households
def test_a_whole_float_is_the_integer(served: Served) -> None:
    table, rows = households_rows(served)
    floats = [{**row, "region": float(row["region"]), "num_children": float(row["num_children"])} for row in rows]
    answer = served.web.post("/predict/batch", json={"instances": floats})
    assert answer.status_code == 200, answer.text
    assert answer.content == served.web.post("/predict/batch", json={"instances": rows}).content


@only_households
@pytest.mark.parametrize(
    ("change", "error_type", "message"),
    [
        ({"num_children": 7}, "enum", "Input should be one of the training data's categories: 0, 1, 2, 3, 4"),
        ({"num_children": 2.5}, "int_from_float",
         "Input should be a valid integer, got a number with a fractional part; send one of the training data's categories: 0, 1, 2, 3, 4"),
        ({"num_children": True}, "int_type",
         "Input should be a JSON integer (not a string or true/false): send one of the training data's categories: 0, 1, 2, 3, 4"),
        ({"num_children": "2"}, "int_type",
         "Input should be a JSON integer (not a string or true/false): send one of the training data's categories: 0, 1, 2, 3, 4"),
        ({"region": "north"}, "int_type",
         "Input should be a JSON integer (not a string or true/false): send an integer, such as one of the training data's "
         "categories: 1, 2, 3, 4, 5"),
        ({"region": 0.5}, "int_from_float",
         "Input should be a valid integer, got a number with a fractional part; send an integer, such as one of the training "
         "data's categories: 1, 2, 3, 4, 5"),
        ({"region": None}, "int_type",
         "Input should be a JSON integer (not a string or true/false): send an integer, such as one of the training data's "
         "categories: 1, 2, 3, 4, 5"),
        ({"region": 2**63}, "int_type",
         "Input should be an integer within int64: send an integer, such as one of the training data's categories: 1, 2, 3, 4, 5"),
    ],
    ids=["unseen-where-refused", "fraction", "bool", "string-of-a-value", "string", "fraction-where-unseen-predicted", "null", "past-int64"],
)
def test_integer_categories_refuse_other_json_saying_what_to_send(
    served: Served, change: dict[str, Any], error_type: str, message: str
) -> None:
    row = {**json_rows(served.zoo.features.head(1))[0], **change}
    web = served.web.post("/predict", json=row)
    function = served.function.post("/", json=row)
    assert web.status_code == function.status_code == 422
    assert web.content == function.content
    [error] = web.json()["detail"]
    assert (error["type"], error["loc"], error["msg"]) == (error_type, ["body", next(iter(change))], message)


@only_households
def test_openapi_and_inputs_give_integer_categories(served: Served) -> None:
    schema = served.web.get("/openapi.json").json()["components"]["schemas"]["HouseholdsFeatures"]["properties"]
    assert (schema["num_children"]["type"], schema["num_children"]["enum"]) == ("integer", [0, 1, 2, 3, 4])
    assert (schema["region"]["type"], schema["region"]["examples"]) == ("integer", [1, 2, 3, 4, 5])
    assert "enum" not in schema["region"]  # unseen regions are predicted: not an enum
    assert schema["age"]["type"] == "number" and "enum" not in schema["age"]
    inputs = {feature["name"]: feature for feature in served.web.get("/model/inputs").json()["features"]}
    assert (inputs["region"]["kind"], inputs["region"]["categories"]) == ("category", [1, 2, 3, 4, 5])
    assert inputs["age"]["kind"] == "integer" and inputs["age"]["categories"] is None


@only_households
def test_drift_over_integer_categories_counts_shares_and_unseen(served: Served) -> None:
    def window() -> tuple[np.ndarray, dict[str, Any]]:
        """The window's rows per region bin (1..5, then unseen): the other tests' rows are in it too."""
        report = served.web.get("/model/drift").json()
        drift = report["features"]["region"]
        return np.rint(np.asarray(drift["window_shares"] or [0.0] * 6) * report["rows"]), drift

    before, _ = window()
    row = json_rows(served.zoo.features.head(1))[0]
    instances = [{**row, "region": 2}] * 600 + [{**row, "region": 42}] * 400
    assert served.web.post("/predict/batch", json={"instances": instances}).status_code == 200
    after, drift = window()
    assert (after - before).tolist() == [0, 600, 0, 0, 0, 400]  # region 2's bin, and the unseen one
    training = served.manifest["features"][0]["bins"]["shares"]
    assert drift["training_shares"] == [round(share, 4) for share in training] and training[-1] == 0.0
    assert drift["psi"] > 0.2


@only_households
def test_v2_takes_integer_categories_as_int64_or_whole_fp64_and_refuses_bytes(served: Served) -> None:
    table = served.zoo.features.head(4).assign(region=[1, 9, 5, 2])
    rows = json_rows(table)

    def inputs(datatypes: dict[str, str], values: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
        return [
            {"name": f["name"], "shape": [len(rows)], "datatype": datatypes.get(f["name"], datatype(f)),
             "data": (values or {}).get(f["name"], [row[f["name"]] for row in rows])}
            for f in served.manifest["features"]
        ]

    batch = served.web.post("/predict/batch", json={"instances": rows}).json()["predictions"]
    for body in (inputs({}), inputs({"region": "FP64"}, {"region": [1.0, 9.0, 5.0, 2.0]})):
        answer = served.web.post(v2_path(served), json={"inputs": body})
        assert answer.status_code == 200, answer.text
        assert next(o["data"] for o in answer.json()["outputs"] if o["name"] == "label") == [p["prediction"] for p in batch]
    refused = served.web.post(v2_path(served), json={"inputs": inputs({"region": "BYTES"}, {"region": ["1", "9", "5", "2"]})})
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "Input 'region' has datatype 'BYTES'; feature 'region' is a category coded as integers: send one of ['INT64', 'FP64', 'FP32']."
    )
    fraction = served.web.post(v2_path(served), json={"inputs": inputs({"num_children": "FP64"}, {"num_children": [0.5, 1, 2, 3]})})
    assert fraction.status_code == 400
    assert fraction.json()["error"].startswith("Input 'num_children' row 0: Input should be a valid integer, got a number with a fractional part")
