"""The model spec: what a packaged model takes and answers, read from its manifest.

Everything model-specific in the service comes from here: the request models (generated with
``pydantic.create_model``, one aliased field per feature, so any string can be a feature name), the
response models, the OpenAPI examples, the features' training ranges and drift bins, the class names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, create_model
from pydantic_core import PydanticCustomError

from irisserve.core.artifact import INT64_MAX, INT64_MIN, MAX_CATEGORY_CHARS, Kind, Manifest, Scalar, Task, Unknown

# ONNX Runtime computes in float32; a larger value would silently become infinity.
FLOAT32_MAX = 3.4028234663852886e38
# An unseen category's 422 lists this many allowed values, then how many more there are.
MAX_CATEGORIES_LISTED = 50


def _whole(value: float) -> float:
    if not value.is_integer():
        raise PydanticCustomError("int_from_float", "Input should be a valid integer, got a number with a fractional part")
    return value


def _listed(categories: Sequence[str | int]) -> str:
    """At most MAX_CATEGORIES_LISTED values (strings quoted, integers bare), then how many more."""
    listed = ", ".join(repr(value) for value in categories[:MAX_CATEGORIES_LISTED])
    if len(categories) > MAX_CATEGORIES_LISTED:
        listed += f" (and {len(categories) - MAX_CATEGORIES_LISTED} more)"
    return listed


def _unseen(listed: str) -> PydanticCustomError:
    return PydanticCustomError("enum", "Input should be one of the training data's categories: {expected}", {"expected": listed})


def _category_check(categories: tuple[str | int, ...]) -> AfterValidator:
    """Membership in the training values; the refusal lists at most MAX_CATEGORIES_LISTED of them, then a count."""
    allowed = frozenset(categories)
    listed = _listed(categories)

    def check(value: str) -> str:
        if value not in allowed:
            raise _unseen(listed)
        return value

    return AfterValidator(check)


def _integer_category_check(categories: tuple[str | int, ...], *, refuse_unseen: bool) -> BeforeValidator:
    """An integer category's value: a JSON integer (or a float without a fractional part, as for an integer feature),
    one of its values unless unseen ones are predicted (then any int64 but its smallest). A string (even "3"), a
    boolean, a fraction or null is refused, and every refusal lists the values to send."""
    allowed = frozenset(categories)
    listed = _listed(categories)
    expected = {"expected": listed}
    send = "one of the training data's categories" if refuse_unseen else "an integer, such as one of the training data's categories"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PydanticCustomError("int_type", f"Input should be a JSON integer (not a string or true/false): send {send}: {{expected}}", expected)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise PydanticCustomError("finite_number", "Input should be a finite number")
            if not value.is_integer():
                raise PydanticCustomError(
                    "int_from_float", f"Input should be a valid integer, got a number with a fractional part; send {send}: {{expected}}", expected
                )
        number = int(value)
        if number in allowed:
            return number
        if refuse_unseen:
            raise _unseen(listed)
        if not INT64_MIN < number <= INT64_MAX:  # int64's smallest is what skl2onnx's int64 imputer reads as missing
            raise PydanticCustomError("int_type", f"Input should be an integer within int64: send {send}: {{expected}}", expected)
        return number

    return BeforeValidator(check)


@dataclass(frozen=True)
class Feature:
    """One input column: its name (the JSON key), its constraint, its training range and drift bins."""

    name: str
    minimum: float
    maximum: float
    description: str | None = None
    exclusive_minimum: float | None = None
    bin_edges: tuple[float, ...] = ()
    bin_shares: tuple[float, ...] = ()
    kind: Kind = "number"
    nullable: bool = False
    categories: tuple[str | int, ...] = ()  # strings, or an integer category's integers
    unknown: Unknown = "error"
    missing_marker: str = ""

    @cached_property
    def codes(self) -> dict[str | int, int]:
        """A category's value -> its index (an unseen one is len(categories); drift bins and range checks use codes)."""
        return {value: code for code, value in enumerate(self.categories)}

    @property
    def integer_categories(self) -> bool:
        """A category of integers (an integer column the model one-hot or ordinal encodes): JSON integers, fed as int64."""
        return self.kind == "category" and bool(self.categories) and isinstance(self.categories[0], int)

    def annotation(self) -> Any:
        """The field's type: None allowed when nullable; a category checked against its values unless unseen ones are predicted."""
        base: Any = {"number": float, "integer": Annotated[float, AfterValidator(_whole)], "boolean": bool}.get(self.kind)
        if self.integer_categories:
            check = _integer_category_check(self.categories, refuse_unseen=self.unknown == "error")
            base = Annotated[int, check]
        elif self.kind == "category":
            base = str if self.unknown == "ignore" else Annotated[str, _category_check(self.categories)]
        return base | None if self.nullable else base

    def field(self) -> Any:
        """The pydantic field: strict JSON of the feature's kind; a number finite, within float32, above the minimum if
        one is set; a category one of its values (OpenAPI enum); optional (default null) when nullable."""
        default: Any = None if self.nullable else ...
        common: dict[str, Any] = {"alias": self.name, "title": self.name.replace("_", " ").title(), "strict": True}
        if self.kind == "category":
            extra: dict[str, JsonValue] = {"enum": list(self.categories)} if self.unknown == "error" else {"examples": list(self.categories[:MAX_CATEGORIES_LISTED])}
            description = self.description or (
                ("A category coded as an integer (a JSON integer, one of its values)" if self.integer_categories else "A category")
                + ("; an unseen one is predicted and flagged." if self.unknown == "ignore" else ".")
            )
            if self.integer_categories:
                return Field(default, description=description, json_schema_extra=extra, **common)
            return Field(default, description=description, max_length=MAX_CATEGORY_CHARS, json_schema_extra=extra, **common)
        if self.kind == "boolean":
            return Field(default, description=self.description, **common)
        minimum = self.exclusive_minimum
        if minimum is not None and float(minimum).is_integer():
            minimum = int(minimum)  # 0, not 0.0: the bound is echoed in 422 bodies ("ctx": {"gt": 0}), as before
        return Field(
            default,
            description=self.description or f"Training range {self.minimum:g} to {self.maximum:g}.",
            gt=minimum,
            ge=-FLOAT32_MAX if minimum is None else None,
            le=FLOAT32_MAX,
            **common,
        )


@dataclass(frozen=True, eq=False)  # compared (and hashed) by identity: one spec per loaded model
class ModelSpec:
    """A packaged model's interface, and the pydantic models generated from it once, at load."""

    name: str
    version: str
    task: Task
    features: tuple[Feature, ...]
    targets: tuple[str, ...]
    examples: tuple[dict[str, Scalar], ...]
    model_type: str = ""
    request_model: type[BaseModel] = field(init=False, repr=False, compare=False)
    batch_model: type[BaseModel] = field(init=False, repr=False, compare=False)
    response_model: type[BaseModel] = field(init=False, repr=False, compare=False)
    batch_response_model: type[BaseModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        request = _request_model(self)
        response = _response_model(self)
        set_attr = object.__setattr__  # frozen: the generated models are part of the spec's identity
        set_attr(self, "request_model", request)
        set_attr(self, "batch_model", _batch_model(self, request))
        set_attr(self, "response_model", response)
        set_attr(self, "batch_response_model", _batch_response_model(response))

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelSpec:
        data = manifest.data
        features = tuple(
            Feature(
                name=entry.name,
                # a category's range is its codes: an unseen value (code len(categories)) is out of range
                minimum=0.0 if entry.min is None else entry.min,
                maximum=float(len(entry.categories or ()) - 1) if entry.max is None else entry.max,
                description=entry.description,
                exclusive_minimum=entry.exclusive_minimum,
                bin_edges=tuple(entry.bins.edges) if entry.bins else (),
                bin_shares=tuple(entry.bins.shares) if entry.bins else (),
                kind=entry.type,
                nullable=entry.nullable,
                categories=tuple(entry.categories or ()),
                unknown=entry.unknown,
                missing_marker=entry.missing_marker,
            )
            for entry in data.features
        )
        examples = tuple(data.examples) or (_middle_row(features),)
        return cls(
            name=data.name,
            version=data.version,
            task=data.task,
            features=features,
            targets=tuple(data.targets),
            examples=examples,
            model_type=data.model.type,
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @cached_property
    def plain(self) -> bool:
        """Every feature a number, none nullable (Iris): rows go to the model as they are, one float32 matrix."""
        return all(feature.kind == "number" and not feature.nullable for feature in self.features)

    def encode(self, rows: Sequence[Sequence[Scalar]]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Validated rows as the float32 matrix [N, features] the model (numbers), drift and range checks read, and
        each category's column [N, 1] as the model reads it: strings, or int64 for an integer category. In the matrix
        a missing value is NaN and a category is its code (len(categories) when unseen); in a string column a missing
        category is its missing marker."""
        if self.plain:
            return np.asarray(rows, dtype=np.float32).reshape(-1, len(self.features)), {}
        coders = self._coders
        matrix = np.array([[code(value) for code, value in zip(coders, row, strict=True)] for row in rows], dtype=np.float32)
        texts: dict[int, np.ndarray] = {
            index: np.array([[marker if row[index] is None else row[index]] for row in rows], dtype=dtype)
            for index, marker, dtype in self._category_columns
        }
        return matrix.reshape(len(rows), len(self.features)), texts

    @cached_property
    def _coders(self) -> list[Callable[[Scalar], float]]:
        """Per feature, its value as the matrix holds it: a number, a category's code, NaN for missing."""
        nan = float("nan")

        def coder(feature: Feature) -> Callable[[Scalar], float]:
            if feature.kind == "category":
                codes, unseen = feature.codes, len(feature.categories)
                return lambda value: nan if value is None else codes.get(value, unseen)  # type: ignore[arg-type]
            return lambda value: nan if value is None else value  # type: ignore[return-value]  # validated: a number

        return [coder(feature) for feature in self.features]

    @cached_property
    def _category_columns(self) -> list[tuple[int, str, type]]:
        """Each category's column index, its missing marker and the dtype the model's encoder reads (its ONNX input's:
        strings, or int64 for an integer category, which is never missing)."""
        return [
            (index, feature.missing_marker, np.int64 if feature.integer_categories else object)
            for index, feature in enumerate(self.features)
            if feature.kind == "category"
        ]

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def example(self) -> dict[str, Scalar]:
        return self.examples[0]

    @property
    def title(self) -> str:
        kind = "classifier" if self.is_classifier else "regressor"
        return f"{self.name[:1].upper()}{self.name[1:]} {kind}"

    def middle_row(self) -> list[Scalar]:
        """The middle of every feature's training range, a category's first value (a warm-up input that passes every constraint)."""
        return list(_middle_row(self.features).values())


def _middle(feature: Feature) -> Scalar:
    if feature.kind == "category":
        return feature.categories[0]
    if feature.kind == "boolean":
        return False
    middle = (feature.minimum + feature.maximum) / 2
    return float(round(middle)) if feature.kind == "integer" else middle


def _middle_row(features: tuple[Feature, ...]) -> dict[str, Scalar]:
    return {feature.name: _middle(feature) for feature in features}


def class_name(model_name: str) -> str:
    """``iris`` -> ``Iris``, ``my-model.v2`` -> ``MyModelV2``: a prefix for the generated schema names."""
    words = [word for word in re.split(r"[^0-9A-Za-z]+", model_name) if word]
    name = "".join(word[:1].upper() + word[1:] for word in words) or "Model"
    return name if name[0].isalpha() else f"Model{name}"


def _request_model(spec: ModelSpec) -> type[BaseModel]:
    # Python names are placeholders; clients only ever see the aliases (the feature names).
    fields: dict[str, Any] = {f"feature_{i}": (feature.annotation(), feature.field()) for i, feature in enumerate(spec.features)}
    kinds = (
        f"One row of {spec.name}'s {len(spec.features)} features, JSON numbers. "
        "Unknown fields, strings, booleans, NaN and infinities are rejected."
        if spec.plain
        else f"One row of {spec.name}'s {len(spec.features)} features: numbers, categories (one of their values) and "
        "booleans as JSON numbers, strings (JSON integers for a category coded as integers) and true/false; null or an "
        "omitted key for a missing value where a feature allows it. Unknown fields, NaN and infinities are rejected."
    )
    return create_model(
        f"{class_name(spec.name)}Features",
        __config__=ConfigDict(
            extra="forbid",
            allow_inf_nan=False,
            title=f"{class_name(spec.name)}Features",
            json_schema_extra={"examples": _json_list([spec.example])},
        ),
        __doc__=kinds,
        **fields,
    )


def _json_list(rows: Iterable[dict[str, Scalar]]) -> list[JsonValue]:
    return [dict(row) for row in rows]


def _batch_model(spec: ModelSpec, request: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"instances": _json_list(spec.examples)}]},
        ),
        __doc__="Several rows, predicted in one vectorised call.",
        instances=(list[request], Field(..., min_length=1, description="1 to the configured maximum rows.")),  # type: ignore[valid-type]
    )


_OUT_OF_RANGE: Any = Field(
    default_factory=list, description="Features outside the training data's range: predicted, but less trustworthy."
)


def _response_model(spec: ModelSpec) -> type[BaseModel]:
    if spec.is_classifier:
        return create_model(
            "PredictionResponse",
            # the classes as an OpenAPI enum (schema only: the server writes the answer, nothing validates it again)
            prediction=(str, Field(..., description="Predicted class name.", json_schema_extra={"enum": list(spec.targets)})),
            prediction_id=(int, Field(..., description="Index of the class in target_names.")),
            confidence=(float, Field(..., description="Probability of the predicted class.")),
            probabilities=(dict[str, float], Field(..., description="Probability of every class.")),
            model_version=(str, ...),
            out_of_range_features=(list[str], _OUT_OF_RANGE),
        )
    return create_model(
        "PredictionResponse",
        prediction=(float, Field(..., description=f"Predicted {spec.targets[0]}.")),
        model_version=(str, ...),
        out_of_range_features=(list[str], _OUT_OF_RANGE),
    )


def _batch_response_model(response: type[BaseModel]) -> type[BaseModel]:
    return create_model("BatchResponse", predictions=(list[response], ...), model_version=(str, ...))  # type: ignore[valid-type]
