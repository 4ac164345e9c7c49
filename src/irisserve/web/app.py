"""The container web service: FastAPI routes over the shared request pipeline (``uvicorn irisserve.web.app:app``).

The routes are built from the served model's spec, so ``/docs`` shows that model's features; each handler
hands the body's bytes to the pipeline and sends back its bytes. ``GET /`` is the model page (``irisserve.ui``),
fed by /model/info, /model/inputs and /model/stats (this worker's live figures and drift window, ``ops/live.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from irisserve import __version__
from irisserve.core.errors import (
    IrisServeError,
    ModelNotReadyError,
)
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import Predictions, Predictor
from irisserve.core.schemas import (
    DriftReport,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelInputs,
    StatsResponse,
    model_info_body,
    model_inputs_body,
)
from irisserve.core.settings import Settings, get_settings
from irisserve.core.spec import ModelSpec
from irisserve.core.startup import mark
from irisserve.ops.asgi import error_body, error_reply, protocol_of
from irisserve.ops.cors import CorsMiddleware
from irisserve.ops.drift import DriftMonitor
from irisserve.ops.lifecycle import DrainMiddleware, drain_on_signals
from irisserve.ops.limits import ApiKeyMiddleware, BodyLimitMiddleware
from irisserve.ops.live import LiveStats
from irisserve.ops.metrics import (
    RequestMetrics,
    export_drift,
    mark_worker_exited,
    metrics_endpoint,
    record_model_load,
    record_predictions,
)
from irisserve.ops.middleware import ObservabilityMiddleware
from irisserve.ops.request_log import configure_logging
from irisserve.ui import render_page
from irisserve.web import v2
from irisserve.web.docs import build_docs_router
from irisserve.web.handlers import health_handler, predict_handler
from irisserve.web.routing import HotRoutes, ServedRoute, served_by

logger = logging.getLogger("irisserve")

JSON = "application/json"
COMPONENTS = "#/components/schemas/"
PAGE_PATH = "/"
# OpenAPI security schemes for IRISSERVE_API_KEY, so Swagger UI's "Authorize" sends the key.
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <IRISSERVE_API_KEY>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: <IRISSERVE_API_KEY>"},
}


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


def description_of(spec: ModelSpec) -> str:
    what = f"the class ({', '.join(spec.targets)})" if spec.is_classifier else f"{spec.targets[0]}"
    return (
        f"Predict {what} from {len(spec.features)} features with model `{spec.name}` {spec.version}.\n\n"
        "One ONNX model artifact, verified by SHA-256 at start-up, served by ONNX Runtime.\n"
        'Errors use FastAPI\'s shape: `{"detail": ...}`.'
    )


def build_router(pipeline: RequestPipeline, settings: Settings) -> APIRouter:
    """The seed API, generic over the model: health, predict, batch, model info."""
    spec, predictor = pipeline.spec, pipeline.predictor
    router = APIRouter(route_class=ServedRoute)

    @router.get("/health", response_model=HealthResponse, tags=["health"], responses={503: {"model": HealthResponse}})
    @served_by(health_handler(predictor))
    async def read_health() -> None:
        """Liveness and readiness: 200 once the model is loaded and warmed up, 503 before (and while draining)."""

    @router.post(
        "/predict", response_model=spec.response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.request_model),
    )
    @served_by(predict_handler(pipeline.predict_one, settings.read_timeout_seconds))
    async def create_prediction() -> None:
        """Predict one row: every feature, by name."""

    @router.post(
        "/predict/batch", response_model=spec.batch_response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.batch_model),
    )
    @served_by(predict_handler(pipeline.predict_batch, settings.read_timeout_seconds))
    async def create_batch_prediction() -> None:
        """Predict many rows in one vectorised call (up to IRISSERVE_MAX_BATCH_SIZE rows)."""

    @router.get("/model/info", response_model=ModelInfo, tags=["model"], responses=_errors(401, 503))
    async def read_model_info() -> Any:
        """The served model: type, version, task, features and their training ranges, metrics, artifact hashes."""
        if not predictor.ready:
            raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
        return model_info_body(predictor)

    @router.get("/model/inputs", response_model=ModelInputs, tags=["model"], responses=_errors(401))
    async def read_model_inputs() -> Any:
        """What a row holds: each feature with its constraint and training range, and the example rows."""
        return model_inputs_body(spec)

    return router


def build_live_router(live: LiveStats) -> APIRouter:
    """This worker's live figures (the model page's panel) and its drift window."""
    router = APIRouter(prefix="/model", tags=["model"], route_class=ServedRoute)

    @router.get("/stats", response_model=StatsResponse, responses=_errors(401))
    async def read_model_stats() -> Any:
        """The last minute's requests by route (errors, p50/p99), rows by class and out-of-range since start, drift."""
        body = live.body()
        export_drift(body["drift"])
        return body

    @router.get("/drift", response_model=DriftReport, responses=_errors(401))
    async def read_model_drift() -> Any:
        """Each feature's PSI: the recent inputs' bin shares against training; drifted above IRISSERVE_DRIFT_PSI_THRESHOLD."""
        report = live.drift.report()
        export_drift(report)
        return report

    return router


def build_page_router(settings: Settings) -> APIRouter:
    """``GET /``: the model page (off with IRISSERVE_UI=false); it needs no key, the calls it makes do."""
    router = APIRouter(tags=["ui"], route_class=ServedRoute)

    @router.get(PAGE_PATH, response_class=HTMLResponse)
    async def read_page() -> Response:
        """The model page: card, try-it form, batch box and live panel, in one self-contained HTML file."""
        page = render_page(door="web", auth=bool(settings.api_key))
        return Response(page.body, headers=page.headers)

    return router


async def handle_irisserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IrisServeError)
    status, body = error_reply(request.scope, exc)
    return Response(body, status_code=status, media_type=JSON)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """404 and 405 from routing, in the protocol's error shape (headers such as Allow kept)."""
    assert isinstance(exc, StarletteHTTPException)
    body = error_body(protocol_of(request.scope), exc.detail)
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=JSON)


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error; the incident was logged."}, status_code=500)


def complete_openapi(app: FastAPI, spec: ModelSpec, settings: Settings) -> None:
    """The generated request models, as components the routes' requestBody entries point at; with an API
    key, its security schemes on every operation but the public paths."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for model in (spec.request_model, spec.batch_model):
                model_schema = model.model_json_schema(ref_template=COMPONENTS + "{model}")
                schemas.update(model_schema.pop("$defs", {}))
                schemas[model.__name__] = model_schema
            components["schemas"] = dict(sorted(schemas.items()))
            if settings.api_key:
                components["securitySchemes"] = SECURITY_SCHEMES
                for path, operations in schema["paths"].items():
                    for operation in operations.values():
                        operation["security"] = [] if path in public_paths(settings) else [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """Build the app for the artifact in ``settings.model_dir`` (its manifest is read now, to build the routes);
    the model loads (and warms up) in the lifespan, before the server accepts traffic."""
    settings = settings or get_settings()
    predictor = predictor or Predictor(settings.model_dir, backend=settings.backend)
    live = LiveStats(predictor.spec, DriftMonitor(predictor.spec, threshold=settings.drift_psi_threshold))

    def observe(spec: ModelSpec, matrix: np.ndarray, predictions: Predictions, flags: list[list[str]], seconds: float) -> None:
        record_predictions(spec, matrix, predictions, flags, seconds)
        live.observe(spec, matrix, predictions, flags, seconds)

    pipeline = RequestPipeline(predictor, Limits(settings.max_body_bytes, settings.max_batch_size), observe=observe)
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
        docs_url=None,  # web/docs.py serves /docs and /redoc with their assets from here, not a CDN
        redoc_url=None,
        # Prometheus and our own request log cover this; FastAPI's OpenTelemetry hook otherwise looks up
        # three global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.pipeline = pipeline
    app.state.live = live
    app.include_router(build_docs_router(app.title, app.openapi_url or "/openapi.json"))
    if settings.ui:
        app.include_router(build_page_router(settings))
    seed_api = build_router(pipeline, settings)
    app.include_router(seed_api)
    app.include_router(build_live_router(live))
    v2_api = v2.build_router(pipeline, settings)
    app.include_router(v2_api)
    complete_openapi(app, spec, settings)
    app.router.redirect_slashes = False  # /predict/ is a 404, never a redirect to http:// behind an HTTPS proxy
    app.add_exception_handler(IrisServeError, handle_irisserve_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)
    scrape = metrics_endpoint(lambda: export_drift(live.drift.report()), max_age_seconds=settings.metrics_max_age_seconds)
    app.add_route("/metrics", scrape, include_in_schema=False)
    app.add_middleware(HotRoutes, routes=[*seed_api.routes, *v2_api.routes])  # added first: innermost
    add_serving_middleware(app, settings, live)
    return app


def public_paths(settings: Settings) -> list[str]:
    """The paths open without the API key: the setting's, and the model page (it holds nothing secret; the
    calls it makes carry the key)."""
    return [*settings.public_paths, *([PAGE_PATH] if settings.ui else [])]


def add_serving_middleware(app: FastAPI, settings: Settings, live: LiveStats | None = None) -> None:
    """The last added runs first: metrics and the request log wrap the others, so they see 401s and 413s too;
    CORS wraps the key and size checks, so a browser can read their answers; the hot endpoints are answered
    innermost, after every check, before FastAPI's routing."""
    request_log = configure_logging(settings)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, public_paths=public_paths(settings))
    app.add_middleware(CorsMiddleware, allowed=settings.cors_origins)
    app.add_middleware(DrainMiddleware)
    app.add_middleware(ObservabilityMiddleware, request_log=request_log, live=lambda: live, metrics=RequestMetrics())


mark("imports_done")


def __getattr__(name: str) -> Any:
    """``irisserve.web.app:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
