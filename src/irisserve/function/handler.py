"""The Cloud Function front door as ASGI: one URL, where POST predicts (a row, or ``{"instances": [...]}``), GET and
HEAD report health and the model (or give the model page to a browser), OPTIONS is the CORS preflight.

functions-framework serves an ``@functions_framework.aio.http`` function on gunicorn with uvicorn workers
(``function/server.py`` tunes them); ``cloud_function/main.py`` hands each request to ``function_app``, which
is the web service's ASGI stack (``ops/``: request log and live figures, drain, CORS, body limit, the same
read-and-drop, the same error shapes) around the dispatch below. The model lives in a module-level cache, filled
on the first request (``IRISSERVE_FUNCTION_LOAD=lazy``) or when this module is imported (``import``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from irisserve.core.errors import ArtifactError, IrisServeError, ModelNotReadyError, encode_json
from irisserve.core.registry import ModelRegistry, ServedModel, registry_from_settings
from irisserve.core.schemas import health_body, model_info_body, model_inputs_body
from irisserve.core.settings import Settings, get_settings
from irisserve.core.startup import mark, mark_ready
from irisserve.ops.asgi import Reply, answer_body, header, prediction_reply, send_body, send_error, send_json
from irisserve.ops.cors import ALLOWED_METHODS, CorsMiddleware
from irisserve.ops.lifecycle import DrainMiddleware, is_draining
from irisserve.ops.limits import BodyLimitMiddleware, BodyTooLarge
from irisserve.ops.live import live_build, live_figures
from irisserve.ops.middleware import ObservabilityMiddleware
from irisserve.ops.request_log import configure_logging
from irisserve.ui import render_page

logger = logging.getLogger("irisserve")

INTERNAL_ERROR = "Internal server error; the incident was logged."
HTML = "text/html"
JSON = "application/json"

_REGISTRY: ModelRegistry | None = None
_RESCAN_AFTER_FORK = threading.Event()
_LOAD_LOCK = threading.Lock()


class FunctionRoute:
    """The function's one route, as metrics, logs and error shapes read it (``scope["route"]``)."""

    path = "/"
    protocol = "seed"


ROUTE = FunctionRoute()


def load_model(settings: Settings | None = None) -> ModelRegistry:
    """The process's served models (IRISSERVE_MODEL_DIR's artifact, or IRISSERVE_MODEL_REPOSITORY's every one), loaded
    (verified, warmed up) once; ModelNotReadyError if the default model cannot load. A failed load is not cached:
    the next request tries again. A worker forked from a process that had loaded them (IRISSERVE_FUNCTION_LOAD=import,
    gunicorn's reload after SIGHUP) rescans the repository on its first request, so it serves what is there now."""
    if _REGISTRY is not None and not _RESCAN_AFTER_FORK.is_set():
        return _REGISTRY
    with _LOAD_LOCK:  # the event loop loads it; a caller on another thread (a test, a tool) must not load it twice
        return _load(settings or get_settings())


def _load(settings: Settings) -> ModelRegistry:
    global _REGISTRY
    if _REGISTRY is not None and _RESCAN_AFTER_FORK.is_set():
        _RESCAN_AFTER_FORK.clear()
        _REGISTRY.reconcile()
    if _REGISTRY is None:
        _RESCAN_AFTER_FORK.clear()  # what is loaded now is what is on disk now
        try:
            registry = registry_from_settings(settings, live_build(settings))
            problems = registry.reconcile()
        except ArtifactError as exc:
            raise ModelNotReadyError(f"The model could not be loaded: {exc}") from exc
        if registry.default_name not in registry.snapshot.serving:
            raise ModelNotReadyError(f"The model could not be loaded: {'; '.join(problems)}")
        record = registry.default()
        mark_ready()
        logger.info(
            "Model %s %s loaded (%s) in %.3fs, warm-up %.4fs",
            record.name, record.version, settings.function_load, record.predictor.load_seconds, record.predictor.warmup_seconds,
        )
        _REGISTRY = registry
    return _REGISTRY


def default_model(settings: Settings | None = None) -> ServedModel:
    return load_model(settings).default()


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html above application/json (a browser's does; a tie, or no header, is
    JSON): Werkzeug's content negotiation, as the function's Flask mode answered it."""
    return parse_accept_header(accept, MIMEAccept).best_match([JSON, HTML]) == HTML


class FunctionDispatch:
    """By method: POST predicts, GET/HEAD report (or the page), anything else 405. Never lets an exception out:
    functions-framework would answer it with a text/plain 500."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mark("first_request")
        try:
            method = scope["method"]
            if method == "POST":
                await self.predict(scope, receive, send)
            elif method in ("GET", "HEAD"):
                await self.report(scope, send)
            else:
                detail = f"Method {method} is not allowed: POST predicts, GET reports health and the model."
                await send_json(send, 405, encode_json({"detail": detail}), (b"allow", ALLOWED_METHODS.encode()))
        except IrisServeError as exc:
            await send_error(scope, send, exc)
        except BodyTooLarge:
            raise  # BodyLimitMiddleware's to answer
        except Exception:
            logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            await send_json(send, 500, encode_json({"detail": INTERNAL_ERROR}))

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One row, or a batch when the object has ``instances``; the same bodies as the web service."""

        def handle(body: bytes) -> Reply:
            record = default_model(self.settings)
            scope.setdefault("state", {})["served"] = record
            return prediction_reply(record.pipeline.predict_any(body, content_encoding=header(scope, b"content-encoding")))

        await answer_body(scope, receive, send, handle, read_timeout=self.settings.read_timeout_seconds)

    async def report(self, scope: Scope, send: Send) -> None:
        """The model page for a browser (Accept prefers text/html, IRISSERVE_UI on), else the JSON report: the web
        service's /health body plus the load mode, /model/info's, /model/inputs' and /model/stats' bodies. Asking
        loads the model in lazy mode; 503 with the reason if it cannot. HEAD gets GET's headers."""
        vary = (b"vary", b"Accept")
        if self.settings.ui and prefers_html(header(scope, b"accept")):
            page = render_page(door="function", auth=False)
            headers = [(name.lower().encode(), value.encode()) for name, value in page.headers.items()]
            await send_body(send, 200, page.body, [*headers, vary])
            return
        await send_json(send, *self.health(), vary)

    def health(self) -> tuple[int, bytes]:
        load_mode = self.settings.function_load
        try:
            record = default_model(self.settings)
        except ModelNotReadyError as exc:
            status, body = health_body(None, reason=str(exc))
            return status, encode_json({**body, "load_mode": load_mode})
        status, body = health_body(record.predictor, draining=is_draining())
        reply: dict[str, Any] = {
            **body, "load_mode": load_mode, "model": model_info_body(record.predictor), "inputs": model_inputs_body(record.spec),
            "stats": record.extras["live"].body(),
        }
        return status, encode_json(reply)


def create_function_app(settings: Settings | None = None) -> ASGIApp:
    """The function's ASGI app: the web service's middleware (minus Prometheus and the API key: Cloud Functions
    authenticates with IAM) around ``FunctionDispatch``."""
    settings = settings or get_settings()
    app: ASGIApp = FunctionDispatch(settings)
    app = BodyLimitMiddleware(app, max_body_bytes=settings.max_body_bytes)
    app = CorsMiddleware(app, allowed=settings.cors_origins)
    app = DrainMiddleware(app)
    observed = ObservabilityMiddleware(app, request_log=configure_logging(settings), live=live_figures(lambda: _REGISTRY))

    async def function_app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = ROUTE  # every path is the function's one URL
        await observed(scope, receive, send)

    return function_app


def _exit_without_native_teardown() -> None:
    """End a forked worker without ONNX Runtime's C++ teardown.

    functions-framework imports this module in gunicorn's master and then forks the worker. A child that
    inherits an initialised ONNX Runtime predicts fine, but its teardown at exit waits for threads that
    exist only in the parent: the worker hangs until gunicorn kills it (SIGABRT). Registered last, this
    runs first among the atexit handlers."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


mark("imports_done")
os.register_at_fork(after_in_child=_RESCAN_AFTER_FORK.set)
if get_settings().function_load == "import":
    load_model()
    os.register_at_fork(after_in_child=lambda: atexit.register(_exit_without_native_teardown))
