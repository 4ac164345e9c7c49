"""Open Inference Protocol (V2): the real tritonclient against a live server, and every error over raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from tritonclient.utils import InferenceServerException

from irisserve.core.errors import BadRequestError, PayloadTooLargeError
from irisserve.core.settings import Settings
from irisserve.core.spec import Feature, ModelSpec
from irisserve.ops.lifecycle import begin_draining, end_draining
from irisserve.v2.codec import example_request, model_metadata, typed_rows
from irisserve.v2.models import InferenceRequest
from irisserve.web.app import create_app
from support import RunningServer

FEATURE_NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
MODEL = "iris"
VERSION = "1.0.0"
TARGETS = ["setosa", "versicolor", "virginica"]
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def client(live_server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=live_server.base_url.removeprefix("http://"))
    yield triton_client
    triton_client.close()


@pytest.fixture(scope="module")
def http(live_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=10.0) as session:
        yield session


@pytest.fixture(scope="module")
def iris_rows() -> np.ndarray:
    return load_iris().data


@pytest.fixture(scope="module")
def expected(http: httpx.Client, iris_rows: np.ndarray) -> list[dict[str, Any]]:
    """What /predict answers for every Iris row, one request each."""
    answers = []
    for row in iris_rows.tolist():
        response = http.post("/predict", json=dict(zip(FEATURE_NAMES, row, strict=True)))
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def infer_request(data: Any, *, shape: list[int] | None = None, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    shape = shape if shape is not None else [len(data), 4]
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}], **extra}


# --- tritonclient ---------------------------------------------------------------------------------


def test_server_and_model_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version=VERSION)
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, model_version="9.9.9")


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "irisserve"
    assert metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(MODEL)
    assert metadata == client.get_model_metadata(MODEL, model_version=VERSION)
    assert metadata["name"] == MODEL and metadata["versions"] == [VERSION]
    assert metadata["platform"] == "onnxruntime"
    [tensor] = metadata["inputs"]
    assert (tensor["datatype"], tensor["shape"]) == ("FP32", [-1, 4])
    assert tensor["parameters"]["feature_names"] == list(FEATURE_NAMES)
    assert {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]} == {
        "label": ("BYTES", [-1]),
        "predict": ("INT64", [-1]),
        "probabilities": ("FP64", [-1, 3]),
        "predict_proba": ("FP64", [-1, 3]),
    }
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize(
    ("dtype", "datatype", "binary"),
    [(np.float32, "FP32", False), (np.float64, "FP64", False), (np.float32, "FP32", True), (np.float64, "FP64", True)],
    ids=["fp32-json", "fp64-json", "fp32-binary", "fp64-binary"],
)
def test_infer_matches_predict_for_every_iris_row(
    client: triton.InferenceServerClient,
    iris_rows: np.ndarray,
    expected: list[dict[str, Any]],
    dtype: type,
    datatype: str,
    binary: bool,
) -> None:
    tensor = triton.InferInput("input", list(iris_rows.shape), datatype)
    tensor.set_data_from_numpy(iris_rows.astype(dtype), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "predict", "probabilities")]
    result = client.infer(MODEL, [tensor], model_version=VERSION, outputs=outputs, request_id="req-1")

    assert result.get_response()["id"] == "req-1"
    assert result.get_response()["model_version"] == VERSION
    labels = [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label").tolist()]
    assert labels == [answer["prediction"] for answer in expected]
    assert result.as_numpy("predict").tolist() == [answer["prediction_id"] for answer in expected]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(iris_rows), 3)
    assert probabilities.tolist() == [[answer["probabilities"][t] for t in TARGETS] for answer in expected]


def test_infer_with_client_defaults_returns_default_outputs(
    client: triton.InferenceServerClient, iris_rows: np.ndarray, expected: list[dict[str, Any]]
) -> None:
    """tritonclient's defaults: binary input, no outputs named, binary_data_output set."""
    tensor = triton.InferInput("input", [3, 4], "FP64")
    tensor.set_data_from_numpy(iris_rows[[0, 50, 100]])
    result = client.infer(MODEL, [tensor])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "probabilities"]
    assert [label.decode() for label in result.as_numpy("label").tolist()] == [
        expected[i]["prediction"] for i in (0, 50, 100)
    ]
    assert result.as_numpy("predict") is None


def test_infer_errors_reach_the_client_as_messages(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, -1.4, 0.2]], dtype=np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="petal_length.*greater than 0") as caught:
        client.infer(MODEL, [tensor])
    assert caught.value.status() == "400"


# --- Raw HTTP: shapes, outputs and errors -------------------------------------------------------------


def test_json_infer_flat_and_nested_agree(http: httpx.Client) -> None:
    nested = http.post(f"/v2/models/{MODEL}/infer", json=infer_request([ROW, ROW]))
    flat = http.post(f"/v2/models/{MODEL}/infer", json=infer_request(ROW + ROW, shape=[2, 4]))
    assert nested.status_code == flat.status_code == 200
    assert nested.json() == flat.json()
    body = nested.json()
    assert body["model_name"] == MODEL and body["model_version"] == VERSION and "id" not in body
    assert body["outputs"][0] == {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["setosa", "setosa"]}


def test_outputs_are_returned_as_asked(http: httpx.Client) -> None:
    request = infer_request([ROW], outputs=[{"name": "predict_proba"}, {"name": "predict"}])
    response = http.post(f"/v2/models/{MODEL}/versions/{VERSION}/infer", json=request)
    assert response.status_code == 200
    outputs = response.json()["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in outputs] == [
        ("predict_proba", "FP64", [1, 3]),
        ("predict", "INT64", [1]),
    ]
    assert outputs[1]["data"] == [0]


def test_readiness_endpoints(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/v2/models/rose", "Unknown model 'rose'; this server serves 'iris'"),
        ("/v2/models/rose/ready", "Unknown model 'rose'"),
        (f"/v2/models/{MODEL}/versions/2.0.0", "Unknown version '2.0.0' of model 'iris'; the served version is '1.0.0'"),
        (f"/v2/models/{MODEL}/versions/2.0.0/ready", "Unknown version '2.0.0'"),
    ],
)
def test_unknown_model_or_version_is_404(http: httpx.Client, path: str, needle: str) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert needle in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["/v2/models/rose/infer", f"/v2/models/{MODEL}/versions/0.1/infer"], ids=["model", "version"]
)
def test_infer_on_unknown_model_or_version_is_404(http: httpx.Client, path: str) -> None:
    response = http.post(path, json=infer_request([ROW]))
    assert response.status_code == 404
    assert "Unknown" in response.json()["error"]


BAD_REQUESTS: dict[str, tuple[Any, str]] = {
    "wrong-shape": (infer_request(ROW[:3], shape=[1, 3]), "has shape [1, 3]; this model takes [N, 4]"),
    "rank-3": (infer_request([[ROW]], shape=[1, 1, 4]), "this model takes [N, 4]"),
    "zero-rows": (infer_request([], shape=[0, 4]), "N >= 1"),
    "count-mismatch": (infer_request(ROW, shape=[2, 4]), "has 4 values; shape [2, 4] needs 8"),
    "ragged-nested": (infer_request([ROW, ROW[:3]], shape=[2, 4]), "nested data must be 2 lists of 4 numbers"),
    "mixed-nesting": (infer_request([ROW, 1, 2, 3, 4], shape=[2, 4]), "nested data must be"),
    "datatype": (infer_request([ROW], datatype="INT64"), "datatype 'INT64'; this model takes one of ['FP32', 'FP64']"),
    "nan": (json.dumps(infer_request([[5.1, 3.5, 1.4, 0.2]])).replace("0.2", "NaN"), "finite number"),
    "infinity": (json.dumps(infer_request([[5.1, 3.5, 1.4, 0.2]])).replace("5.1", "Infinity"), "finite number"),
    "negative": (infer_request([[5.1, -3.5, 1.4, 0.2]]), "row 0 sepal_width: Input should be greater than 0"),
    "zero": (infer_request([ROW, [5.1, 3.5, 1.4, 0]]), "row 1 petal_width"),
    "string-value": (infer_request([[5.1, "3.5", 1.4, 0.2]]), "valid number"),
    "bool-value": (infer_request([[5.1, True, 1.4, 0.2]]), "valid number"),
    "null-value": (infer_request([[5.1, None, 1.4, 0.2]]), "valid number"),
    "unknown-output": (infer_request([ROW], outputs=[{"name": "logits"}]), "Unknown output(s) ['logits']"),
    "duplicate-output": (infer_request([ROW], outputs=[{"name": "label"}, {"name": "label"}]), "more than once"),
    "two-inputs": ({"inputs": infer_request([ROW])["inputs"] * 2}, "has 2 inputs; this model takes exactly one"),
    "no-inputs": ({"inputs": []}, "has 0 inputs"),
    "missing-inputs": ({"id": "x"}, "inputs: Field required"),
    "no-data": ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}, "has no data"),
    "shape-strings": (infer_request([ROW], shape=["1", "4"]), "inputs.0.shape.0: Input should be a valid integer"),
    "bad-json": ("{not json", "not valid JSON"),
    "empty-body": ("", "request body is empty"),
    "json-array": ("[1, 2]", "valid dictionary"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_400_with_error_message(http: httpx.Client, case: str) -> None:
    payload, needle = BAD_REQUESTS[case]
    content = payload if isinstance(payload, str) else json.dumps(payload)
    response = http.post(
        f"/v2/models/{MODEL}/infer", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert needle in body["error"]


def test_batch_over_limit_is_413(http: httpx.Client) -> None:
    response = http.post(f"/v2/models/{MODEL}/infer", json=infer_request([ROW], shape=[1001, 4]))
    assert response.status_code == 413
    assert "the limit is 1000" in response.json()["error"]


@pytest.mark.parametrize(
    ("header", "body", "needle"),
    [
        ("abc", b"{}", "Inference-Header-Content-Length is 'abc'"),
        ("999", b"{}", "at most the body's 2 bytes"),
        ("2", b"{}rest", "no input declares them"),
    ],
)
def test_bad_binary_framing_is_400(http: httpx.Client, header: str, body: bytes, needle: str) -> None:
    if needle == "no input declares them":
        header_json = json.dumps(infer_request([ROW])).encode()
        body, header = header_json + b"rest", str(len(header_json))
    response = http.post(f"/v2/models/{MODEL}/infer", content=body, headers={"Inference-Header-Content-Length": header})
    assert response.status_code == 400
    assert needle in response.json()["error"]


def test_binary_size_mismatch_is_400(http: httpx.Client) -> None:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
    header = json.dumps({"inputs": [tensor]}).encode()
    raw = np.array(ROW, dtype="<f8").tobytes()  # FP64 bytes where FP32 was declared
    response = http.post(
        f"/v2/models/{MODEL}/infer", content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 400
    assert "needs 16" in response.json()["error"]


# --- In process: draining and metrics ---------------------------------------------------------------


@pytest.fixture(scope="module")
def local(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir))) as test_client:
        yield test_client


def test_readiness_fails_while_draining(local: TestClient) -> None:
    begin_draining()
    try:
        assert local.get("/v2/health/ready").status_code == 503
        assert local.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": False}
        assert local.get("/v2/health/live").status_code == 200
        assert local.post(f"/v2/models/{MODEL}/infer", json=infer_request([ROW])).status_code == 200
    finally:
        end_draining()
    assert local.get("/v2/health/ready").status_code == 200


def metric(client: TestClient, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_v2_predictions_and_refusals_are_counted(local: TestClient) -> None:
    virginica = 'irisserve_predictions_total{class="virginica",model="iris",version="1.0.0"}'
    refused = 'irisserve_validation_errors_total{route="/v2/models/{model_name}/infer"}'
    before = metric(local, virginica), metric(local, refused)
    assert local.post(f"/v2/models/{MODEL}/infer", json=infer_request([[6.7, 3.0, 5.2, 2.3]] * 3)).status_code == 200
    assert local.post(f"/v2/models/{MODEL}/infer", json=infer_request([[6.7, 3.0, 5.2, -1]])).status_code == 400
    assert (metric(local, virginica), metric(local, refused)) == (before[0] + 3, before[1] + 1)


# --- A typed model's codec (booleans and datatypes the zoo models do not use): one named input per feature -----

TYPED = ModelSpec(
    "churn", "1.0.0", "classification",
    (
        Feature("plan", 0, 1, kind="category", categories=("basic", "pro")),
        Feature("country", 0, 2, kind="category", categories=("DE", "FR", "US"), nullable=True, unknown="ignore"),
        Feature("tenure_months", 0, 59, kind="integer"),
        Feature("monthly_fee", 10, 100, nullable=True),
        Feature("promo", 0, 1, kind="boolean", nullable=True),
    ),
    ("no", "yes"),
    ({"plan": "pro", "country": "FR", "tenure_months": 3, "monthly_fee": 20.5, "promo": True},),
)


def byte_strings(*items: str) -> bytes:
    return b"".join(len(item.encode()).to_bytes(4, "little") + item.encode() for item in items)


def typed_request(columns: dict[str, tuple[str, Any]]) -> tuple[InferenceRequest, bytes]:
    """(datatype, values) per input: a list goes as JSON data, bytes as binary tensor data, in order."""
    inputs, binary = [], b""
    for name, (datatype, values) in columns.items():
        rows = values[1] if isinstance(values, tuple) else len(values)
        tensor: dict[str, Any] = {"name": name, "shape": [rows], "datatype": datatype}
        if isinstance(values, tuple):
            tensor["parameters"] = {"binary_data_size": len(values[0])}
            binary += values[0]
        else:
            tensor["data"] = values
        inputs.append(tensor)
    return InferenceRequest.model_validate({"inputs": inputs}), binary


def test_typed_metadata_has_one_input_per_feature() -> None:
    inputs = model_metadata(TYPED, "onnxruntime")["inputs"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in inputs] == [
        ("plan", "BYTES", [-1]), ("country", "BYTES", [-1]), ("tenure_months", "FP64", [-1]), ("monthly_fee", "FP64", [-1]),
        ("promo", "BOOL", [-1]),
    ]
    assert inputs[1]["parameters"] == {
        "kind": "category", "nullable": True, "datatypes": ["BYTES"], "categories": ["DE", "FR", "US"], "unseen": "predicted and flagged",
    }


def test_typed_binary_columns_become_predict_rows() -> None:
    """BYTES, INT64, FP32 (NaN: missing) and BOOL binary data; an empty string is a nullable category's gap."""
    request, binary = typed_request({
        "promo": ("BOOL", (bytes([1, 0]), 2)),
        "plan": ("BYTES", (byte_strings("pro", "basic"), 2)),
        "country": ("BYTES", (byte_strings("", "JP"), 2)),
        "tenure_months": ("INT64", (np.array([3, 40], dtype="<i8").tobytes(), 2)),
        "monthly_fee": ("FP32", (np.array([np.nan, 20.5], dtype="<f4").tobytes(), 2)),
    })
    assert typed_rows(request, binary, TYPED, 10) == [["pro", None, 3.0, None, True], ["basic", "JP", 40.0, 20.5, False]]


def test_typed_json_columns_take_null_and_nested_data() -> None:
    request, _ = typed_request({
        "plan": ("BYTES", [["pro"]]), "country": ("BYTES", [None]), "tenure_months": ("FP64", [3.0]),
        "monthly_fee": ("FP64", [None]), "promo": ("BOOL", [None]),
    })
    assert typed_rows(request, b"", TYPED, 10) == [["pro", None, 3.0, None, None]]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"promo": ("BOOL", (bytes([2]), 1))}, "Input 'promo' has binary data that is not 1 BOOL values"),
        ({"promo": ("FP64", [1.0])}, "Input 'promo' has datatype 'FP64'; feature 'promo' is a boolean: send one of ['BOOL']"),
        ({"promo": ("BOOL", [1])}, "Input 'promo' row 0: Input should be a valid boolean"),
        ({"plan": ("BYTES", [""])}, "Input 'plan' row 0: Input should be one of the training data's categories"),
        ({"tenure_months": ("INT64", (np.array([3], dtype="<i4").tobytes(), 1))}, "needs 8 bytes, got 4"),
        ({"monthly_fee": ("FP64", (np.array([np.inf], dtype="<f8").tobytes(), 1))}, "Input 'monthly_fee' row 0: Input should be a finite number"),
        ({"tenure_months": ("FP64", (np.array([2.5], dtype="<f8").tobytes(), 1))}, "Input 'tenure_months' row 0: Input should be a valid integer"),
    ],
    ids=["bool-byte", "bool-datatype", "bool-from-number", "empty-non-nullable-category", "int64-size", "infinity", "fraction"],
)
def test_typed_codec_errors_name_the_input(change: dict[str, tuple[str, Any]], needle: str) -> None:
    columns: dict[str, tuple[str, Any]] = {
        "plan": ("BYTES", ["pro"]), "country": ("BYTES", ["DE"]), "tenure_months": ("FP64", [3.0]),
        "monthly_fee": ("FP64", [20.5]), "promo": ("BOOL", [True]), **change,
    }
    request, binary = typed_request(columns)
    with pytest.raises(BadRequestError) as caught:
        typed_rows(request, binary, TYPED, 10)
    assert needle in str(caught.value), str(caught.value)


def test_typed_batch_over_the_limit_is_refused_before_reading() -> None:
    request, _ = typed_request({
        "plan": ("BYTES", ["pro"] * 11), "country": ("BYTES", ["DE"] * 11), "tenure_months": ("FP64", [3.0] * 11),
        "monthly_fee": ("FP64", [20.5] * 11), "promo": ("BOOL", [True] * 11),
    })
    with pytest.raises(PayloadTooLargeError):
        typed_rows(request, b"", TYPED, 10)


# --- A category of integers (an integer column the model one-hot encodes): INT64, or FP64/FP32 of whole values --------

INTEGER_TYPED = ModelSpec(
    "households", "1.0.0", "classification",
    (
        Feature("region", 0, 4, kind="category", categories=(1, 2, 3, 4, 5), unknown="ignore"),
        Feature("num_children", 0, 4, kind="category", categories=(0, 1, 2, 3, 4)),
        Feature("age", 18, 79, kind="integer"),
    ),
    ("no", "yes"),
    ({"region": 3, "num_children": 2, "age": 40},),
)


def test_integer_category_metadata_and_example_say_int64() -> None:
    inputs = model_metadata(INTEGER_TYPED, "onnxruntime")["inputs"]
    assert [(i["name"], i["datatype"]) for i in inputs] == [("region", "INT64"), ("num_children", "INT64"), ("age", "FP64")]
    assert inputs[1]["parameters"] == {
        "kind": "category", "nullable": False, "datatypes": ["INT64", "FP64", "FP32"], "categories": [0, 1, 2, 3, 4], "unseen": "refused",
    }
    example = example_request(INTEGER_TYPED)["inputs"]
    assert [(i["datatype"], i["data"]) for i in example] == [("INT64", [3]), ("INT64", [2]), ("FP64", [40])]


def test_integer_category_columns_from_int64_binary_and_whole_fp64() -> None:
    request, binary = typed_request({
        "region": ("INT64", (np.array([3, 9], dtype="<i8").tobytes(), 2)),
        "num_children": ("FP64", [2.0, 0]),
        "age": ("INT64", [40, 18]),
    })
    rows = typed_rows(request, binary, INTEGER_TYPED, 10)
    assert rows == [[3, 2, 40.0], [9, 0, 18.0]]
    assert {type(value) for row in rows for value in row[:2]} == {int}  # the model's int64 input gets integers


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"region": ("BYTES", ["3"])},
         "Input 'region' has datatype 'BYTES'; feature 'region' is a category coded as integers: send one of ['INT64', 'FP64', 'FP32']."),
        ({"num_children": ("INT64", [7])}, "Input 'num_children' row 0: Input should be one of the training data's categories: 0, 1, 2, 3, 4"),
        ({"num_children": ("FP32", (np.array([2.5], dtype="<f4").tobytes(), 1))},
         "Input 'num_children' row 0: Input should be a valid integer, got a number with a fractional part; send one of the training "
         "data's categories: 0, 1, 2, 3, 4"),
        ({"region": ("BOOL", [True])}, "Input 'region' has datatype 'BOOL'"),
    ],
    ids=["bytes", "unseen-where-refused", "fraction", "bool"],
)
def test_integer_category_codec_errors_say_what_to_send(change: dict[str, tuple[str, Any]], needle: str) -> None:
    columns: dict[str, tuple[str, Any]] = {"region": ("INT64", [3]), "num_children": ("INT64", [2]), "age": ("FP64", [40.0]), **change}
    request, binary = typed_request(columns)
    with pytest.raises(BadRequestError) as caught:
        typed_rows(request, binary, INTEGER_TYPED, 10)
    assert needle in str(caught.value), str(caught.value)
