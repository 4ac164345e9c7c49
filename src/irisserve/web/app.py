"""The container web service: FastAPI routes over the shared request pipeline (``uvicorn irisserve.web.app:app``).

The routes are built from the served model's spec, so ``/docs`` shows that model's features; each handler
hands the body's bytes to the pipeline and sends back its bytes. ``GET /`` is the model page (``irisserve.ui``),
fed by /model/info, /model/inputs and /model/stats (this worker's live figures and drift window, ``ops/live.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from irisserve import __version__
from irisserve.core.errors import ArtifactError, IrisServeError
from irisserve.core.predictor import Predictor
from irisserve.core.registry import ModelRegistry, ServedModel, registry_from_settings
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
from irisserve.core.startup import mark, mark_ready
from irisserve.ops.asgi import error_body, error_reply, protocol_of
from irisserve.ops.cors import CorsMiddleware
from irisserve.ops.lifecycle import DrainMiddleware, drain_on_signals
from irisserve.ops.limits import ApiKeyMiddleware, BodyLimitMiddleware
from irisserve.ops.live import live_build, live_figures
from irisserve.ops.metrics import (
    RequestMetrics,
    export_drift,
    forget_model,
    mark_worker_exited,
    metrics_endpoint,
    record_model_load,
    record_predictions,
)
from irisserve.ops.middleware import ObservabilityMiddleware
from irisserve.ops.repository_sync import RepositorySync, rescan_on_sighup
from irisserve.ops.request_log import configure_logging
from irisserve.ui import render_page
from irisserve.web import v2
from irisserve.web.docs import build_docs_router
from irisserve.web.handlers import health_handler, predict_handler
from irisserve.web.models import build_models_router
from irisserve.web.routing import Endpoint, HotRoutes, ServedRoute, served_by

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


def declare_predict_routes(router: APIRouter, spec: ModelSpec, registry: ModelRegistry | None, settings: Settings) -> None:
    """``/predict`` and ``/predict/batch`` for ``spec``'s rows, answered by the registry's default model (without a
    registry: declared only, for a model's own OpenAPI document)."""

    def answered_by(batch: bool) -> Callable[[Endpoint], Endpoint]:
        if registry is None:
            return lambda endpoint: endpoint
        return served_by(predict_handler(registry, batch=batch, read_timeout=settings.read_timeout_seconds))

    @router.post(
        "/predict", response_model=spec.response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.request_model),
    )
    @answered_by(batch=False)
    async def create_prediction() -> None:
        """Predict one row: every feature, by name."""

    @router.post(
        "/predict/batch", response_model=spec.batch_response_model, tags=["predict"], responses=PREDICT_ERRORS,
        openapi_extra=request_body(spec.batch_model),
    )
    @answered_by(batch=True)
    async def create_batch_prediction() -> None:
        """Predict many rows in one vectorised call (up to IRISSERVE_MAX_BATCH_SIZE rows)."""


def build_router(registry: ModelRegistry, spec: ModelSpec, settings: Settings) -> APIRouter:
    """The seed API, generic over the model, for the default model (``spec``: its version at start-up, documented):
    health, predict, batch, model info."""
    router = APIRouter(route_class=ServedRoute)

    @router.get("/health", response_model=HealthResponse, tags=["health"], responses={503: {"model": HealthResponse}})
    @served_by(health_handler(registry))
    async def read_health() -> None:
        """Liveness and readiness: 200 once the model is loaded and warmed up, 503 before (and while draining)."""

    declare_predict_routes(router, spec, registry, settings)

    @router.get("/model/info", response_model=ModelInfo, tags=["model"], responses=_errors(401, 503))
    async def read_model_info() -> Any:
        """The served model: type, version, task, features and their training ranges, metrics, artifact hashes."""
        return model_info_body(registry.default().predictor)

    @router.get("/model/inputs", response_model=ModelInputs, tags=["model"], responses=_errors(401))
    async def read_model_inputs() -> Any:
        """What a row holds: each feature with its constraint and training range, and the example rows."""
        record = registry.snapshot.serving.get(registry.default_name)
        return model_inputs_body(spec if record is None else record.spec)

    return router


def build_live_router(registry: ModelRegistry) -> APIRouter:
    """This worker's live figures (the model page's panel) and its drift window, for the default model."""
    router = APIRouter(prefix="/model", tags=["model"], route_class=ServedRoute)

    @router.get("/stats", response_model=StatsResponse, responses=_errors(401, 503))
    async def read_model_stats() -> Any:
        """The last minute's requests by route (errors, p50/p99), rows by class and out-of-range since start, drift."""
        return stats_body(registry.default())

    @router.get("/drift", response_model=DriftReport, responses=_errors(401, 503))
    async def read_model_drift() -> Any:
        """Each feature's PSI: the recent inputs' bin shares against training; drifted above IRISSERVE_DRIFT_PSI_THRESHOLD."""
        record = registry.default()
        report = record.extras["live"].drift.report()
        export_drift(record.spec, report)
        return report

    return router


def model_openapi_for(settings: Settings) -> Callable[[ServedModel], dict[str, Any]]:
    """``/models/{name}/openapi.json``: the model's own document (its features, its answers), built once per loaded
    version the way the app's own is for the default model."""

    def model_openapi(record: ServedModel) -> dict[str, Any]:
        document: dict[str, Any] | None = record.extras.get("openapi")
        if document is None:
            spec = record.spec
            app = FastAPI(title=f"irisserve: {spec.title}", description=description_of(spec), version=__version__, docs_url=None, redoc_url=None)
            router = APIRouter(prefix=f"/models/{spec.name}", route_class=ServedRoute)
            declare_predict_routes(router, spec, None, settings)
            app.include_router(router)
            complete_openapi(app, spec, settings)
            document = record.extras["openapi"] = app.openapi()
        return document

    return model_openapi


def stats_body(record: ServedModel) -> dict[str, Any]:
    body: dict[str, Any] = record.extras["live"].body()
    export_drift(record.spec, body["drift"])
    return body


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
    """Build the app for the artifact in ``settings.model_dir``, or every artifact of ``settings.model_repository``
    (their manifests are read now, to build the routes); the models load (and warm up) in the lifespan, before the
    server accepts traffic."""
    settings = settings or get_settings()
    registry = registry_from_settings(
        settings, live_build(settings, also=record_predictions), dropped=lambda record: forget_model(record.name, record.version),
        predictor=predictor,
    )
    sync = RepositorySync(registry, settings.state_dir, workers=settings.workers, wait_seconds=settings.switch_wait_seconds)
    spec = registry.latest_spec(registry.default_name)
    if predictor is not None and predictor.ready:
        sync.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not registry.snapshot.loaded:
            problems = await asyncio.to_thread(sync.start)
            if registry.default_name not in registry.snapshot.serving:
                raise ArtifactError(f"The default model {registry.default_name!r} could not be loaded: {'; '.join(problems)}")
        for versions in registry.snapshot.loaded.values():
            for record in versions.values():
                record_model_load(record.spec, record.predictor.load_seconds)
        default = registry.default()
        logger.info(
            "Serving %d model version(s); default %s %s (loaded in %.3fs, warm-up %.4fs), backend %s",
            sum(len(v) for v in registry.snapshot.loaded.values()), default.name, default.version,
            default.predictor.load_seconds, default.predictor.warmup_seconds, settings.backend,
        )
        if registry.root is not None and not settings.api_key:
            logger.warning("The repository API (/v2/repository/...: load, unload) is open to every client: set IRISSERVE_API_KEY")
        mark_ready()
        restore_signals = drain_on_signals()
        restore_hup = rescan_on_sighup(sync)
        following = asyncio.create_task(sync.follow()) if settings.state_dir is not None else None
        yield
        if following is not None:
            following.cancel()
        restore_hup()
        for versions in registry.snapshot.loaded.values():
            for record in versions.values():
                record.predictor.ready = False
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
    app.state.registry = registry
    app.state.sync = sync
    app.include_router(build_docs_router(app.title, app.openapi_url or "/openapi.json"))
    if settings.ui:
        app.include_router(build_page_router(settings))
    seed_api = build_router(registry, spec, settings)
    app.include_router(seed_api)
    app.include_router(build_live_router(registry))
    models_api = build_models_router(registry, settings, model_openapi=model_openapi_for(settings), stats_body=stats_body)
    app.include_router(models_api)
    v2_api = v2.build_router(registry, spec, sync, settings)
    app.include_router(v2_api)
    complete_openapi(app, spec, settings)
    app.router.redirect_slashes = False  # /predict/ is a 404, never a redirect to http:// behind an HTTPS proxy
    app.add_exception_handler(IrisServeError, handle_irisserve_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)

    def export_every_drift() -> None:
        for versions in registry.snapshot.loaded.values():
            for record in versions.values():
                export_drift(record.spec, record.extras["live"].drift.report())

    scrape = metrics_endpoint(export_every_drift, max_age_seconds=settings.metrics_max_age_seconds)
    app.add_route("/metrics", scrape, include_in_schema=False)
    app.add_middleware(HotRoutes, routes=[*seed_api.routes, *models_api.routes, *v2_api.routes])  # added first: innermost
    add_serving_middleware(app, settings, registry)
    return app


def public_paths(settings: Settings) -> list[str]:
    """The paths open without the API key: the setting's, and the model page (it holds nothing secret; the
    calls it makes carry the key)."""
    return [*settings.public_paths, *([PAGE_PATH] if settings.ui else [])]


def add_serving_middleware(app: FastAPI, settings: Settings, registry: ModelRegistry | None = None) -> None:
    """The last added runs first: metrics and the request log wrap the others, so they see 401s and 413s too;
    CORS wraps the key and size checks, so a browser can read their answers; the hot endpoints are answered
    innermost, after every check, before FastAPI's routing."""
    request_log = configure_logging(settings)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, public_paths=public_paths(settings))
    app.add_middleware(CorsMiddleware, allowed=settings.cors_origins)
    app.add_middleware(DrainMiddleware)
    app.add_middleware(ObservabilityMiddleware, request_log=request_log, live=live_figures(lambda: registry), metrics=RequestMetrics())


mark("imports_done")


def __getattr__(name: str) -> Any:
    """``irisserve.web.app:app`` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
