"""The container web service: FastAPI routes over the shared request pipeline (``uvicorn irisserve.web.app:app``).

The routes are built from the served model's spec, so ``/docs`` shows that model's features; each handler
hands the body's bytes to the pipeline and sends back its bytes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from irisserve import __version__
from irisserve.core.errors import (
    IrisServeError,
    ModelNotReadyError,
    RequestValidationFailed,
    error_answer,
)
from irisserve.core.pipeline import Answer, Limits, RequestPipeline
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    health_body,
    model_info_body,
)
from irisserve.core.settings import Settings, get_settings
from irisserve.core.spec import ModelSpec
from irisserve.core.startup import mark
from irisserve.ops.cors import CorsMiddleware
from irisserve.ops.lifecycle import drain_on_signals, is_draining
from irisserve.ops.limits import ApiKeyMiddleware, BodyLimitMiddleware
from irisserve.ops.metrics import (
    mark_worker_exited,
    read_metrics,
    record_model_load,
    record_predictions,
    record_validation_error,
    route_of,
)
from irisserve.ops.middleware import ObservabilityMiddleware
from irisserve.ops.request_log import configure_logging
from irisserve.web import v2

logger = logging.getLogger("irisserve")

JSON = "application/json"
COMPONENTS = "#/components/schemas/"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the ``{"detail": "..."}`` answers a route can give besides its 200 and 422."""
    return {code: {"model": ErrorResponse} for code in codes}


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_errors(400, 401, 413),
    422: {"description": "Validation Error", "content": {JSON: {"schema": {"$ref": f"{COMPONENTS}HTTPValidationError"}}}},
    **_errors(503),
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that reads its body itself (through the pipeline)."""
    return {"requestBody": {"content": {JSON: {"schema": {"$ref": f"{COMPONENTS}{model.__name__}"}}}, "required": True}}


def answer(reply: Answer) -> Response:
    return Response(reply.body, media_type=JSON, headers={"Server-Timing": reply.server_timing})


def description_of(spec: ModelSpec) -> str:
    what = f"the class ({', '.join(spec.targets)})" if spec.is_classifier else f"{spec.targets[0]}"
    return (
        f"Predict {what} from {len(spec.features)} features with model `{spec.name}` {spec.version}.\n\n"
        "One ONNX model artifact, verified by SHA-256 at start-up, served by ONNX Runtime.\n"
        'Errors use FastAPI\'s shape: `{"detail": ...}`.'
    )


def build_router(pipeline: RequestPipeline) -> APIRouter:
    """The seed API, generic over the model: health, predict, batch, model info."""
    spec, predictor = pipeline.spec, pipeline.predictor
    router = APIRouter()

    @router.get("/health", response_model=HealthResponse, tags=["health"], responses={503: {"model": HealthResponse}})
    async def read_health() -> Any:
        """Liveness and readiness: 200 once the model is loaded and warmed up, 503 before (and while draining)."""
        status, body = health_body(predictor, draining=is_draining())
        return body if status == 200 else JSONResponse(body, status_code=status)

    @router.post(
        "/predict", response_model=spec.response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.request_model),
    )
    async def create_prediction(request: Request) -> Any:
        """Predict one row: every feature, by name."""
        return answer(pipeline.predict_one(await request.body()))

    @router.post(
        "/predict/batch", response_model=spec.batch_response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.batch_model),
    )
    async def create_batch_prediction(request: Request) -> Any:
        """Predict many rows in one vectorised call (up to IRISSERVE_MAX_BATCH_SIZE rows)."""
        return answer(pipeline.predict_batch(await request.body()))

    @router.get("/model/info", response_model=ModelInfo, tags=["model"], responses=_errors(401, 503))
    async def read_model_info() -> Any:
        """The served model: type, version, task, features and their training ranges, metrics, artifact hashes."""
        if not predictor.ready:
            raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
        return model_info_body(predictor)

    return router


async def handle_irisserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IrisServeError)
    if isinstance(exc, RequestValidationFailed):
        record_validation_error(route_of(request.scope))
    status, body = error_answer(exc)
    return Response(body, status_code=status, media_type=JSON)


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error; the incident was logged."}, status_code=500)


def add_request_models_to_openapi(app: FastAPI, spec: ModelSpec) -> None:
    """The generated request models, as components the routes' requestBody entries point at."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (spec.request_model, spec.batch_model):
                model_schema = model.model_json_schema(ref_template=COMPONENTS + "{model}")
                schemas.update(model_schema.pop("$defs", {}))
                schemas[model.__name__] = model_schema
            schema["components"]["schemas"] = dict(sorted(schemas.items()))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """Build the app for the artifact in ``settings.model_dir`` (its manifest is read now, to build the routes);
    the model loads (and warms up) in the lifespan, before the server accepts traffic."""
    settings = settings or get_settings()
    predictor = predictor or Predictor(settings.model_dir, backend=settings.backend)
    pipeline = RequestPipeline(
        predictor, Limits(settings.max_body_bytes, settings.max_batch_size), observe=record_predictions
    )
    spec = pipeline.spec

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not predictor.ready:
            predictor.load()
        logger.info(
            "Model %s %s loaded in %.3fs (warm-up %.4fs), backend %s",
            spec.name, predictor.version, predictor.load_seconds, predictor.warmup_seconds, settings.backend,
        )
        record_model_load(predictor.load_seconds)
        mark("ready")
        restore_signals = drain_on_signals()
        yield
        predictor.ready = False
        restore_signals()
        mark_worker_exited()

    app = FastAPI(
        title=f"irisserve: {spec.title}",
        description=description_of(spec),
        version=__version__,
        lifespan=lifespan,
        # Prometheus and our own request log cover this; FastAPI's OpenTelemetry hook otherwise looks up
        # three global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.pipeline = pipeline
    app.include_router(build_router(pipeline))
    app.include_router(v2.build_router(pipeline))
    add_request_models_to_openapi(app, spec)
    app.add_exception_handler(IrisServeError, handle_irisserve_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
    app.add_route("/metrics", read_metrics, include_in_schema=False)
    add_serving_middleware(app, settings)
    return app


def add_serving_middleware(app: FastAPI, settings: Settings) -> None:
    """The last added runs first: metrics and the request log wrap the others, so they see 401s and 413s too;
    CORS wraps the key and size checks, so a browser can read their answers."""
    request_log = configure_logging(settings)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, public_paths=settings.public_paths)
    app.add_middleware(CorsMiddleware, allowed=settings.cors_origins)
    app.add_middleware(ObservabilityMiddleware, request_log=request_log)


mark("imports_done")


def __getattr__(name: str) -> Any:
    """``irisserve.web.app:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
