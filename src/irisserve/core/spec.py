"""The model spec: what a packaged model takes and answers, read from its manifest.

Everything model-specific in the service comes from here: the request models (generated with
``pydantic.create_model``, one aliased field per feature, so any string can be a feature name), the
response models, the OpenAPI examples, the features' training ranges and drift bins, the class names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from irisserve.core.artifact import Manifest, Task

# ONNX Runtime computes in float32; a larger value would silently become infinity.
FLOAT32_MAX = 3.4028234663852886e38


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

    def field(self) -> Any:
        """The pydantic field: a strict JSON number, finite, within float32, above the minimum if one is set."""
        minimum = self.exclusive_minimum
        if minimum is not None and float(minimum).is_integer():
            minimum = int(minimum)  # 0, not 0.0: the bound is echoed in 422 bodies ("ctx": {"gt": 0}), as before
        return Field(
            ...,
            alias=self.name,
            title=self.name.replace("_", " ").title(),
            description=self.description,
            strict=True,
            gt=minimum,
            ge=-FLOAT32_MAX if minimum is None else None,
            le=FLOAT32_MAX,
        )


@dataclass(frozen=True, eq=False)  # compared (and hashed) by identity: one spec per loaded model
class ModelSpec:
    """A packaged model's interface, and the pydantic models generated from it once, at load."""

    name: str
    version: str
    task: Task
    features: tuple[Feature, ...]
    targets: tuple[str, ...]
    examples: tuple[dict[str, float], ...]
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
                minimum=entry.min,
                maximum=entry.max,
                description=entry.description,
                exclusive_minimum=entry.exclusive_minimum,
                bin_edges=tuple(entry.bins.edges) if entry.bins else (),
                bin_shares=tuple(entry.bins.shares) if entry.bins else (),
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

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def example(self) -> dict[str, float]:
        return self.examples[0]

    @property
    def title(self) -> str:
        kind = "classifier" if self.is_classifier else "regressor"
        return f"{self.name[:1].upper()}{self.name[1:]} {kind}"

    def middle_row(self) -> list[float]:
        """The middle of every feature's training range (a warm-up input that passes every constraint)."""
        return list(_middle_row(self.features).values())


def _middle_row(features: tuple[Feature, ...]) -> dict[str, float]:
    return {feature.name: (feature.minimum + feature.maximum) / 2 for feature in features}


def class_name(model_name: str) -> str:
    """``iris`` -> ``Iris``, ``my-model.v2`` -> ``MyModelV2``: a prefix for the generated schema names."""
    words = [word for word in re.split(r"[^0-9A-Za-z]+", model_name) if word]
    name = "".join(word[:1].upper() + word[1:] for word in words) or "Model"
    return name if name[0].isalpha() else f"Model{name}"


def _request_model(spec: ModelSpec) -> type[BaseModel]:
    # Python names are placeholders; clients only ever see the aliases (the feature names).
    fields: dict[str, Any] = {f"feature_{i}": (float, feature.field()) for i, feature in enumerate(spec.features)}
    return create_model(
        f"{class_name(spec.name)}Features",
        __config__=ConfigDict(
            extra="forbid",
            allow_inf_nan=False,
            title=f"{class_name(spec.name)}Features",
            json_schema_extra={"examples": _json_list([spec.example])},
        ),
        __doc__=(
            f"One row of {spec.name}'s {len(spec.features)} features, JSON numbers. "
            "Unknown fields, strings, booleans, NaN and infinities are rejected."
        ),
        **fields,
    )


def _json_list(rows: Iterable[dict[str, float]]) -> list[JsonValue]:
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
            prediction=(str, Field(..., description="Predicted class name.")),
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
