"""The ASGI middleware that counts and times every request, echoes its request id and logs one line for it.

Plain ASGI (Starlette's BaseHTTPMiddleware costs tens of microseconds a request), doing a few dictionary
look-ups per request: metric children are cached by label values, headers are scanned once, and only
requests no route handled are matched against the route templates. With live figures on (the model page's
panel), each request adds one deque append (``LiveStats.record_request``).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from irisserve.ops.asgi import protocol_of, route_path
from irisserve.ops.live import LiveStats
from irisserve.ops.metrics import (
    IN_FLIGHT,
    REQUEST_SECONDS,
    REQUESTS,
    UNMATCHED_ROUTE,
    record_validation_error,
    route_of,
)
from irisserve.ops.request_log import RequestLog
from irisserve.ops.tracing import read_headers

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# A body that breaks the model's schema: 422 in the seed API, 400 in the Open Inference Protocol. Counted here, once.
VALIDATION_STATUS = {"seed": 422, "v2": 400}

logger = logging.getLogger("irisserve")


class ObservabilityMiddleware:
    """Counts and times every HTTP request, echoes its request id, and writes one log line for it."""

    def __init__(self, app: ASGIApp, *, request_log: RequestLog | None = None, live: LiveStats | None = None) -> None:
        self.app = app
        self.request_log = request_log
        self.live = live
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = read_headers(scope["headers"])
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
        if status == VALIDATION_STATUS[protocol_of(scope)]:
            record_validation_error(route)
        if self.live is not None:
            self.live.record_request(method, route, status, seconds)

    def _route_label(self, scope: Scope) -> str:
        return route_of(scope) if scope.get("route") is not None else self._template_of(scope)

    def _template_of(self, scope: Scope) -> str:
        """For a request answered before routing (401, 413) or by no route (404), the template its path fits.

        Only these requests pay for the pattern matching; routed ones read the template off the route."""
        if self._templates is None:
            self._templates = route_templates(scope.get("app"))
        path = route_path(scope)
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


