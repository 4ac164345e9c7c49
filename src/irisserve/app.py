"""The container web service: FastAPI routes over the shared Predictor (``uvicorn irisserve.app:app``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from irisserve import __version__, v2
from irisserve.errors import IrisServeError, ModelNotReadyError, error_body
from irisserve.predictor import Predictor
from irisserve.schemas import (
    BatchRequest,
    BatchResponse,
    HealthResponse,
    IrisFeatures,
    ModelInfo,
    PredictionResponse,
    check_batch_size,
    json_safe_errors,
)
from irisserve.settings import Settings, get_settings
from irisserve.startup import STARTUP_MARKS, mark

logger = logging.getLogger("irisserve")

DESCRIPTION = """Predict the species of an Iris flower from four measurements (centimetres).

One ONNX model artifact, verified by SHA-256 at start-up, served by ONNX Runtime.
Errors use FastAPI's shape: `{"detail": ...}`."""


def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

router = APIRouter()


@router.get("/health", response_model=HealthResponse, tags=["health"], responses={503: {"model": HealthResponse}})
async def read_health(predictor: PredictorDep) -> Any:
    """Liveness and readiness: 200 once the model is loaded and warmed up, 503 before (and while draining)."""
    body = {
        "status": "healthy" if predictor.ready else "unavailable: model not loaded",
        "model_loaded": predictor.ready,
        "model_version": predictor.version,
        "startup": STARTUP_MARKS,
    }
    return body if predictor.ready else JSONResponse(body, status_code=503)


@router.post("/predict", response_model=PredictionResponse, tags=["predict"])
async def create_prediction(features: IrisFeatures, predictor: PredictorDep) -> Any:
    """Predict one flower's species, with the probability of every class."""
    return predictor.predict_features([features])[0]


@router.post("/predict/batch", response_model=BatchResponse, tags=["predict"])
async def create_batch_prediction(batch: BatchRequest, predictor: PredictorDep, settings: SettingsDep) -> Any:
    """Predict many flowers in one vectorised call (up to IRISSERVE_MAX_BATCH_SIZE rows)."""
    check_batch_size(len(batch.instances), settings.max_batch_size)
    return {"predictions": predictor.predict_features(batch.instances), "model_version": predictor.version}


@router.get("/model/info", response_model=ModelInfo, tags=["model"])
async def read_model_info(predictor: PredictorDep) -> Any:
    """The served model: type, version, features and their training ranges, metrics, artifact hashes."""
    if not predictor.ready:
        raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
    return predictor.info()


async def handle_irisserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IrisServeError)
    return JSONResponse(error_body(exc), status_code=exc.status_code)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": json_safe_errors(exc.errors())}, status_code=422)


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
        mark("ready")
        yield
        predictor.ready = False

    app = FastAPI(
        title="irisserve: Iris classifier",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.include_router(router)
    app.include_router(v2.router)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(IrisServeError, handle_irisserve_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
    return app


mark("imports_done")


def __getattr__(name: str) -> Any:
    """``irisserve.app:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
