"""ASGI plumbing every front door shares: headers, the route path behind a prefix, the body (read whole, or read
and dropped within bounds), JSON answers, and each error in the shape of the protocol its route speaks.

Error shapes: the seed API answers FastAPI's ``{"detail": ...}``; the Open Inference Protocol's routes answer
``{"error": "..."}`` (with a schema failure as 400). The route says which (``protocol`` on the route class,
``web/routing.py``); a request that matched no route is judged by its route path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from starlette._utils import get_route_path
from starlette.types import Receive, Scope, Send

from irisserve.core.errors import (
    IrisServeError,
    RequestTimeoutError,
    RequestValidationFailed,
    ServiceUnavailableError,
    encode_json,
    error_answer,
)
from irisserve.core.pipeline import DISCARD_MAX_BYTES, Answer
from irisserve.ops.lifecycle import CONNECTION_CLOSE
from irisserve.v2 import is_v2_path

logger = logging.getLogger("irisserve")

Protocol = Literal["seed", "v2"]

JSON_TYPE = (b"content-type", b"application/json")
CLIENT_CLOSED_REQUEST = 499  # nginx's "client closed request": counted, never sent to anyone
CLIENT_GONE = "%s %s: the client disconnected before sending the whole body"  # logged at INFO: the client's doing
BODY_TOO_SLOW = "The request body did not arrive in time; send it in one go (or fewer rows per request)."
SHUTTING_DOWN = ServiceUnavailableError(
    "The server is shutting down and this request's body had not arrived; send the request again."
)


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def route_path(scope: Scope) -> str:
    """The path the app's routes see: without the root path (``uvicorn --root-path``, a ``Mount``) it runs under."""
    return get_route_path(scope) if scope.get("root_path") else scope["path"]


UNMATCHED_ROUTE = "unmatched"


def route_of(scope: Scope) -> str:
    """The matched route's template (``/v2/models/{model_name}/infer``): the bounded label metrics and live figures use."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


def protocol_of(scope: Scope) -> Protocol:
    """The protocol whose error shape answers this request: its route's, else by its route path."""
    protocol: Protocol | None = getattr(scope.get("route"), "protocol", None)
    if protocol is not None:
        return protocol
    return "v2" if is_v2_path(route_path(scope)) else "seed"


def error_body(protocol: Protocol, message: Any) -> bytes:
    return encode_json({"error": message} if protocol == "v2" else {"detail": message})


def error_reply(scope: Scope, exc: IrisServeError) -> tuple[int, bytes]:
    """The status and body for ``exc`` in the request's protocol: the core's table, except that in V2 a body
    breaking the schema is a 400 with the errors in one sentence."""
    if protocol_of(scope) == "seed":
        return error_answer(exc)
    if isinstance(exc, RequestValidationFailed):
        from irisserve.v2.codec import describe_errors  # the function never serves V2: it never imports its codec

        return 400, error_body("v2", describe_errors(exc.detail))
    return exc.status_code, error_body("v2", str(exc))


async def send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """An answer with ``headers`` (its content type among them) and its length."""
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send_body(send, status, body, [JSON_TYPE, *headers])


# A handler's work on a request body: the answer's bytes and headers (its content type among them).
Reply = tuple[bytes, list[tuple[bytes, bytes]]]
BodyHandler = Callable[[bytes], Reply]


def prediction_reply(answer: Answer) -> Reply:
    """A pipeline's answer as sent: JSON, with each stage's time in Server-Timing."""
    return answer.body, [JSON_TYPE, (b"server-timing", answer.server_timing.encode())]


async def answer_body(scope: Scope, receive: Receive, send: Send, handle: BodyHandler, *, read_timeout: float) -> None:
    """Read the whole body (within ``read_timeout``), answer 200 with what ``handle`` makes of it; a client gone
    and every IrisServeError answered here, in the route's shape."""
    try:
        body, headers = handle(await read_body(receive, timeout=read_timeout))
    except ClientGone:
        await send_client_gone(scope, send)
        return
    except IrisServeError as exc:
        await send_error(scope, send, exc)
        return
    await send_body(send, 200, body, headers)


async def send_error(scope: Scope, send: Send, exc: IrisServeError, *headers: tuple[bytes, bytes]) -> None:
    status, body = error_reply(scope, exc)
    if isinstance(exc, RequestTimeoutError):  # the rest of the body may still come: the connection cannot be reused
        headers = (*headers, CONNECTION_CLOSE)
    await send_json(send, status, body, *headers)


async def send_client_gone(scope: Scope, send: Send) -> None:
    """The client went away before its body arrived: its doing, one INFO line. Nobody reads this answer; its
    status is what metrics and the request log count."""
    logger.info(CLIENT_GONE, scope["method"], scope["path"])
    await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def read_body(receive: Receive, *, timeout: float | None = None) -> bytes:
    """The whole request body. ClientGone if the client leaves first; 408 if it has not all arrived within
    ``timeout`` seconds (IRISSERVE_READ_TIMEOUT_SECONDS: a slow client holds a connection no longer).

    At shutdown uvicorn cancels the requests still running when its graceful timeout ends; one still
    uploading gets a JSON 503 (raised here) instead of uvicorn's text/plain 500 and an ERROR log line."""
    task = _DEADLINES.start(timeout) if timeout is not None else None
    try:
        return await _receive_all(receive)
    except asyncio.CancelledError:
        if task is not None and _DEADLINES.expired(task):
            raise RequestTimeoutError(BODY_TOO_SLOW) from None
        raise SHUTTING_DOWN from None
    finally:
        if task is not None:
            _DEADLINES.stop(task)


class Deadlines:
    """Deadlines for the tasks reading request bodies, checked every ``tick`` seconds by one task per event loop.

    A timer per request (``asyncio.timeout``) cost 10 µs of /predict's 45 µs; here a request costs two
    dictionary writes, and a late body is cut within ``tick`` of its deadline."""

    def __init__(self, tick: float = 0.25) -> None:
        self.tick = tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None  # the latest loop's; an earlier loop's ends by itself

    def start(self, seconds: float) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        self._due[task] = loop.time() + seconds
        sweeper = self._sweeper
        if sweeper is None or sweeper.done() or sweeper.get_loop() is not loop:
            self._sweeper = loop.create_task(self._sweep(loop))
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (then it is no longer cancelling)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel this loop's tasks past their deadline; end when none is waiting."""
        while any(task.get_loop() is loop for task in list(self._due)):
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task, due in list(self._due.items()):
                if due <= now and task.get_loop() is loop:
                    del self._due[task]
                    self._expired.add(task)
                    task.cancel()


_DEADLINES = Deadlines()


async def _receive_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# A refused body is still read and dropped, up to DISCARD_MAX_BYTES and this long, so its client reads the answer
# rather than a reset; past either bound the connection is simply closed.
DISCARD_SECONDS = 5.0


class DiscardBudget:
    """How much of a refused request may still be read and dropped: bytes and seconds, counted from creation.

    Closing a socket with unread data makes the kernel send a reset, which can destroy the answer before the
    client reads it (a 2 MiB upload from urllib lost its 413 in 6 of 20 tries); nginx's lingering close reads
    and drops for the same reason. Used for a refused body (``discard_body``) and after a 431 (``ops/server.py``)."""

    def __init__(self, max_bytes: int = DISCARD_MAX_BYTES, seconds: float = DISCARD_SECONDS) -> None:
        self.bytes_left = max_bytes
        self.ends = time.monotonic() + seconds

    def seconds_left(self) -> float:
        return self.ends - time.monotonic()

    def spend(self, size: int) -> bool:
        """Count ``size`` dropped bytes; False once either bound is passed."""
        self.bytes_left -= size
        return self.bytes_left >= 0 and self.seconds_left() > 0


async def discard_body(receive: Receive, budget: DiscardBudget | None = None) -> None:
    """Read and drop the rest of a refused body before answering (uvicorn delivers no more body once the answer
    is sent, hence before), within ``budget``."""
    budget = budget or DiscardBudget()
    while (left := budget.seconds_left()) > 0:
        try:
            message = await asyncio.wait_for(receive(), timeout=left)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        if not budget.spend(len(message.get("body", b""))) or not message.get("more_body", False):
            return
