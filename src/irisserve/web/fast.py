"""The web service's hot endpoints as plain ASGI: bytes to the pipeline (or the V2 codec), its bytes back.

FastAPI's per-request machinery (route matching over every route, dependency solving, a Request and a
Response object, response-model re-validation) cost more than the model itself. The routes stay declared on
FastAPI, so /docs and /openapi.json describe them exactly as before (a test compares the document with the
one from before this change); this layer answers them first, with the same bodies, and sets the matched
route on the scope so metrics and logs label them as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from irisserve.core.errors import (
    IrisServeError,
    RequestValidationFailed,
    ServiceUnavailableError,
    encode_json,
    error_answer,
)
from irisserve.core.pipeline import Answer, RequestPipeline
from irisserve.core.schemas import health_body
from irisserve.ops.lifecycle import is_draining
from irisserve.ops.metrics import record_validation_error
from irisserve.v2 import codec
from irisserve.v2.codec import HEADER_LENGTH
from irisserve.web.v2 import BINARY_MEDIA_TYPE
from irisserve.web.v2 import error_answer as v2_error_answer

logger = logging.getLogger("irisserve")

JSON_TYPE = (b"content-type", b"application/json")
CLIENT_CLOSED_REQUEST = 499  # nginx's "client closed request": counted, never sent to anyone
CLIENT_GONE = "%s %s: the client disconnected before sending the whole body"  # logged at INFO: the client's doing
V2_MODELS = "/v2/models/"
V2_INFER = "/v2/models/{model_name}/infer"
V2_VERSIONED_INFER = "/v2/models/{model_name}/versions/{model_version}/infer"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


SHUTTING_DOWN = ServiceUnavailableError(
    "The server is shutting down and this request's body had not arrived; send the request again."
)


async def read_body(receive: Receive) -> bytes:
    """The whole request body (a single message for anything up to the server's read size).

    At shutdown uvicorn cancels the requests still running when its graceful timeout ends; one still
    uploading gets a JSON 503 (raised here) instead of uvicorn's text/plain 500 and an ERROR log line."""
    try:
        return await _receive_all(receive)
    except asyncio.CancelledError:
        raise SHUTTING_DOWN from None


async def _receive_all(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON_TYPE, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class FastEndpoints:
    """Answers POST /predict, POST /predict/batch and GET/HEAD /health before FastAPI routes them."""

    def __init__(self, app: ASGIApp, *, pipeline: RequestPipeline, routes: list[Any]) -> None:
        self.app = app
        self.pipeline = pipeline
        self.predictor = pipeline.predictor
        declared = {route.path: route for route in routes if isinstance(route, APIRoute)}
        self.handlers: dict[tuple[str, str], tuple[Handler, APIRoute]] = {
            ("POST", "/predict"): (self.predict_one, declared["/predict"]),
            ("POST", "/predict/batch"): (self.predict_batch, declared["/predict/batch"]),
            ("GET", "/health"): (self.health, declared["/health"]),
            ("HEAD", "/health"): (self.health, declared["/health"]),
        }
        self.v2_infer = declared[V2_INFER]
        self.v2_versioned_infer = declared[V2_VERSIONED_INFER]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self.handlers.get((scope["method"], scope["path"]))
        if found is not None:
            handler, route = found
            scope["route"] = route  # the label metrics and logs read, as if FastAPI had routed it
            await handler(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].startswith(V2_MODELS) and scope["path"].endswith("/infer"):
            parts = scope["path"].split("/")  # "", "v2", "models", name, ["versions", version,] "infer"
            if len(parts) == 5 and parts[3]:
                scope["route"] = self.v2_infer
                await self.v2(scope, receive, send, parts[3], None)
                return
            if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
                scope["route"] = self.v2_versioned_infer
                await self.v2(scope, receive, send, parts[3], parts[5])
                return
        await self.app(scope, receive, send)

    async def predict_one(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._predict(scope, receive, send, self.pipeline.predict_one)

    async def predict_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._predict(scope, receive, send, self.pipeline.predict_batch)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, predict: Callable[..., Answer]) -> None:
        try:
            body = await read_body(receive)
            answer = predict(body, content_encoding=_header(scope, b"content-encoding"))
        except ClientGone:
            await self._client_gone(scope, send)
            return
        except IrisServeError as exc:
            if isinstance(exc, RequestValidationFailed):
                record_validation_error(scope["route"].path)
            status, error = error_answer(exc)
            await send_json(send, status, error)
            return
        await send_json(send, 200, answer.body, (b"server-timing", answer.server_timing.encode()))

    async def v2(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        try:
            body = await read_body(receive)
            answer, header_length = codec.infer(
                self.pipeline, body, name=name, version=version, header_length=_header(scope, HEADER_LENGTH_KEY),
                content_encoding=_header(scope, b"content-encoding"),
            )
        except ClientGone:
            await self._client_gone(scope, send)
            return
        except IrisServeError as exc:
            status, error = v2_error_answer(exc)
            if status == 400:
                record_validation_error(scope["route"].path)
            await send_json(send, status, error)
            return
        if header_length is None:
            await send_json(send, 200, answer)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", BINARY_MEDIA_TYPE.encode()), (b"content-length", str(len(answer)).encode()),
                    (HEADER_LENGTH_KEY, str(header_length).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _client_gone(self, scope: Scope, send: Send) -> None:
        logger.info(CLIENT_GONE, scope["method"], scope["path"])
        await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = health_body(self.predictor, draining=is_draining())
        encoded = encode_json(body)
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": status, "headers": [JSON_TYPE, (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, status, encoded)
