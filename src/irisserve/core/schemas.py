"""The fixed bodies both front doors answer with, whatever the model: health, model info and inputs, errors,
and the live figures (requests, predictions, drift) of ``ops/live.py`` and ``ops/drift.py``.

The model-specific request and response models are generated from the manifest (``spec.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from irisserve.core.artifact import Kind, Scalar, Unknown
from irisserve.core.predictor import Predictor
from irisserve.core.spec import ModelSpec
from irisserve.core.startup import STARTUP_MARKS

HEALTHY = "healthy"


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
    task: str = Field(..., description="classification or regression.")
    backend: str
    feature_names: list[str]
    feature_ranges: dict[str, dict[str, float]]
    target_names: list[str] = Field(..., description="Class names (classifier) or the predicted quantity (regressor).")
    n_estimators: int | None
    parameters: dict[str, Any]
    metrics: dict[str, float]
    metrics_source: str | None = Field(
        None, description="Where the metrics come from: held-out rows (--eval-data), or in-sample (the packaging data)."
    )
    artifact_sha256: str = Field(..., description="SHA-256 of manifest.json, which pins every file's hash.")
    files: dict[str, dict[str, Any]]
    libraries: dict[str, str]
    created_at: str


class FeatureInput(BaseModel):
    name: str = Field(..., description="The JSON key.")
    description: str | None = None
    kind: Kind = Field(
        "number", description="number, integer, category (one of categories: a string, or an integer when they are integers) or boolean."
    )
    nullable: bool = Field(False, description="null (or leaving the key out) means missing, which the model handles.")
    exclusive_minimum: float | None = Field(None, description="Values must be greater than this, when set.")
    min: float | None = Field(..., description="Smallest value in the training data (null for a category).")
    max: float | None = Field(..., description="Largest value in the training data (null for a category).")
    categories: list[str] | list[int] | None = Field(
        None, description="A category's values: the training data's strings, or an integer-coded column's encoder's integers."
    )
    unknown: Unknown = Field("error", description="An unseen category: refused (error) or predicted and flagged (ignore).")


class ModelInputs(BaseModel):
    """What a request holds: each feature (in order) and the manifest's example rows; the model page builds its form from it."""

    features: list[FeatureInput]
    examples: list[dict[str, Scalar]] = Field(..., description="Example rows: the first is /predict's OpenAPI example.")


class FeatureDrift(BaseModel):
    psi: float | None = Field(..., description="Population stability index against training; null without rows or bins.")
    drifted: bool = Field(..., description="psi above the threshold, with at least min_rows rows in the window.")
    training_shares: list[float] = Field(..., description="Share of training rows in each bin (the manifest's).")
    window_shares: list[float] = Field(..., description="Share of the window's rows in each bin.")


class DriftReport(BaseModel):
    """Each feature's recent inputs against its training distribution (docs/ui.md)."""

    model_version: str
    rows: int = Field(..., description="Rows in the window: the last window_max_rows predicted, none older than window_max_age_seconds.")
    threshold: float = Field(..., description="IRISSERVE_DRIFT_PSI_THRESHOLD.")
    min_rows: int = Field(..., description="Below this many rows no feature is flagged.")
    window_max_rows: int
    window_max_age_seconds: float
    drifted_features: list[str]
    features: dict[str, FeatureDrift]


class RouteStats(BaseModel):
    requests: int
    errors: int = Field(..., description="Answers with status 400 or above.")
    statuses: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None


class RequestStats(BaseModel):
    window_seconds: float
    covered_seconds: float = Field(..., description="Less than window_seconds when the request cap, not the clock, set the window.")
    total: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    routes: dict[str, RouteStats] = Field(..., description="By 'METHOD /route/template'.")


class ValueSummary(BaseModel):
    mean: float
    min: float
    max: float


class PredictionStats(BaseModel):
    rows: int = Field(..., description="Rows predicted since this process started.")
    by_class: dict[str, int] | None = Field(..., description="Classifier: rows by predicted class.")
    values: ValueSummary | None = Field(..., description="Regressor: the predictions' mean, min and max.")


class OutOfRangeStats(BaseModel):
    rows: int = Field(..., description="Rows with at least one feature outside its training range, since start.")
    by_feature: dict[str, int]


class StatsResponse(BaseModel):
    """This process's live figures: the last minute's requests, predictions and flags since start, the drift window."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    uptime_seconds: float
    requests: RequestStats
    predictions: PredictionStats
    out_of_range: OutOfRangeStats
    drift: DriftReport


def model_inputs_body(spec: ModelSpec) -> dict[str, Any]:
    """The /model/inputs body: each feature with its constraint and training range, and the example rows."""
    features = [
        {
            "name": feature.name,
            "description": feature.description,
            "kind": feature.kind,
            "nullable": feature.nullable,
            "exclusive_minimum": feature.exclusive_minimum,
            "min": None if feature.kind == "category" else feature.minimum,
            "max": None if feature.kind == "category" else feature.maximum,
            "categories": list(feature.categories) if feature.kind == "category" else None,
            "unknown": feature.unknown,
        }
        for feature in spec.features
    ]
    return {"features": features, "examples": [dict(example) for example in spec.examples]}


def health_body(predictor: Predictor | None, *, draining: bool = False, reason: str | None = None) -> tuple[int, dict[str, Any]]:
    """``/health``'s status and body: 200 once the model is loaded and warmed up, 503 saying why not."""
    loaded = predictor is not None and predictor.ready
    if reason is None:
        reason = "draining" if draining and loaded else "model not loaded"
    status = HEALTHY if loaded and not draining else f"unavailable: {reason}"
    body = {
        "status": status,
        "model_loaded": loaded,
        "model_version": predictor.version if predictor is not None else None,
        "startup": dict(STARTUP_MARKS),
    }
    return (200 if status == HEALTHY else 503), body


def model_info_body(predictor: Predictor) -> dict[str, Any]:
    """The /model/info body: any packaged model's type, features and ranges, targets, metrics, hashes."""
    manifest = predictor.manifest
    data = manifest.data
    return {
        "model_name": data.name,
        "model_type": data.model.type,
        "model_version": data.version,
        "task": data.task,
        "backend": predictor.backend_name,
        "feature_names": [feature.name for feature in data.features],
        "feature_ranges": {
            feature.name: {"min": feature.min, "max": feature.max}
            for feature in data.features
            if feature.min is not None and feature.max is not None
        },
        "target_names": data.targets,
        "n_estimators": data.model.parameters.get("n_estimators"),
        "parameters": data.model.parameters,
        "metrics": data.metrics,
        "metrics_source": data.metrics_source,
        "artifact_sha256": manifest.sha256,
        "files": manifest.raw["files"],
        "libraries": data.libraries,
        "created_at": data.created_at,
    }
