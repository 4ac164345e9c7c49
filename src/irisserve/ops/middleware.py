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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from irisserve.ops.asgi import UNMATCHED_ROUTE, protocol_of, route_of, route_path
from irisserve.ops.live import LiveStats
from irisserve.ops.request_log import RequestLog
from irisserve.ops.tracing import read_headers

if TYPE_CHECKING:  # the function imports this module without prometheus_client
    from irisserve.ops.metrics import RequestMetrics

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"

logger = logging.getLogger("irisserve")


class ObservabilityMiddleware:
    """Counts and times every HTTP request, echoes its request id, and writes one log line for it.

    ``metrics`` (Prometheus, the web service) and ``live`` (the live figures of the model a request was for,
    once loaded) are optional: the function keeps live figures and a request log but no Prometheus registry."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_log: RequestLog | None = None,
        live: Callable[[Scope], LiveStats | None] = lambda scope: None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.app = app
        self.request_log = request_log
        self.live = live
        self.metrics = metrics
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

        if self.metrics is not None:
            self.metrics.begin()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self._count(scope, status, seconds)
            if self.request_log is not None:
                self.request_log.write(scope, headers, status, seconds, sent_bytes)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = self._route_label(scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        if self.metrics is not None:
            self.metrics.end(method, route, status, seconds, protocol_of(scope))
        live = self.live(scope)
        if live is not None:
            live.record_request(method, route, status, seconds)

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


