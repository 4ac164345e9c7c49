"""CORS response headers from the ``cors_origins`` setting, for any front door (no web framework needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the function imports this module without an ASGI server
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

ANY_ORIGIN = "*"
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key"
# Browsers cap this anyway (Chromium at 2 hours); 10 minutes keeps a changed setting from lingering long.
MAX_AGE_SECONDS = 600


def cors_headers(origin: str | None, allowed: Sequence[str], *, preflight: bool = False) -> dict[str, str]:
    """The Access-Control-* headers for a request from ``origin``; empty when the origin is not allowed.

    An allowed origin is echoed (with ``Vary: Origin``, so caches keep one answer per origin) unless the
    setting is ``["*"]``; a preflight answer also names the methods, headers and how long to cache it."""
    if not origin or not allowed:
        return {}
    if ANY_ORIGIN in allowed:
        headers = {"Access-Control-Allow-Origin": ANY_ORIGIN}
    elif origin in allowed:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    else:
        return {}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }
    return headers


PREFLIGHT_HEADER = b"access-control-request-method"


class CorsMiddleware:
    """The web door's CORS, from the same ``cors_headers`` as the function: a preflight (OPTIONS with
    Access-Control-Request-Method) gets 204 before any other check, and every answer to an allowed
    Origin carries the Access-Control-* headers, errors included."""

    def __init__(self, app: ASGIApp, *, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = list(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (not self.allowed and scope["method"] != "OPTIONS"):
            await self.app(scope, receive, send)  # nothing to add: no origin is allowed
            return
        origin = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == PREFLIGHT_HEADER:
                preflight = scope["method"] == "OPTIONS"
        extra = [(key.lower().encode(), value.encode()) for key, value in cors_headers(origin, self.allowed, preflight=preflight).items()]
        if preflight:
            headers = [(b"allow", ALLOWED_METHODS.encode()), (b"content-length", b"0"), *extra]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)
