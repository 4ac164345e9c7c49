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
from irisserve.core.pipeline import Limits, RequestPipeline
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import health_body, model_info_body, model_inputs_body
from irisserve.core.settings import Settings, get_settings
from irisserve.core.startup import mark
from irisserve.ops.asgi import Reply, answer_body, header, prediction_reply, send_body, send_error, send_json
from irisserve.ops.cors import ALLOWED_METHODS, CorsMiddleware
from irisserve.ops.drift import DriftMonitor
from irisserve.ops.lifecycle import DrainMiddleware, is_draining
from irisserve.ops.limits import BodyLimitMiddleware, BodyTooLarge
from irisserve.ops.live import LiveStats
from irisserve.ops.middleware import ObservabilityMiddleware
from irisserve.ops.request_log import configure_logging
from irisserve.ui import render_page

logger = logging.getLogger("irisserve")

INTERNAL_ERROR = "Internal server error; the incident was logged."
HTML = "text/html"
JSON = "application/json"

_PIPELINE: RequestPipeline | None = None
_LIVE: LiveStats | None = None
_LOAD_LOCK = threading.Lock()


class FunctionRoute:
    """The function's one route, as metrics, logs and error shapes read it (``scope["route"]``)."""

    path = "/"
    protocol = "seed"


ROUTE = FunctionRoute()


def load_model(settings: Settings | None = None) -> RequestPipeline:
    """The process's request pipeline over a loaded (verified, warmed-up) model, built once; ModelNotReadyError if
    the model cannot load. A failed load is not cached: the next request tries again."""
    if _PIPELINE is not None:
        return _PIPELINE
    with _LOAD_LOCK:  # the event loop loads it; a caller on another thread (a test, a tool) must not load it twice
        return _load(settings or get_settings())


def _load(settings: Settings) -> RequestPipeline:
    global _PIPELINE, _LIVE
    if _PIPELINE is None:
        predictor = Predictor(settings.model_dir, backend=settings.backend)
        try:
            predictor.load()
        except ArtifactError as exc:
            raise ModelNotReadyError(f"The model could not be loaded: {exc}") from exc
        mark("ready")
        logger.info(
            "Model %s %s loaded (%s) in %.3fs, warm-up %.4fs",
            predictor.spec.name, predictor.version, settings.function_load, predictor.load_seconds, predictor.warmup_seconds,
        )
        live = LiveStats(predictor.spec, DriftMonitor(predictor.spec, threshold=settings.drift_psi_threshold))
        _PIPELINE = RequestPipeline(predictor, Limits(settings.max_body_bytes, settings.max_batch_size), observe=live.observe)
        _LIVE = live
    return _PIPELINE


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
            return prediction_reply(load_model(self.settings).predict_any(body, content_encoding=header(scope, b"content-encoding")))

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
            pipeline = load_model(self.settings)
        except ModelNotReadyError as exc:
            status, body = health_body(None, reason=str(exc))
            return status, encode_json({**body, "load_mode": load_mode})
        status, body = health_body(pipeline.predictor, draining=is_draining())
        reply: dict[str, Any] = {
            **body, "load_mode": load_mode, "model": model_info_body(pipeline.predictor), "inputs": model_inputs_body(pipeline.spec),
        }
        if _LIVE is not None:
            reply["stats"] = _LIVE.body()
        return status, encode_json(reply)


def create_function_app(settings: Settings | None = None) -> ASGIApp:
    """The function's ASGI app: the web service's middleware (minus Prometheus and the API key: Cloud Functions
    authenticates with IAM) around ``FunctionDispatch``."""
    settings = settings or get_settings()
    app: ASGIApp = FunctionDispatch(settings)
    app = BodyLimitMiddleware(app, max_body_bytes=settings.max_body_bytes)
    app = CorsMiddleware(app, allowed=settings.cors_origins)
    app = DrainMiddleware(app)
    observed = ObservabilityMiddleware(app, request_log=configure_logging(settings), live=lambda: _LIVE)

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
if get_settings().function_load == "import":
    load_model()
    os.register_at_fork(after_in_child=lambda: atexit.register(_exit_without_native_teardown))
