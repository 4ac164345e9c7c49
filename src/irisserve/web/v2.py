"""The Open Inference Protocol's routes on the web service (``/v2/...``), over the shared request pipeline.

Clients built for KServe, Triton and MLServer call them unchanged. Errors use the protocol's shape,
``{"error": "..."}``, never FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from irisserve import __version__
from irisserve.core.pipeline import RequestPipeline
from irisserve.core.predictor import Predictor
from irisserve.core.settings import Settings
from irisserve.ops.lifecycle import is_draining
from irisserve.v2 import codec
from irisserve.v2.codec import example_request, model_metadata
from irisserve.v2.models import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    V2Error,
)
from irisserve.web.handlers import BINARY_MEDIA_TYPE, v2_infer_handler
from irisserve.web.routing import V2Route, served_by

SERVER_NAME = "irisserve"
EXTENSIONS = ["binary_tensor_data"]
PLATFORMS = {"onnx": "onnxruntime", "sklearn": "sklearn"}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "The request breaks the protocol or the model's input rules."},
    404: {"model": V2Error, "description": "Unknown model name or version."},
    413: {"model": V2Error, "description": "More rows than IRISSERVE_MAX_BATCH_SIZE."},
    503: {"model": V2Error, "description": "The model is not loaded (yet, or any more)."},
}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {code: ERROR_RESPONSES[code] for code in (404, 503)}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, for an openapi_extra request body."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def serving(predictor: Predictor) -> bool:
    """Ready as /health counts it: loaded, and not draining after SIGTERM."""
    return predictor.ready and not is_draining()


def build_router(pipeline: RequestPipeline, settings: Settings) -> APIRouter:
    """The V2 routes for the pipeline's model."""
    spec, predictor = pipeline.spec, pipeline.predictor
    router = APIRouter(prefix="/v2", tags=["v2"], route_class=V2Route)
    request_schema = {**inline_schema(InferenceRequest), "examples": [example_request(spec)]}
    if not spec.plain:  # a typed model takes one input per feature (the plain model's schema is left as it was)
        request_schema["properties"]["inputs"]["description"] = (
            "One tensor per feature, named after it, each [N] or [N, 1]: BYTES for a category, FP64/FP32/INT64 for a "
            "number, BOOL for a boolean (see the model's metadata)."
        )
    infer_route: dict[str, Any] = {
        "response_model": InferenceResponse,
        "response_model_exclude_none": True,
        "responses": {
            200: {"content": {BINARY_MEDIA_TYPE: {}}, "description": "JSON, or JSON header + binary tensors."},
            **ERROR_RESPONSES,
        },
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}},
    }

    def find_model(name: str, version: str | None) -> None:
        codec.find_model(spec, name, version)

    def metadata() -> dict[str, Any]:
        return model_metadata(spec, PLATFORMS.get(predictor.backend_name, predictor.backend_name))

    def model_ready(name: str, version: str | None) -> Any:
        find_model(name, version)
        ready = serving(predictor)
        body = {"name": name, "ready": ready}
        return body if ready else JSONResponse(body, status_code=503)

    infer = served_by(v2_infer_handler(pipeline, settings.read_timeout_seconds))

    @router.get("", response_model=ServerMetadata)
    async def read_server_metadata() -> Any:
        """Server name, version and protocol extensions."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    @router.get("/health/live", response_model=ServerLive)
    async def read_server_live() -> Any:
        """200 while the process serves HTTP."""
        return {"live": True}

    @router.get("/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
    async def read_server_ready() -> Any:
        """200 once the model is loaded and warmed up; 503 before and while draining."""
        return {"ready": True} if serving(predictor) else JSONResponse({"ready": False}, status_code=503)

    @router.get("/models/{model_name}", response_model=ModelMetadata, response_model_exclude_none=True, responses=MODEL_ERRORS)
    async def read_model_metadata(model_name: str) -> Any:
        """The model's name, versions, platform, and input and output tensors."""
        find_model(model_name, None)
        return metadata()

    @router.get(
        "/models/{model_name}/versions/{model_version}", response_model=ModelMetadata, response_model_exclude_none=True,
        responses=MODEL_ERRORS,
    )
    async def read_model_version_metadata(model_name: str, model_version: str) -> Any:
        """Metadata of one version of the model."""
        find_model(model_name, model_version)
        return metadata()

    @router.get("/models/{model_name}/ready", response_model=ModelReady, responses=MODEL_ERRORS)
    async def read_model_ready(model_name: str) -> Any:
        """200 when the model can answer inferences."""
        return model_ready(model_name, None)

    @router.get("/models/{model_name}/versions/{model_version}/ready", response_model=ModelReady, responses=MODEL_ERRORS)
    async def read_model_version_ready(model_name: str, model_version: str) -> Any:
        """200 when this version of the model can answer inferences."""
        return model_ready(model_name, model_version)

    @router.post("/models/{model_name}/infer", **infer_route)
    @infer
    async def create_inference(model_name: str) -> None:
        """Predict an [N, n_features] FP32/FP64 tensor (JSON, or binary after an Inference-Header-Content-Length header)."""

    @router.post("/models/{model_name}/versions/{model_version}/infer", **infer_route)
    @infer
    async def create_versioned_inference(model_name: str, model_version: str) -> None:
        """Inference against one version of the model."""

    return router
