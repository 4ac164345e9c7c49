"""The fixed bodies both front doors answer with, whatever the model: health, model info, errors.

The model-specific request and response models are generated from the manifest (``spec.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from irisserve.core.predictor import Predictor
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
    artifact_sha256: str = Field(..., description="SHA-256 of manifest.json, which pins every file's hash.")
    files: dict[str, dict[str, Any]]
    libraries: dict[str, str]
    created_at: str


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
        "feature_ranges": {feature.name: {"min": feature.min, "max": feature.max} for feature in data.features},
        "target_names": data.targets,
        "n_estimators": data.model.parameters.get("n_estimators"),
        "parameters": data.model.parameters,
        "metrics": data.metrics,
        "artifact_sha256": manifest.sha256,
        "files": manifest.raw["files"],
        "libraries": data.libraries,
        "created_at": data.created_at,
    }
