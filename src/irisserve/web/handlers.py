"""The hot routes' one implementation, as plain ASGI: bytes to the pipeline (or the V2 codec), its bytes back.

Declared on FastAPI (``web/app.py``, ``web/v2.py``) with ``@served_by``, so /docs describes them; run by
``ServedRoute`` (``web/routing.py``), at the root or behind any prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from irisserve.core.errors import IrisServeError, encode_json
from irisserve.core.pipeline import Answer, RequestPipeline
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import health_body
from irisserve.ops.asgi import CLIENT_GONE, ClientGone, header, read_body, send_client_gone, send_error, send_json
from irisserve.ops.lifecycle import is_draining
from irisserve.v2 import codec
from irisserve.v2.codec import HEADER_LENGTH
from irisserve.web.routing import Handler

logger = logging.getLogger("irisserve")

BINARY_MEDIA_TYPE = "application/octet-stream"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()


def health_handler(predictor: Predictor) -> Handler:
    """GET and HEAD /health: 200 once the model is loaded and warmed up, 503 before and while draining."""

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        status, body = health_body(predictor, draining=is_draining())
        await send_json(send, status, encode_json(body))  # uvicorn sends no body to a HEAD request

    return health


def predict_handler(predict: Callable[..., Answer]) -> Handler:
    """POST /predict or /predict/batch: the body to ``predict`` (a pipeline method), its answer back."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = predict(await read_body(receive), content_encoding=header(scope, b"content-encoding"))
        except ClientGone:
            await client_gone(scope, send)
            return
        except IrisServeError as exc:
            await send_error(scope, send, exc)
            return
        await send_json(send, 200, answer.body, (b"server-timing", answer.server_timing.encode()))

    return handle


def v2_infer_handler(pipeline: RequestPipeline) -> Handler:
    """POST /v2/models/{model_name}[/versions/{model_version}]/infer: JSON, or JSON plus binary tensors."""

    async def infer(scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        try:
            answer, header_length = codec.infer(
                pipeline, await read_body(receive), name=params["model_name"], version=params.get("model_version"),
                header_length=header(scope, HEADER_LENGTH_KEY), content_encoding=header(scope, b"content-encoding"),
            )
        except ClientGone:
            await client_gone(scope, send)
            return
        except IrisServeError as exc:
            await send_error(scope, send, exc)
            return
        if header_length is None:
            await send_json(send, 200, answer)
            return
        headers = [
            (b"content-type", BINARY_MEDIA_TYPE.encode()), (b"content-length", str(len(answer)).encode()),
            (HEADER_LENGTH_KEY, str(header_length).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return infer


async def client_gone(scope: Scope, send: Send) -> None:
    logger.info(CLIENT_GONE, scope["method"], scope["path"])
    await send_client_gone(send)

