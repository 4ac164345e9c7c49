"""Request limits at the web door: the optional API key and the body size.

The key and the body size are ASGI middleware that answer before the app reads a body.

FastAPI 0.165's own ``max_body_size`` (fastapi/_body_limit.py over Starlette's RequestBodyLimitMiddleware)
answers "Content Too Large" without naming the limit or the setting to change, and only once the app
starts reading; this one refuses an oversized Content-Length up front and counts chunked bodies as they
stream in, with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable, Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from irisserve.core.errors import AuthenticationError, IrisServeError, encode_json, error_answer
from irisserve.core.pipeline import DISCARD_MAX_BYTES, body_too_large
from irisserve.core.settings import ENV_PREFIX
from irisserve.v2 import is_v2_path

BEARER = "bearer"
MISSING_KEY = (
    "This endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
    f"(setting {ENV_PREFIX}API_KEY)."
)
WRONG_KEY = "The API key is not valid."
# How long a refused body may take to be read and dropped so the client gets its 413 (see discard_body).
DISCARD_SECONDS = 5.0
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


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; FastAPI answers it as 413 JSON."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=str(body_too_large(limit)))


async def send_error(
    send: Send, exc: IrisServeError, path: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer without involving the app, in the path's error shape: ``{"detail": ...}``, or ``{"error": ...}``
    on the Open Inference Protocol's paths."""
    status, body = (exc.status_code, encode_json({"error": str(exc)})) if is_v2_path(path) else error_answer(exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def discard_body(receive: Receive) -> None:
    """Read and drop the rest of a refused body before answering, as nginx's lingering close does after: a
    socket closed with unread data makes the kernel send a reset, which can destroy the 413 before the
    client reads it (a 2 MiB upload from urllib lost its 413 in 6 of 20 tries). uvicorn delivers no more
    body once the answer is sent, hence before. Bounded in bytes and time; past the bound the client may
    see the reset."""
    discarded = 0
    deadline = time.monotonic() + DISCARD_SECONDS
    while discarded <= DISCARD_MAX_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), timeout=remaining)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        discarded += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _header(raw: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in raw:
        if key == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """401 for any request outside ``public_paths`` without the right key; CORS preflights pass."""

    def __init__(self, app: ASGIApp, *, api_key: str, public_paths: Iterable[str]) -> None:
        if not api_key:
            raise ValueError("ApiKeyMiddleware needs a non-empty api_key; leave it out to serve without one.")
        self.app = app
        self.api_key = api_key
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        raw = scope["headers"]
        try:
            check_api_key(_header(raw, b"authorization"), _header(raw, b"x-api-key"), expected=self.api_key)
        except AuthenticationError as exc:
            await send_error(send, exc, scope["path"], [CHALLENGE])
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
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and declared.isdigit():
            # The server delivers no more than Content-Length bytes, so a body within it needs no counting.
            size = int(declared)
            if size > self.max_body_bytes:
                await discard_body(receive)
                await send_error(send, body_too_large(self.max_body_bytes, size), scope["path"])
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
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await discard_body(receive)
            await send_error(send, body_too_large(limit), scope["path"])
