"""Request limits for both front doors: the body size, and the web service's optional API key.

The key and the body size are ASGI middleware that answer before the app reads a body.

FastAPI 0.165's own ``max_body_size`` (fastapi/_body_limit.py over Starlette's RequestBodyLimitMiddleware)
answers "Content Too Large" without naming the limit or the setting to change, and only once the app
starts reading; this one refuses an oversized Content-Length up front and counts chunked bodies as they
stream in, with a message that says what to do.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from irisserve.core.errors import AuthenticationError
from irisserve.core.pipeline import body_too_large
from irisserve.core.settings import ENV_PREFIX
from irisserve.ops.asgi import discard_body, header, route_path, send_error

BEARER = "bearer"
MISSING_KEY = (
    "This endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
    f"(setting {ENV_PREFIX}API_KEY)."
)
WRONG_KEY = "The API key is not valid."
CHALLENGE = (b"www-authenticate", b'Bearer realm="irisserve"')


def presented_keys(authorization: str | None, x_api_key: str | None) -> list[str]:
    """The keys a request offers: a Bearer token and/or an X-API-Key header."""
    keys = []
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == BEARER and token.strip():
            keys.append(token.strip())
    if x_api_key and x_api_key.strip():
        keys.append(x_api_key.strip())
    return keys


def check_api_key(authorization: str | None, x_api_key: str | None, *, expected: str) -> None:
    """Raise AuthenticationError unless a presented key equals ``expected`` (compared in constant time)."""
    keys = presented_keys(authorization, x_api_key)
    if not keys:
        raise AuthenticationError(MISSING_KEY)
    wanted = expected.encode()
    # Compare every key offered, so the time taken does not tell which header was wrong.
    matches = [hmac.compare_digest(key.encode(), wanted) for key in keys]
    if not any(matches):
        raise AuthenticationError(WRONG_KEY)


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit; ``complete`` when that was its last part.

    Not an HTTPException: it must reach BodyLimitMiddleware past the app's exception handlers, to answer there."""

    def __init__(self, complete: bool) -> None:
        super().__init__()
        self.complete = complete


class ApiKeyMiddleware:
    """401 for any request outside ``public_paths`` without the right key; CORS preflights pass."""

    def __init__(self, app: ASGIApp, *, api_key: str, public_paths: Iterable[str]) -> None:
        if not api_key:
            raise ValueError("ApiKeyMiddleware needs a non-empty api_key; leave it out to serve without one.")
        self.app = app
        self.api_key = api_key
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or route_path(scope) in self.public_paths:
            await self.app(scope, receive, send)
            return
        try:
            check_api_key(header(scope, b"authorization"), header(scope, b"x-api-key"), expected=self.api_key)
        except AuthenticationError as exc:
            await send_error(scope, send, exc, CHALLENGE)
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over ``max_body_bytes``: by Content-Length before reading, else by counting chunks."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be 0 or more, not {max_body_bytes}.")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit():
            # The server delivers no more than Content-Length bytes, so a body within it needs no counting.
            size = int(declared)
            if size > self.max_body_bytes:
                await discard_body(receive)
                await send_error(scope, send, body_too_large(self.max_body_bytes, size))
                return
            await self.app(scope, receive, send)
            return
        await self._call_counting(scope, receive, send)

    async def _call_counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_bytes
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(complete=not message.get("more_body", False))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            if not exc.complete:  # a body already whole has nothing left to drop: answer at once
                await discard_body(receive)
            await send_error(scope, send, body_too_large(limit))
