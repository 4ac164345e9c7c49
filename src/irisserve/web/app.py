"""The container web service: FastAPI routes over the shared Predictor (``uvicorn irisserve.web.app:app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from irisserve import __version__
from irisserve.web import v2
from irisserve.web.deps import PredictorDep, SettingsDep
from irisserve.core.errors import IrisServeError, ModelNotReadyError, RequestValidationFailed, error_body
from irisserve.ops.lifecycle import drain_on_signals, is_draining
from irisserve.ops.observability import (
    ObservabilityMiddleware,
    configure_logging,
    mark_worker_exited,
    predict_observed,
    read_metrics,
    record_model_load,
    record_validation_error,
    route_of,
)
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    HealthResponse,
    IrisFeatures,
    ModelInfo,
    PredictionResponse,
    check_batch_size,
    json_safe_errors,
)
from irisserve.ops.limits import ApiKeyMiddleware, BodyLimitMiddleware, cap_errors, handle_http_exception
from irisserve.core.settings import Settings, get_settings
from irisserve.core.startup import STARTUP_MARKS, mark

logger = logging.getLogger("irisserve")

DESCRIPTION = """Predict the species of an Iris flower from four measurements (centimetres).

One ONNX model artifact, verified by SHA-256 at start-up, served by ONNX Runtime.
Errors use FastAPI's shape: `{"detail": ...}`."""


router = APIRouter()


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the ``{"detail": "..."}`` answers a route can give besides its 200 and 422."""
    return {code: {"model": ErrorResponse} for code in codes}


PREDICT_ERRORS = _errors(400, 401, 413, 503)


@router.get("/health", response_model=HealthResponse, tags=["health"], responses={503: {"model": HealthResponse}})
async def read_health(predictor: PredictorDep) -> Any:
    """Liveness and readiness: 200 once the model is loaded and warmed up, 503 before (and while draining)."""
    ready = predictor.ready and not is_draining()
    body = {
        "status": "healthy" if ready else "unavailable: draining" if predictor.ready else "unavailable: model not loaded",
        "model_loaded": predictor.ready,
        "model_version": predictor.version,
        "startup": STARTUP_MARKS,
    }
    return body if ready else JSONResponse(body, status_code=503)


@router.post("/predict", response_model=PredictionResponse, tags=["predict"], responses=PREDICT_ERRORS)
async def create_prediction(features: IrisFeatures, predictor: PredictorDep) -> Any:
    """Predict one flower's species, with the probability of every class."""
    return predict_observed(predictor, [features])[0]


async def limit_batch_rows(request: Request, settings: SettingsDep) -> None:
    """Refuse an oversized batch before its rows are validated: a 1 MiB body holds 60,000 bad rows."""
    try:
        payload = await request.json()  # already parsed by FastAPI; Starlette caches it
    except (ValueError, RecursionError):
        return
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if isinstance(instances, list):
        check_batch_size(len(instances), settings.max_batch_size)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    tags=["predict"],
    responses=PREDICT_ERRORS,
    dependencies=[Depends(limit_batch_rows)],
)
async def create_batch_prediction(batch: BatchRequest, predictor: PredictorDep, settings: SettingsDep) -> Any:
    """Predict many flowers in one vectorised call (up to IRISSERVE_MAX_BATCH_SIZE rows)."""
    check_batch_size(len(batch.instances), settings.max_batch_size)
    return {"predictions": predict_observed(predictor, batch.instances), "model_version": predictor.version}


@router.get("/model/info", response_model=ModelInfo, tags=["model"], responses=_errors(401, 503))
async def read_model_info(predictor: PredictorDep) -> Any:
    """The served model: type, version, features and their training ranges, metrics, artifact hashes."""
    if not predictor.ready:
        raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
    return predictor.info()


async def handle_irisserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IrisServeError)
    if isinstance(exc, RequestValidationFailed):
        record_validation_error(route_of(request.scope))
    return JSONResponse(error_body(exc), status_code=exc.status_code)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    record_validation_error(route_of(request.scope))
    return JSONResponse({"detail": json_safe_errors(cap_errors(exc.errors()))}, status_code=422)


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error; the incident was logged."}, status_code=500)


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """Build the app; the model loads (and warms up) in the lifespan, before the server accepts traffic."""
    settings = settings or get_settings()
    predictor = predictor or Predictor(settings.model_dir, backend=settings.backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not predictor.ready:
            predictor.load()
        logger.info(
            "Model %s loaded in %.3fs (warm-up %.4fs), backend %s",
            predictor.version, predictor.load_seconds, predictor.warmup_seconds, settings.backend,
        )
        record_model_load(predictor.load_seconds)
        mark("ready")
        restore_signals = drain_on_signals()
        yield
        predictor.ready = False
        restore_signals()
        mark_worker_exited()

    app = FastAPI(
        title="irisserve: Iris classifier",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        # Prometheus and our own request log cover this; FastAPI's OpenTelemetry hook otherwise looks up
        # three global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.include_router(router)
    app.include_router(v2.router)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(IrisServeError, handle_irisserve_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
    app.add_route("/metrics", read_metrics, include_in_schema=False)
    add_serving_middleware(app, settings)
    return app


def add_serving_middleware(app: FastAPI, settings: Settings) -> None:
    """The last added runs first: metrics and the request log wrap the others, so they see 401s and 413s too."""
    request_log = configure_logging(settings)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, public_paths=settings.public_paths)
    app.add_middleware(ObservabilityMiddleware, request_log=request_log)


mark("imports_done")


def __getattr__(name: str) -> Any:
    """``irisserve.web.app:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
