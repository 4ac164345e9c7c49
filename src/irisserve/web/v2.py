"""The Open Inference Protocol's routes on the web service (``/v2/...``), over the shared request pipeline.

Clients built for KServe, Triton and MLServer call them unchanged. Errors use the protocol's shape,
``{"error": "..."}``, never FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from irisserve import __version__
from irisserve.core.errors import BadRequestError, RequestValidationFailed
from irisserve.core.pipeline import decode_json
from irisserve.core.registry import ModelRegistry, ServedModel
from irisserve.core.settings import Settings
from irisserve.core.spec import ModelSpec
from irisserve.ops.asgi import ClientGone, read_body
from irisserve.ops.lifecycle import is_draining
from irisserve.ops.repository_sync import RepositorySync
from irisserve.v2.codec import describe_errors, example_request, model_metadata
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


def serving(record: ServedModel | None) -> bool:
    """Ready as /health counts it: loaded, and not draining after SIGTERM."""
    return record is not None and record.predictor.ready and not is_draining()


class RepositoryIndexRequest(BaseModel):
    ready: bool | None = Field(None, description="true: only the models ready for inference.")


class RepositoryModelRequest(BaseModel):
    parameters: dict[str, Any] | None = Field(
        None, description='{"version": "1.1.0"} names the version (load: it then answers the name until the next load).'
    )


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str
    state: str = Field(..., description="READY or UNAVAILABLE.")
    reason: str | None = Field(None, description="Why it is not ready.")
    serving: bool | None = Field(None, description="true: the version answering the model's name.")


class RepositoryChange(BaseModel):
    name: str
    version: str | None = Field(None, description="The version loaded (load), or unloaded (unload; null: every version).")
    serving_version: str | None = Field(None, description="The version now answering the name (null: unloaded).")
    workers_switched: int = Field(..., description="Worker processes serving the change when the call answered.")
    workers: int


def build_router(registry: ModelRegistry, spec: ModelSpec, sync: RepositorySync, settings: Settings) -> APIRouter:
    """The V2 routes for every served model (``spec``: the default model's, for the documented example), and
    Triton's model repository extension."""
    router = APIRouter(prefix="/v2", tags=["v2"], route_class=V2Route)
    request_schema = {**inline_schema(InferenceRequest), "examples": [example_request(spec)]}
    if not spec.plain:  # a typed model takes one input per feature (the plain model's schema is left as it was)
        request_schema["properties"]["inputs"]["description"] = (
            "One tensor per feature, named after it, each [N] or [N, 1]: BYTES for a category (INT64 for a category "
            "coded as integers), FP64/FP32/INT64 for a number, BOOL for a boolean (see the model's metadata)."
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

    def metadata(name: str, version: str | None) -> dict[str, Any]:
        record = registry.resolve(name, version)
        body = model_metadata(record.spec, PLATFORMS.get(record.predictor.backend_name, record.predictor.backend_name))
        if version is None:
            body["versions"] = list(registry.snapshot.loaded.get(name, {}))
        return body

    def model_ready(name: str, version: str | None) -> Any:
        ready = serving(registry.resolve(name, version))
        body = {"name": name, "ready": ready}
        return body if ready else JSONResponse(body, status_code=503)

    infer = served_by(v2_infer_handler(registry, settings.read_timeout_seconds))

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
        ready = serving(registry.snapshot.serving.get(registry.default_name))
        return {"ready": True} if ready else JSONResponse({"ready": False}, status_code=503)

    @router.get("/models/{model_name}", response_model=ModelMetadata, response_model_exclude_none=True, responses=MODEL_ERRORS)
    async def read_model_metadata(model_name: str) -> Any:
        """The model's name, versions, platform, and input and output tensors."""
        return metadata(model_name, None)

    @router.get(
        "/models/{model_name}/versions/{model_version}", response_model=ModelMetadata, response_model_exclude_none=True,
        responses=MODEL_ERRORS,
    )
    async def read_model_version_metadata(model_name: str, model_version: str) -> Any:
        """Metadata of one version of the model."""
        return metadata(model_name, model_version)

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

    @router.post(
        "/repository/index", response_model=list[RepositoryIndexEntry], response_model_exclude_none=True,
        responses={400: ERROR_RESPONSES[400]}, openapi_extra=optional_body(RepositoryIndexRequest),
    )
    async def read_repository_index(request: Request) -> Any:
        """Every model version in the repository (and loaded): READY, or UNAVAILABLE with the reason."""
        ready_only = repository_request(RepositoryIndexRequest, await repository_body(request)).ready
        entries = registry.index()
        return [entry for entry in entries if entry["state"] == "READY"] if ready_only else entries

    @router.post(
        "/repository/models/{model_name}/load", response_model=RepositoryChange, responses=REPOSITORY_ERRORS,
        openapi_extra=optional_body(RepositoryModelRequest),
    )
    async def load_model(model_name: str, request: Request) -> Any:
        """Load the model's latest version on disk, or the version named in parameters, and make it answer the name:
        verified, warmed up, then swapped in atomically on every worker; a version that fails is refused (400) and
        the one serving before keeps serving."""
        version = version_parameter(repository_request(RepositoryModelRequest, await repository_body(request)))
        return await asyncio.to_thread(sync.load, model_name, version)

    @router.post(
        "/repository/models/{model_name}/unload", response_model=RepositoryChange, responses=REPOSITORY_ERRORS,
        openapi_extra=optional_body(RepositoryModelRequest),
    )
    async def unload_model(model_name: str, request: Request) -> Any:
        """Unload every version of the model, or the version named in parameters (the name falls back to its latest
        loaded version). The default model's last version is refused (409)."""
        version = version_parameter(repository_request(RepositoryModelRequest, await repository_body(request)))
        return await asyncio.to_thread(sync.unload, model_name, version)

    return router


REPOSITORY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "A bad body; the version failed to load (the reason); or this server serves one artifact."},
    404: {"model": V2Error, "description": "No such model or version in the repository."},
    409: {"model": V2Error, "description": "Unloading the default model's last version."},
}


Repository = TypeVar("Repository", bound=BaseModel)


async def repository_body(request: Request) -> bytes:
    """The body, within IRISSERVE_READ_TIMEOUT_SECONDS (408 past it), as the hot routes read theirs."""
    try:
        return await read_body(request.receive, timeout=request.app.state.settings.read_timeout_seconds)
    except ClientGone:
        raise BadRequestError("The client went away before its body arrived.") from None


def optional_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": inline_schema(model)}}}}


def repository_request(model: type[Repository], body: bytes) -> Repository:
    """A repository call's body (optional: empty is ``{}``), read whatever its Content-Type says (curl -d sends a
    form's), refused as this protocol refuses: 400 saying what is wrong."""
    try:
        payload = decode_json(body) if body.strip() else {}
    except RequestValidationFailed:
        raise BadRequestError("The body is not JSON; send a JSON object (or no body).") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequestError(describe_errors([dict(error) for error in exc.errors(include_url=False)])) from None


def version_parameter(request: RepositoryModelRequest) -> str | None:
    version = (request.parameters or {}).get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequestError(f'parameters.version must be a string such as "1.1.0", not {type(version).__name__}.')
    return version
