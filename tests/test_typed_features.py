"""Typed features (issue 15) in the spec: each kind's JSON rules, nullable features, category codes for drift."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

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
