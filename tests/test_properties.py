"""Hypothesis property tests on the validation rules every front door shares (schemas.py, and V2 on top)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from irisserve.web.app import create_app
from irisserve.core.errors import PayloadTooLargeError, RequestValidationFailed
from irisserve.core.pipeline import check_batch_size, json_safe_errors, row_values
from irisserve.core.pipeline import validate as parse_request
from irisserve.core.settings import Settings
from irisserve.core.spec import FLOAT32_MAX, Feature, ModelSpec
from support import SEED_EXAMPLE

FEATURE_NAMES = tuple(SEED_EXAMPLE)
# The Iris spec as its manifest states it: four measurements, each > 0.
IRIS = ModelSpec(
    name="iris", version="1.0.0", task="classification",
    features=tuple(Feature(name, 0.1, 8.0, exclusive_minimum=0) for name in FEATURE_NAMES),
    targets=("setosa", "versicolor", "virginica"), examples=(SEED_EXAMPLE,),
)
IrisFeatures = IRIS.request_model
BatchRequest = IRIS.batch_model

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
APP_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

any_float = st.floats(allow_nan=True, allow_infinity=True)
any_int = st.integers(min_value=-(10**40), max_value=10**40)
valid_value = st.floats(min_value=0.0, max_value=FLOAT32_MAX, exclude_min=True, allow_nan=False)
not_a_number = st.one_of(
    st.booleans(), st.text(max_size=8), st.none(), st.lists(st.floats(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
valid_features = st.fixed_dictionaries({name: valid_value for name in FEATURE_NAMES})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
# Payloads near the schema as well as far from it, so both sides of every rule get exercised.
near_features = st.dictionaries(
    st.sampled_from([*FEATURE_NAMES, "petal_colour"]), st.one_of(valid_value, any_float, any_int, not_a_number), max_size=5
)
payloads = st.one_of(valid_features, near_features, json_values)


def is_valid_measurement(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and 0 < value <= FLOAT32_MAX


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir))) as test_client:
        yield test_client


# --- IrisFeatures -----------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(field=st.sampled_from(FEATURE_NAMES), value=st.one_of(any_float, any_int, valid_value))
def test_features_accept_exactly_positive_finite_numbers_within_float32(field: str, value: float) -> None:
    try:
        features = IrisFeatures.model_validate({**SEED_EXAMPLE, field: value})
    except ValidationError as exc:
        assert not is_valid_measurement(value)
        assert [error["loc"] for error in exc.errors()] == [(field,)]
    else:
        assert is_valid_measurement(value)
        assert row_values(features)[FEATURE_NAMES.index(field)] == float(value)


@PROPERTY_SETTINGS
@given(field=st.sampled_from(FEATURE_NAMES), value=not_a_number)
def test_features_reject_non_numbers(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        IrisFeatures.model_validate({**SEED_EXAMPLE, field: value})


@PROPERTY_SETTINGS
@given(features=valid_features, extra=st.text(min_size=1, max_size=12).filter(lambda key: key not in FEATURE_NAMES))
def test_features_reject_extra_keys(features: dict[str, float], extra: str) -> None:
    with pytest.raises(ValidationError) as caught:
        IrisFeatures.model_validate({**features, extra: 1.0})
    assert [error["type"] for error in caught.value.errors()] == ["extra_forbidden"]


@PROPERTY_SETTINGS
@given(features=valid_features, missing=st.sets(st.sampled_from(FEATURE_NAMES), min_size=1))
def test_features_need_every_measurement(features: dict[str, float], missing: set[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        IrisFeatures.model_validate({k: v for k, v in features.items() if k not in missing})
    assert {error["loc"][0] for error in caught.value.errors()} == missing


@PROPERTY_SETTINGS
@given(features=valid_features)
def test_valid_features_round_trip_in_feature_order(features: dict[str, float]) -> None:
    assert row_values(IrisFeatures.model_validate(features)) == [features[name] for name in FEATURE_NAMES]


# --- BatchRequest and the batch limit -------------------------------------------------------------


@PROPERTY_SETTINGS
@given(instances=st.lists(valid_features, max_size=6), limit=st.integers(min_value=1, max_value=6))
def test_batch_needs_one_row_and_respects_the_limit(instances: list[dict[str, float]], limit: int) -> None:
    try:
        batch = BatchRequest.model_validate({"instances": instances})
    except ValidationError:
        assert instances == []
        return
    assert len(batch.instances) == len(instances) >= 1  # type: ignore[attr-defined]
    if len(instances) > limit:
        with pytest.raises(PayloadTooLargeError, match=f"the limit is {limit}"):
            check_batch_size(len(instances), limit)
    else:
        check_batch_size(len(instances), limit)


@PROPERTY_SETTINGS
@given(instances=st.lists(valid_features, min_size=1, max_size=4), index=st.integers(0, 3), bad=not_a_number)
def test_one_bad_row_fails_the_batch_at_its_index(instances: list[dict[str, Any]], index: int, bad: Any) -> None:
    index %= len(instances)
    instances[index] = {**instances[index], "sepal_width": bad}
    with pytest.raises(ValidationError) as caught:
        BatchRequest.model_validate({"instances": instances})
    assert {error["loc"][:2] for error in caught.value.errors()} == {("instances", index)}


# --- The shared parser, the web service and V2 agree -------------------------------------------------


@APP_SETTINGS
@given(payload=payloads)
def test_parse_request_and_the_app_agree(client: TestClient, payload: Any) -> None:
    response = client.post(
        "/predict", content=json.dumps(payload, allow_nan=True), headers={"Content-Type": "application/json"}
    )
    try:
        features = parse_request(IrisFeatures, payload)
    except RequestValidationFailed as exc:
        assert response.status_code == 422, response.text
        assert response.json() == {"detail": exc.detail}
    else:
        assert response.status_code == 200, response.text
        assert response.json() == client.post("/predict", json=dict(zip(FEATURE_NAMES, row_values(features)))).json()


@APP_SETTINGS
@given(row=st.lists(st.one_of(valid_value, any_float, any_int, not_a_number), min_size=4, max_size=4))
def test_v2_accepts_a_row_exactly_when_the_core_does(client: TestClient, row: list[Any]) -> None:
    request = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row}]}
    response = client.post(
        "/v2/models/iris/infer", content=json.dumps(request, allow_nan=True), headers={"Content-Type": "application/json"}
    )
    core = client.post("/predict", content=json.dumps(dict(zip(FEATURE_NAMES, row)), allow_nan=True),
                       headers={"Content-Type": "application/json"})
    if core.status_code == 200:
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [core.json()["prediction"]]
    else:
        assert core.status_code == 422
        assert response.status_code == 400
        assert set(response.json()) == {"error"}


# --- Error bodies are always JSON ------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(payload=payloads)
def test_validation_errors_always_serialise_as_strict_json(payload: Any) -> None:
    for schema in (IrisFeatures, BatchRequest):
        try:
            schema.model_validate(payload)
        except ValidationError as exc:
            json.dumps(json_safe_errors(exc.errors()), allow_nan=False)


odd_values = st.recursive(
    st.one_of(any_float, st.binary(max_size=4), st.sets(st.integers(), max_size=2), st.complex_numbers(), st.none(), st.text(max_size=4)),
    lambda children: st.lists(children, max_size=3) | st.tuples(children) | st.dictionaries(st.integers() | st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


@PROPERTY_SETTINGS
@given(errors=st.lists(st.dictionaries(st.sampled_from(["type", "loc", "msg", "input", "ctx", "url"]), odd_values), max_size=3))
def test_json_safe_errors_serialises_any_error_dicts(errors: list[dict[str, Any]]) -> None:
    safe = json_safe_errors(errors)
    json.dumps(safe, allow_nan=False)
    assert all("url" not in error for error in safe)
    assert len(safe) == len(errors)
