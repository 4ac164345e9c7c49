"""The Cloud Function front door: translate a ``flask.Request`` into calls on the shared core.

``handle`` returns ``(body, status, headers)`` and never lets an exception out: functions-framework would
answer it with an HTML 500. The model lives in a module-level cache, filled on the first request
(``IRISSERVE_FUNCTION_LOAD=lazy``) or when this module is imported (``import``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import flask

from irisserve.ops.cors import cors_headers
from irisserve.core.errors import ArtifactError, IrisServeError, ModelNotReadyError, error_body
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import BatchRequest, IrisFeatures, body_too_large, check_batch_size, decode_json, parse_request
from irisserve.core.settings import Settings, get_settings
from irisserve.core.startup import STARTUP_MARKS, mark

logger = logging.getLogger("irisserve")

METHODS = ("GET", "HEAD", "POST", "OPTIONS")
JSON_HEADERS = {"Content-Type": "application/json"}
INTERNAL_ERROR = "Internal server error; the incident was logged."
_READ_CHUNK = 64 * 1024

Body = dict[str, Any]
Reply = tuple[Body | None, int, dict[str, str]]

_PREDICTOR: Predictor | None = None
_LOAD_LOCK = threading.Lock()


def load_model(settings: Settings | None = None) -> Predictor:
    """The process's Predictor, loaded (verified and warmed up) once; ModelNotReadyError if it cannot load.

    A failed load is not cached: the next request tries again."""
    global _PREDICTOR
    if _PREDICTOR is not None:
        return _PREDICTOR
    with _LOAD_LOCK:  # functions-framework serves on a thread pool: the first requests may arrive together
        if _PREDICTOR is None:
            _PREDICTOR = _load(settings or get_settings())
        return _PREDICTOR


def _load(settings: Settings) -> Predictor:
    predictor = Predictor(settings.model_dir, backend=settings.backend)
    try:
        predictor.load()
    except ArtifactError as exc:
        raise ModelNotReadyError(f"The model could not be loaded: {exc}") from exc
    mark("ready")
    logger.info(
        "Model %s loaded (%s) in %.3fs, warm-up %.4fs",
        predictor.version, settings.function_load, predictor.load_seconds, predictor.warmup_seconds,
    )
    return predictor


def handle(request: flask.Request, *, settings: Settings | None = None) -> tuple[bytes, int, dict[str, str]]:
    """Answer one HTTP request: POST predicts, GET reports health and the model, OPTIONS is the CORS preflight."""
    mark("first_request")
    try:
        settings = settings or get_settings()
        body, status, headers = _dispatch(request, settings)
        headers |= cors_headers(request.headers.get("Origin"), settings.cors_origins, preflight=request.method == "OPTIONS")
        return _respond(body, status, headers)
    except Exception:
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return _respond({"detail": INTERNAL_ERROR}, 500, {})


def _dispatch(request: flask.Request, settings: Settings) -> Reply:
    """Route by method; every IrisServeError becomes its JSON answer (the status table is in errors.py)."""
    try:
        return _ROUTES.get(request.method, _refuse_method)(request, settings)
    except IrisServeError as exc:
        return error_body(exc), exc.status_code, {}


def _predict(request: flask.Request, settings: Settings) -> Reply:
    """A single flower, or a batch when the object has ``instances``; the same bodies as the web service."""
    started = time.perf_counter()
    payload = decode_json(_read_body(request, settings.max_body_bytes))
    is_batch = isinstance(payload, dict) and "instances" in payload
    instances = _parse_batch(payload, settings) if is_batch else [parse_request(IrisFeatures, payload)]
    parsed = time.perf_counter()
    predictor = load_model(settings)
    predictions = predictor.predict_features(instances)
    timing = {"parse": parsed - started, "predict": time.perf_counter() - parsed}
    body = {"predictions": predictions, "model_version": predictor.version} if is_batch else predictions[0]
    return body, 200, {"Server-Timing": _server_timing(timing)}


def _parse_batch(payload: Any, settings: Settings) -> list[IrisFeatures]:
    batch = parse_request(BatchRequest, payload)
    check_batch_size(len(batch.instances), settings.max_batch_size)
    return batch.instances


def _read_body(request: flask.Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` + 1 bytes, so an oversized (or chunked) body is refused unread."""
    length = request.content_length
    if length is not None and length > limit:
        raise body_too_large(limit, length)
    chunks: list[bytes] = []
    received = 0
    while received <= limit:
        chunk = request.stream.read(min(_READ_CHUNK, limit + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    if received > limit:
        raise body_too_large(limit)
    return b"".join(chunks)


def _health(request: flask.Request, settings: Settings) -> Reply:
    """Health and model info; asking loads the model in lazy mode, 503 with the reason if it cannot."""
    try:
        predictor = load_model(settings)
    except ModelNotReadyError as exc:
        return _health_body(None, settings, status=f"unavailable: {exc}"), 503, {}
    return {**_health_body(predictor, settings, status="healthy"), "model": predictor.info()}, 200, {}


def _health_body(predictor: Predictor | None, settings: Settings, *, status: str) -> Body:
    return {
        "status": status,
        "model_loaded": predictor is not None and predictor.ready,
        "model_version": predictor.version if predictor else None,
        "startup": dict(STARTUP_MARKS),
        "load_mode": settings.function_load,
    }


def _preflight(request: flask.Request, settings: Settings) -> Reply:
    """204; ``handle`` adds the Access-Control-* headers when the Origin is allowed."""
    return None, 204, {"Allow": ", ".join(METHODS)}


def _refuse_method(request: flask.Request, settings: Settings) -> Reply:
    detail = f"Method {request.method} is not allowed: POST predicts, GET reports health and the model."
    return {"detail": detail}, 405, {"Allow": ", ".join(METHODS)}


def _respond(body: Body | None, status: int, headers: dict[str, str]) -> tuple[bytes, int, dict[str, str]]:
    if body is None:
        return b"", status, headers
    return _encode(body), status, {**JSON_HEADERS, **headers}


def _encode(body: Body) -> bytes:
    """JSON as Starlette's JSONResponse writes it, so both front doors send the same bytes."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _server_timing(stages: dict[str, float]) -> str:
    """The W3C Server-Timing header: each stage's duration in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())


_ROUTES: dict[str, Callable[[flask.Request, Settings], Reply]] = {
    "POST": _predict,
    "GET": _health,
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
