"""Request and response models shared by the web service, the function and the OpenAPI docs.

Pydantic only: the function imports this module without FastAPI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from irisserve.core.errors import BadRequestError, PayloadTooLargeError, RequestValidationFailed

FEATURE_NAMES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# ONNX Runtime computes in float32; a larger value would silently become infinity.
FLOAT32_MAX = 3.4028234663852886e38

SEED_EXAMPLE: dict[str, float] = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA_EXAMPLE: dict[str, float] = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


def _measurement(description: str) -> Any:
    return Field(..., gt=0, le=FLOAT32_MAX, strict=True, description=f"{description} in centimetres (> 0).")


class IrisFeatures(BaseModel):
    """One flower's four measurements. Unknown fields, strings, booleans, NaN and infinities are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [SEED_EXAMPLE]})

    sepal_length: float = _measurement("Sepal length")
    sepal_width: float = _measurement("Sepal width")
    petal_length: float = _measurement("Petal length")
    petal_width: float = _measurement("Petal width")

    def as_row(self) -> list[float]:
        return [self.sepal_length, self.sepal_width, self.petal_length, self.petal_width]


class BatchRequest(BaseModel):
    """Several flowers, predicted in one vectorised call."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"instances": [SEED_EXAMPLE, VIRGINICA_EXAMPLE]}]}
    )

    instances: list[IrisFeatures] = Field(..., min_length=1, description="1 to the configured maximum rows.")


class PredictionResponse(BaseModel):
    prediction: str = Field(..., description="Predicted class name.")
    prediction_id: int = Field(..., description="Index of the class in target_names.")
    confidence: float = Field(..., description="Probability of the predicted class.")
    probabilities: dict[str, float] = Field(..., description="Probability of every class.")
    model_version: str
    out_of_range_features: list[str] = Field(
        default_factory=list, description="Features outside the training data's range: predicted, but less trustworthy."
    )


class BatchResponse(BaseModel):
    predictions: list[PredictionResponse]
    model_version: str


class ErrorResponse(BaseModel):
    detail: str = Field(..., description="What went wrong and what to change.")


class HealthResponse(BaseModel):
    status: str = Field(..., description="'healthy', or why not.")
    model_loaded: bool
    model_version: str | None = None
    startup: dict[str, float] = Field(
        default_factory=dict, description="Wall-clock timestamps (epoch seconds) of each start-up phase."
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_type: str
    model_version: str
    backend: str
    feature_names: list[str]
    feature_ranges: dict[str, dict[str, float]]
    target_names: list[str]
    n_estimators: int | None
    parameters: dict[str, Any]
    metrics: dict[str, float]
    artifact_sha256: str = Field(..., description="SHA-256 of manifest.json, which pins every file's hash.")
    files: dict[str, dict[str, Any]]
    libraries: dict[str, str]
    created_at: str


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def json_safe_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors as FastAPI shows them (type, loc, msg, input, ctx), made JSON-safe.

    FastAPI's own handler echoes ``input`` verbatim and fails with a 500 when it holds NaN or an
    infinity; here those become strings ("nan", "inf") and other non-JSON values their str()."""
    return [_json_safe({key: value for key, value in error.items() if key != "url"}) for error in errors]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return str(value)


def parse_request(schema: type[SchemaT], payload: Any) -> SchemaT:
    """Validate an already-decoded JSON value; raise RequestValidationFailed in FastAPI's shape."""
    try:
        return schema.model_validate(payload, from_attributes=True)  # as FastAPI does: same error types
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationFailed(json_safe_errors([{**e, "loc": ("body", *e["loc"])} for e in errors])) from None


def decode_json(body: bytes) -> Any:
    """Decode a request body, or raise BadRequestError saying what is wrong with it."""
    if not body.strip():
        raise BadRequestError("The request body is empty; send a JSON object such as " + json.dumps(SEED_EXAMPLE))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:
        raise BadRequestError("The request body is nested too deeply.") from None


def check_batch_size(count: int, limit: int) -> None:
    """Refuse a batch over the configured limit, naming both numbers and the setting."""
    if count > limit:
        raise PayloadTooLargeError(
            f"The batch has {count} instances; the limit is {limit} (setting IRISSERVE_MAX_BATCH_SIZE)."
        )


def body_too_large(limit: int, size: int | None = None) -> PayloadTooLargeError:
    """The 413 for a body over IRISSERVE_MAX_BODY_BYTES (``size`` when Content-Length told it), worded
    the same by both front doors."""
    got = f"is {size} bytes" if size is not None else "is larger than that"
    return PayloadTooLargeError(
        f"The request body {got}; the limit is {limit} bytes (setting IRISSERVE_MAX_BODY_BYTES). "
        "Send fewer rows per request."
    )
