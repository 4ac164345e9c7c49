"""The Cloud Function front door: translate a ``flask.Request`` into calls on the shared request pipeline.

``handle`` returns ``(body, status, headers)`` and never lets an exception out: functions-framework would
answer it with an HTML 500. The model lives in a module-level cache, filled on the first request
(``IRISSERVE_FUNCTION_LOAD=lazy``) or when this module is imported (``import``), with this instance's live
figures and drift window (``ops/live.py``), reported in the GET JSON. A GET whose Accept prefers text/html gets
the model page (``irisserve.ui``), pointed at this one URL.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import ClientDisconnected

from irisserve.core.errors import (
    ArtifactError,
    BadRequestError,
    IrisServeError,
    ModelNotReadyError,
    RequestTimeoutError,
    encode_json,
    error_answer,
)
from irisserve.core.pipeline import DISCARD_MAX_BYTES, Limits, RequestPipeline, body_too_large
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import health_body, model_info_body, model_inputs_body
from irisserve.core.settings import Settings, get_settings
from irisserve.core.startup import mark
from irisserve.ops.cors import ALLOWED_METHODS, cors_headers
from irisserve.ops.drift import DriftMonitor
from irisserve.ops.lifecycle import is_draining
from irisserve.ops.live import LiveStats
from irisserve.ui import render_page

logger = logging.getLogger("irisserve")

JSON_HEADERS = {"Content-Type": "application/json"}
INTERNAL_ERROR = "Internal server error; the incident was logged."
BODY_TOO_SLOW = "The request body did not arrive in time; send it in one go (or fewer rows per request)."
BODY_CUT_SHORT = "The client disconnected before sending the whole body."
_READ_CHUNK = 64 * 1024

HTML = "text/html"
# The function has one URL: its live figures count requests by method on this route label.
ROUTE = "/"

Reply = tuple[bytes, int, dict[str, str]]

_PIPELINE: RequestPipeline | None = None
_LIVE: LiveStats | None = None
_LOAD_LOCK = threading.Lock()


def load_model(settings: Settings | None = None) -> RequestPipeline:
    """The process's request pipeline over a loaded (verified, warmed-up) model, built once;
    ModelNotReadyError if the model cannot load. A failed load is not cached: the next request tries again."""
    global _PIPELINE
    if _PIPELINE is not None:
        return _PIPELINE
    with _LOAD_LOCK:  # functions-framework serves on a thread pool: the first requests may arrive together
        if _PIPELINE is None:
            _PIPELINE = _load(settings or get_settings())
        return _PIPELINE


def _load(settings: Settings) -> RequestPipeline:
    global _LIVE
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
    _LIVE = live
    return RequestPipeline(predictor, Limits(settings.max_body_bytes, settings.max_batch_size), observe=live.observe)


def handle(request: flask.Request, *, settings: Settings | None = None) -> Reply:
    """Answer one HTTP request: POST predicts, GET reports health and the model, OPTIONS is the CORS preflight."""
    mark("first_request")
    started = time.perf_counter()
    try:
        settings = settings or get_settings()
        body, status, headers = _dispatch(request, settings)
        headers |= cors_headers(request.headers.get("Origin"), settings.cors_origins, preflight=request.method == "OPTIONS")
        if is_draining():  # after SIGTERM: clients move to a fresh connection (function/server.py closes this one)
            headers["Connection"] = "close"
        if _LIVE is not None:
            _LIVE.record_request(request.method, ROUTE, status, time.perf_counter() - started)
        return body, status, headers
    except Exception:
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return encode_json({"detail": INTERNAL_ERROR}), 500, dict(JSON_HEADERS)


def _dispatch(request: flask.Request, settings: Settings) -> Reply:
    """Route by method; every IrisServeError becomes its JSON answer (the status table is in errors.py)."""
    try:
        return _ROUTES.get(request.method, _refuse_method)(request, settings)
    except IrisServeError as exc:
        status, body = error_answer(exc)
        return body, status, dict(JSON_HEADERS)


def _predict(request: flask.Request, settings: Settings) -> Reply:
    """One row, or a batch when the object has ``instances``; the same bodies as the web service."""
    body = _read_body(request, settings.max_body_bytes)
    answer = load_model(settings).predict_any(body, content_encoding=request.headers.get("Content-Encoding"))
    return answer.body, 200, {**JSON_HEADERS, "Server-Timing": answer.server_timing}


def _read_body(request: flask.Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` + 1 bytes, so an oversized (or chunked) body is refused unread."""
    length = request.content_length
    if length is not None and length > limit:
        _discard(request, length)
        raise body_too_large(limit, length)
    chunks: list[bytes] = []
    received = 0
    while received <= limit:
        chunk = _read(request, min(_READ_CHUNK, limit + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    if received > limit:
        _discard(request, DISCARD_MAX_BYTES)
        raise body_too_large(limit)
    if length is not None and received < length:  # gunicorn ends the stream early when the client goes
        raise BadRequestError(BODY_CUT_SHORT)
    return b"".join(chunks)


def _read(request: flask.Request, size: int) -> bytes:
    """One read of the body: a client too slow to send it gets 408; one gone mid-body, 400 (read by no one)."""
    try:
        return request.stream.read(size)
    except (OSError, ClientDisconnected) as exc:
        slow = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
        raise (RequestTimeoutError(BODY_TOO_SLOW) if slow else BadRequestError(BODY_CUT_SHORT)) from None


def _discard(request: flask.Request, length: int) -> None:
    """Read and drop (up to DISCARD_MAX_BYTES of) a refused body, so the client reads its 413 instead of a
    reset: closing a socket with unread data makes the kernel send one (see ops/limits.discard_body)."""
    left = min(length, DISCARD_MAX_BYTES)
    with contextlib.suppress(OSError, ClientDisconnected):  # too slow or gone: the 413 is answered all the same
        while left > 0 and (chunk := request.stream.read(min(_READ_CHUNK, left))):
            left -= len(chunk)


def _get(request: flask.Request, settings: Settings) -> Reply:
    """The model page for a browser (Accept prefers text/html, IRISSERVE_UI on), else the JSON report."""
    if settings.ui and request.accept_mimetypes.best_match(["application/json", HTML]) == HTML:
        page = render_page(door="function", auth=False)
        return page.body, 200, dict(page.headers)
    return _health(request, settings)


def _health(request: flask.Request, settings: Settings) -> Reply:
    """The web service's /health body plus the load mode, /model/info's and /model/inputs' bodies and
    /model/stats' (this instance's live figures and drift); asking loads the model in lazy mode, 503 with the
    reason if it cannot."""
    try:
        pipeline = load_model(settings)
    except ModelNotReadyError as exc:
        status, body = health_body(None, reason=str(exc))
        return encode_json({**body, "load_mode": settings.function_load}), status, dict(JSON_HEADERS)
    status, body = health_body(pipeline.predictor, draining=is_draining())
    reply: dict[str, Any] = {
        **body,
        "load_mode": settings.function_load,
        "model": model_info_body(pipeline.predictor),
        "inputs": model_inputs_body(pipeline.spec),
    }
    if _LIVE is not None:
        reply["stats"] = _LIVE.body()
    return encode_json(reply), status, dict(JSON_HEADERS)


def _preflight(request: flask.Request, settings: Settings) -> Reply:
    """204; ``handle`` adds the Access-Control-* headers when the Origin is allowed."""
    return b"", 204, {"Allow": ALLOWED_METHODS}


def _refuse_method(request: flask.Request, settings: Settings) -> Reply:
    detail = f"Method {request.method} is not allowed: POST predicts, GET reports health and the model."
    return encode_json({"detail": detail}), 405, {**JSON_HEADERS, "Allow": ALLOWED_METHODS}


_ROUTES: dict[str, Callable[[flask.Request, Settings], Reply]] = {
    "POST": _predict,
    "GET": _get,
    "HEAD": _health,
    "OPTIONS": _preflight,
}


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
