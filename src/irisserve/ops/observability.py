"""Prometheus metrics, one structured log line per request, request ids and trace context.

The middleware is plain ASGI (Starlette's BaseHTTPMiddleware costs tens of microseconds a request) and
does a few dictionary look-ups per request: metric children are cached by label values, headers are
scanned once, and only requests no route handled are matched against the route templates. Every label
value comes from a bounded set, so hostile paths or methods cannot grow the metrics. With several workers, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by ``irisserve serve``) lets /metrics add up every worker's counts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from irisserve.ops.lifecycle import MULTIPROC_ENV
from irisserve.core.schemas import FEATURE_NAMES

if TYPE_CHECKING:
    from irisserve.core.predictor import Predictor
    from irisserve.core.schemas import IrisFeatures
    from irisserve.core.settings import Settings

logger = logging.getLogger("irisserve")

PREFIX = "irisserve"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
MAX_REQUEST_ID_CHARS = 128
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
ACCESS_LOGGER = "irisserve.access"
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
LABELS_FIELD = "logging.googleapis.com/labels"
# Cloud Logging links a line to its trace only when the id is spelled projects/<id>/traces/<trace>.
PROJECT_ENV_VARS = ("GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT")

# -- Metrics --------------------------------------------------------------------------------------

# The *_created series double the scrape for no use here (Prometheus derives resets from the counters).
disable_created_metrics()

REQUESTS = Counter(f"{PREFIX}_http_requests", "HTTP requests answered, by method, route and status.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds", "Time from request to last response byte.", ["method", "route"], buckets=REQUEST_BUCKETS
)
IN_FLIGHT = Gauge(f"{PREFIX}_http_requests_in_flight", "Requests being handled now.", multiprocess_mode="livesum")
INFERENCE_SECONDS = Histogram(
    f"{PREFIX}_inference_duration_seconds", "Time in the model for one request (all its rows).", buckets=INFERENCE_BUCKETS
)
VALIDATION_ERRORS = Counter(f"{PREFIX}_validation_errors", "Requests refused because the body broke the schema.", ["route"])
PREDICTIONS = Counter(f"{PREFIX}_predictions", "Rows predicted, by predicted class.", ["class"])
OUT_OF_RANGE = Counter(
    f"{PREFIX}_out_of_range_inputs", "Rows with a feature outside the training data's range (a drift signal).", ["feature"]
)
MODEL_LOAD_SECONDS = Gauge(
    f"{PREFIX}_model_load_seconds", "Seconds to verify and open the model artifact.", multiprocess_mode="liveall"
)
PROCESS_START = Gauge(
    f"{PREFIX}_process_start_time_seconds", "When this server process started (Unix time).", multiprocess_mode="liveall"
)

_OUT_OF_RANGE_CHILDREN = {name: OUT_OF_RANGE.labels(feature=name) for name in FEATURE_NAMES}
_prediction_children: dict[str, Any] = {}
_validation_children: dict[str, Any] = {}


def _process_start_time() -> float:
    """The kernel's start time of this process (Linux), else now: imports happen a moment after start."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


PROCESS_START.set(_process_start_time())


def record_predictions(results: Sequence[Mapping[str, Any]], seconds: float) -> None:
    """Count one request's predictions by class and its out-of-range features, and time the model call.

    For every front door: ``results`` are Predictor.predict_rows' objects, ``seconds`` the model call."""
    INFERENCE_SECONDS.observe(seconds)
    classes = Tally(result["prediction"] for result in results)
    for name, count in classes.items():
        child = _prediction_children.get(name)
        if child is None:
            child = _prediction_children[name] = PREDICTIONS.labels(name)
        child.inc(count)
    for result in results:
        for feature in result["out_of_range_features"]:
            _OUT_OF_RANGE_CHILDREN[feature].inc()


def predict_observed(predictor: Predictor, instances: Sequence[IrisFeatures]) -> list[dict[str, Any]]:
    """``predictor.predict_features`` with its latency, classes and out-of-range inputs recorded."""
    started = time.perf_counter()
    results = predictor.predict_features(instances)
    record_predictions(results, time.perf_counter() - started)
    return results


def record_validation_error(route: str) -> None:
    child = _validation_children.get(route)
    if child is None:
        child = _validation_children[route] = VALIDATION_ERRORS.labels(route)
    child.inc()


def record_model_load(seconds: float) -> None:
    MODEL_LOAD_SECONDS.set(seconds)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v2/models/{model_name}/infer``): bounded label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def metrics_text() -> bytes:
    """Every metric in Prometheus' text format; with several workers, the sum of all of them."""
    if not multiprocess_enabled():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def mark_worker_exited() -> None:
    """Drop this worker's live gauges (in flight, load time, start time) from the shared folder."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())


async def read_metrics(request: Request) -> Response:
    """Prometheus scrape endpoint."""
    return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)


# -- Trace context and request id -----------------------------------------------------------------


class Trace(NamedTuple):
    trace_id: str
    span_id: str | None
    sampled: bool


_HEX_DIGITS = "0123456789abcdefABCDEF"


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and not text.strip(_HEX_DIGITS)


def parse_traceparent(value: str) -> Trace | None:
    """W3C ``traceparent``: ``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``."""
    parts = value.strip().split("-")
    if len(parts) != 4 or not _is_hex(parts[1], 32) or not _is_hex(parts[2], 16) or not _is_hex(parts[3], 2):
        return None
    if parts[1] == "0" * 32:
        return None
    return Trace(parts[1].lower(), parts[2].lower(), bool(int(parts[3], 16) & 1))


def parse_cloud_trace_context(value: str) -> Trace | None:
    """Google's ``X-Cloud-Trace-Context``: ``<32 hex trace id>/<decimal span id>;o=<0|1>``."""
    head, _, options = value.strip().partition(";")
    trace_id, _, span = head.partition("/")
    if not _is_hex(trace_id, 32):
        return None
    return Trace(trace_id.lower(), span if span.isdigit() else None, options.strip() == "o=1")


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID_CHARS and value.isprintable() and value.isascii() and " " not in value


class _RequestHeaders(NamedTuple):
    request_id: str
    trace: Trace | None
    user_agent: str | None
    content_length: str | None


def _read_headers(raw: Sequence[tuple[bytes, bytes]]) -> _RequestHeaders:
    """One pass over the raw headers for the few this module reads."""
    request_id = user_agent = content_length = traceparent = cloud_trace = None
    for name, value in raw:
        if name == b"x-request-id":
            request_id = value.decode("latin-1")
        elif name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value.decode("latin-1")
        elif name == b"traceparent":
            traceparent = value.decode("latin-1")
        elif name == b"x-cloud-trace-context":
            cloud_trace = value.decode("latin-1")
    trace = parse_traceparent(traceparent) if traceparent else None
    if trace is None and cloud_trace:
        trace = parse_cloud_trace_context(cloud_trace)
    if request_id is None or not _valid_request_id(request_id):
        request_id = os.urandom(16).hex()  # uuid4() costs five times as much
    return _RequestHeaders(request_id, trace, user_agent, content_length)


# -- Middleware -----------------------------------------------------------------------------------


class ObservabilityMiddleware:
    """Counts and times every HTTP request, echoes its request id, and writes one log line for it."""

    def __init__(self, app: ASGIApp, *, request_log: RequestLog | None = None) -> None:
        self.app = app
        self.request_log = request_log
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _read_headers(scope["headers"])
        scope.setdefault("state", {})["request_id"] = headers.request_id
        echo = (b"x-request-id", headers.request_id.encode("latin-1"))
        status = 500  # what the client gets if the app raises before answering
        sent_bytes = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            self._count(scope, status, seconds)
            if self.request_log is not None:
                self.request_log.write(scope, headers, status, seconds, sent_bytes)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = self._route_label(scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                REQUESTS.labels(method, route, str(status)),
                REQUEST_SECONDS.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def _route_label(self, scope: Scope) -> str:
        return route_of(scope) if scope.get("route") is not None else self._template_of(scope)

    def _template_of(self, scope: Scope) -> str:
        """For a request answered before routing (401, 413) or by no route (404), the template its path fits.

        Only these requests pay for the pattern matching; routed ones read the template off the route."""
        if self._templates is None:
            self._templates = route_templates(scope.get("app"))
        path = scope["path"]
        for pattern, template in self._templates:
            if pattern.fullmatch(path):
                return template
        return UNMATCHED_ROUTE


def route_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Every path template the app serves: its OpenAPI paths (which include routers' prefixes) and plain routes."""
    templates = {getattr(route, "path", None) for route in getattr(app, "routes", ())}
    try:
        templates |= set(app.openapi()["paths"])
    except Exception:  # a broken schema must not break request counting
        logger.exception("Cannot list the app's routes for metric labels")
    return [(compile_path(template)[0], template) for template in sorted(t for t in templates if t)]


# -- Logs -----------------------------------------------------------------------------------------


def _severity(status: int) -> int:
    return logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO


class RequestLog:
    """The one line per request, written straight to the log stream.

    Built with an f-string and ``encode_basestring_ascii`` for the client-supplied strings: the logging
    module plus json.dumps cost about 40 microseconds a request, this about 3."""

    def __init__(self, handler: logging.StreamHandler[Any], *, json_lines: bool, level: int, project: str | None) -> None:
        self.handler = handler
        self.json_lines = json_lines
        self.level = level
        self.trace_prefix = f"projects/{project}/traces/" if project else ""

    def write(self, scope: Scope, headers: _RequestHeaders, status: int, seconds: float, sent: int) -> None:
        severity = _severity(status)
        if severity < self.level:
            return
        query = scope.get("query_string", b"")
        url = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        message = f"{scope['method']} {url} {status} {seconds * 1000:.1f}ms"
        if self.json_lines:
            line = self._json_line(scope, headers, url, message, logging.getLevelName(severity), status, seconds, sent)
        else:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {logging.getLevelName(severity):<7} {ACCESS_LOGGER}: {message} [{headers.request_id}]"
        with self.handler.lock or nullcontext():
            stream = self.handler.stream
            stream.write(line + "\n")
            stream.flush()

    def _json_line(
        self, scope: Scope, headers: _RequestHeaders, url: str, message: str, severity: str, status: int, seconds: float, sent: int
    ) -> str:
        now = time.time()
        client = scope.get("client")
        optional = ""
        if headers.content_length:
            optional += f',"requestSize":{_quote(headers.content_length)}'
        if headers.user_agent:
            optional += f',"userAgent":{_quote(headers.user_agent)}'
        if client:
            optional += f',"remoteIp":{_quote(str(client[0]))}'
        trace = ""
        if headers.trace is not None:
            trace = f',"{TRACE_FIELD}":"{self.trace_prefix}{headers.trace.trace_id}","{SAMPLED_FIELD}":{"true" if headers.trace.sampled else "false"}'
            if headers.trace.span_id:
                trace += f',"{SPAN_FIELD}":"{headers.trace.span_id}"'
        return (
            f'{{"severity":"{severity}","message":{_quote(message)},'
            f'"timestamp":{{"seconds":{int(now)},"nanos":{int(now % 1 * 1e9)}}},"logger":"{ACCESS_LOGGER}",'
            f'"httpRequest":{{"requestMethod":{_quote(scope["method"])},"requestUrl":{_quote(url)},"status":{status},'
            f'"latency":"{seconds:.6f}s","responseSize":"{sent}","protocol":"HTTP/{scope.get("http_version", "1.1")}"{optional}}},'
            f'"{LABELS_FIELD}":{{"request_id":{_quote(headers.request_id)}}}{trace}}}'
        )


class CloudLoggingFormatter(logging.Formatter):
    """Application log records as one JSON object per line, in the fields Cloud Logging reads."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": message,
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "logger": record.name,
        }
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: time, level, logger, message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def use_json_logs(log_format: str, stream: Any = None) -> bool:
    """``auto`` means JSON lines unless the stream is a terminal (a person is reading)."""
    if log_format != "auto":
        return log_format == "json"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def configure_logging(settings: Settings, stream: Any = None) -> RequestLog:
    """Send irisserve's and uvicorn's logs to stderr in one format; the request log replaces uvicorn's."""
    stream = stream if stream is not None else sys.stderr
    json_lines = use_json_logs(settings.log_format, stream)
    handler: logging.StreamHandler[Any] = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter() if json_lines else TextFormatter())
    level = logging.getLevelName(settings.log_level.upper())
    for name in ("irisserve", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False
    server_errors = logging.getLogger("uvicorn.error")
    server_errors.handlers = []
    server_errors.setLevel(logging.NOTSET)
    server_errors.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    project = next((os.environ[name] for name in PROJECT_ENV_VARS if os.environ.get(name)), None)
    return RequestLog(handler, json_lines=json_lines, level=level, project=project)
