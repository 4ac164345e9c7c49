"""Typed features (issue 15) in the spec: each kind's JSON rules, nullable features, category codes for drift, and
categories of integers (an integer column the model one-hot encodes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from irisserve.core.artifact import FeatureEntry
from irisserve.core.spec import Feature, ModelSpec

FEATURES = (
    Feature("plan", 0, 1, kind="category", categories=("basic", "pro")),
    Feature("country", 0, 2, kind="category", categories=("DE", "FR", "US"), nullable=True, unknown="ignore"),
    Feature("tenure_months", 0, 59, kind="integer"),
    Feature("monthly_fee", 10, 100, nullable=True),
    Feature("promo", 0, 1, kind="boolean"),
)
ROW = {"plan": "pro", "country": "FR", "tenure_months": 3, "monthly_fee": 20.5, "promo": True}


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec("churn", "1.0.0", "classification", FEATURES, ("no", "yes"), (ROW,))


def errors(spec: ModelSpec, **changes: object) -> list[dict[str, object]]:
    with pytest.raises(ValidationError) as caught:
        spec.request_model.model_validate({**ROW, **changes})
    return caught.value.errors(include_url=False)  # type: ignore[return-value]


def test_a_typed_row_is_read_in_feature_order(spec: ModelSpec) -> None:
    assert list(spec.request_model.model_validate(ROW).__dict__.values()) == ["pro", "FR", 3.0, 20.5, True]
    assert not spec.plain


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("plan", 1, "string_type"),  # a number for a category
        ("plan", "gold", "enum"),  # an unseen category where the encoder refuses one
        ("plan", "x" * 10_000, "string_too_long"),  # a 10 KB category string
        ("plan", None, "string_type"),  # null for a non-nullable feature
        ("tenure_months", 2.5, "int_from_float"),
        ("tenure_months", "3", "float_type"),  # a string for a number
        ("promo", 1, "bool_type"),
        ("monthly_fee", math.inf, "finite_number"),
    ],
)
def test_each_kind_refuses_other_json(spec: ModelSpec, field: str, value: object, error_type: str) -> None:
    assert [error["type"] for error in errors(spec, **{field: value})] == [error_type]


def test_an_unseen_category_lists_the_allowed_values(spec: ModelSpec) -> None:
    assert errors(spec, plan="gold")[0]["msg"] == "Input should be one of the training data's categories: 'basic', 'pro'"
    many = Feature("city", 0, 99, kind="category", categories=tuple(f"c{i}" for i in range(100)))
    big = ModelSpec("cities", "1", "regression", (many,), ("y",), ({"city": "c0"},))
    with pytest.raises(ValidationError) as caught:
        big.request_model.model_validate({"city": "nowhere"})
    message = caught.value.errors()[0]["msg"]
    assert "'c49'" in message and "'c50'" not in message and message.endswith("(and 50 more)")


def test_null_or_an_omitted_key_is_missing_where_nullable(spec: ModelSpec) -> None:
    row = {key: value for key, value in ROW.items() if key != "monthly_fee"} | {"country": None}
    values = list(spec.request_model.model_validate(row).__dict__.values())
    matrix, texts = spec.encode([values])
    assert math.isnan(matrix[0, 1]) and math.isnan(matrix[0, 3])
    assert texts[1].tolist() == [[""]] and texts[0].tolist() == [["pro"]]


def test_categories_are_coded_and_an_unseen_one_is_out_of_range(spec: ModelSpec) -> None:
    matrix, _ = spec.encode([["basic", "JP", 3.0, 20.0, False]])
    assert matrix[0].tolist() == [0.0, 3.0, 3.0, 20.0, 0.0]  # "JP": code 3 = len(categories), past the range 0..2


def test_openapi_lists_categories_as_an_enum_and_nullable_features_as_optional(spec: ModelSpec) -> None:
    schema = spec.request_model.model_json_schema(by_alias=True)
    assert schema["properties"]["plan"]["enum"] == ["basic", "pro"]
    assert "enum" not in str(schema["properties"]["country"])  # unseen values are predicted: not an enum
    assert set(schema["required"]) == {"plan", "tenure_months", "promo"}


# --- Categories of integers: an integer column the model one-hot (or ordinal) encodes -------------------------------

INTEGER_FEATURES = (
    Feature("region", 0, 4, kind="category", categories=(1, 2, 3, 4, 5), unknown="ignore"),
    Feature("num_children", 0, 4, kind="category", categories=(0, 1, 2, 3, 4)),
    Feature("age", 18, 79, kind="integer"),
)
INTEGER_ROW = {"region": 3, "num_children": 2, "age": 40}


@pytest.fixture(scope="module")
def integer_spec() -> ModelSpec:
    return ModelSpec("households", "1.0.0", "classification", INTEGER_FEATURES, ("no", "yes"), (INTEGER_ROW,))


def integer_errors(spec: ModelSpec, **changes: object) -> list[dict[str, object]]:
    with pytest.raises(ValidationError) as caught:
        spec.request_model.model_validate({**INTEGER_ROW, **changes})
    return caught.value.errors(include_url=False)  # type: ignore[return-value]


def test_integer_categories_take_json_integers_and_whole_floats(integer_spec: ModelSpec) -> None:
    values = list(integer_spec.request_model.model_validate({"region": 3, "num_children": 2.0, "age": 40}).__dict__.values())
    assert values == [3, 2, 40.0] and [type(value) for value in values[:2]] == [int, int]
    assert list(integer_spec.request_model.model_validate_json('{"region": 5, "num_children": 0, "age": 18}').__dict__.values()) == [5, 0, 18.0]


def test_integer_categories_are_coded_for_drift_and_fed_as_int64(integer_spec: ModelSpec) -> None:
    matrix, columns = integer_spec.encode([[3, 2, 40.0], [9, 0, 18.0]])
    assert matrix.tolist() == [[2.0, 2.0, 40.0], [5.0, 0.0, 18.0]]  # codes; unseen region 9: code 5, past the range 0..4
    assert sorted(columns) == [0, 1] and {column.dtype for column in columns.values()} == {np.dtype(np.int64)}
    assert columns[0].tolist() == [[3], [9]] and columns[1].tolist() == [[2], [0]]


@pytest.mark.parametrize(
    ("field", "value", "error_type", "says"),
    [
        ("num_children", 7, "enum", "one of the training data's categories: 0, 1, 2, 3, 4"),
        ("num_children", "2", "int_type", "JSON integer (not a string or true/false): send one of the training data's categories: 0, 1, 2, 3, 4"),
        ("num_children", True, "int_type", "send one of the training data's categories: 0, 1, 2, 3, 4"),
        ("num_children", 2.5, "int_from_float", "fractional part; send one of the training data's categories: 0, 1, 2, 3, 4"),
        ("num_children", None, "int_type", "send one of the training data's categories"),
        ("num_children", math.nan, "finite_number", "finite number"),
        ("region", "north", "int_type", "send an integer, such as one of the training data's categories: 1, 2, 3, 4, 5"),
        ("region", 2**63, "int_type", "within int64"),
        ("region", -(2**63), "int_type", "within int64"),  # int64's smallest: skl2onnx's int64 imputers read it as missing
        ("region", [3], "int_type", "JSON integer"),
    ],
)
def test_integer_categories_refuse_other_json_saying_what_to_send(
    integer_spec: ModelSpec, field: str, value: object, error_type: str, says: str
) -> None:
    [error] = integer_errors(integer_spec, **{field: value})
    assert error["type"] == error_type and says in str(error["msg"])


def test_an_unseen_integer_passes_where_the_model_predicts_it(integer_spec: ModelSpec) -> None:
    assert list(integer_spec.request_model.model_validate({**INTEGER_ROW, "region": -7}).__dict__.values())[0] == -7
    assert list(integer_spec.request_model.model_validate({**INTEGER_ROW, "region": 2**63 - 1}).__dict__.values())[0] == 2**63 - 1


def test_openapi_gives_integer_categories_as_an_integer_enum(integer_spec: ModelSpec) -> None:
    properties = integer_spec.request_model.model_json_schema(by_alias=True)["properties"]
    assert (properties["num_children"]["type"], properties["num_children"]["enum"]) == ("integer", [0, 1, 2, 3, 4])
    assert properties["region"]["type"] == "integer" and properties["region"]["examples"] == [1, 2, 3, 4, 5] and "enum" not in properties["region"]
    assert properties["age"]["type"] == "number" and "enum" not in properties["age"]


def entry(**fields: object) -> dict[str, object]:
    return {"name": "region", "type": "category", **fields}


def test_the_manifest_takes_integer_categories_and_still_reads_text_ones() -> None:
    assert FeatureEntry.model_validate(entry(categories=[1, 2, 3])).categories == [1, 2, 3]
    assert FeatureEntry.model_validate(entry(categories=["1", "2"])).categories == ["1", "2"]  # an older manifest's


@pytest.mark.parametrize(
    "fields",
    [
        {"categories": [1, "2"]},  # mixed
        {"categories": [True, False]},
        {"categories": [1.0, 2.0]},
        {"categories": [2**63]},
        {"categories": [1, 2], "nullable": True, "missing_rate": 0.1},
    ],
    ids=["mixed", "booleans", "floats", "past-int64", "nullable"],
)
def test_the_manifest_refuses_integer_categories_it_cannot_serve(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeatureEntry.model_validate(entry(**fields))
