"""Logs: one structured line per request (Cloud Logging's fields, or text for a terminal) and the format of
irisserve's and uvicorn's own records."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from irisserve.ops.tracing import RequestHeaders

if TYPE_CHECKING:
    from irisserve.core.settings import Settings

ACCESS_LOGGER = "irisserve.access"
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
LABELS_FIELD = "logging.googleapis.com/labels"
# Cloud Logging links a line to its trace only when the id is spelled projects/<id>/traces/<trace>.
PROJECT_ENV_VARS = ("GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT")

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

    def write(self, scope: Scope, headers: RequestHeaders, status: int, seconds: float, sent: int) -> None:
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
        self, scope: Scope, headers: RequestHeaders, url: str, message: str, severity: str, status: int, seconds: float, sent: int
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
        labels = f'"request_id":{_quote(headers.request_id)}'
        served = scope.get("state", {}).get("served")  # the model version a prediction went to (core/registry.py)
        if served is not None:
            labels += f',"model":{_quote(served.name)},"model_version":{_quote(served.version)}'
        return (
            f'{{"severity":"{severity}","message":{_quote(message)},'
            f'"timestamp":{{"seconds":{int(now)},"nanos":{int(now % 1 * 1e9)}}},"logger":"{ACCESS_LOGGER}",'
            f'"httpRequest":{{"requestMethod":{_quote(scope["method"])},"requestUrl":{_quote(url)},"status":{status},'
            f'"latency":"{seconds:.6f}s","responseSize":"{sent}","protocol":"HTTP/{scope.get("http_version", "1.1")}"{optional}}},'
            f'"{LABELS_FIELD}":{{{labels}}}{trace}}}'
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
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
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
