"""The hot routes' one implementation, as plain ASGI: bytes to the pipeline (or the V2 codec), its bytes back.

Declared on FastAPI (``web/app.py``, ``web/v2.py``) with ``@served_by``, so /docs describes them; run by
``ServedRoute`` (``web/routing.py``), at the root or behind any prefix.
"""

from __future__ import annotations

from functools import partial

from starlette.types import Receive, Scope, Send

from irisserve.core.errors import encode_json
from irisserve.core.registry import ModelRegistry, ServedModel
from irisserve.core.schemas import health_body
from irisserve.ops.asgi import JSON_TYPE, Reply, answer_body, header, prediction_reply, send_json
from irisserve.ops.lifecycle import is_draining
from irisserve.v2 import codec
from irisserve.v2.codec import HEADER_LENGTH
from irisserve.web.routing import Handler

BINARY_MEDIA_TYPE = "application/octet-stream"
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()


def resolve(registry: ModelRegistry, scope: Scope) -> ServedModel:
    """The model a request is for, by its path (the default model for the seed routes), noted in the scope for
    the live figures; the request keeps this record to the end, whatever switch happens meanwhile."""
    params = scope.get("path_params") or {}
    record = registry.resolve(params.get("model_name"), params.get("model_version"))
    scope.setdefault("state", {})["served"] = record
    return record


def health_handler(registry: ModelRegistry) -> Handler:
    """GET and HEAD /health: 200 once the default model is loaded and warmed up, 503 before and while draining."""

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        record = registry.snapshot.serving.get(registry.default_name)
        status, body = health_body(None if record is None else record.predictor, draining=is_draining())
        await send_json(send, status, encode_json(body))  # uvicorn sends no body to a HEAD request

    return health


def predict_handler(registry: ModelRegistry, *, batch: bool, read_timeout: float) -> Handler:
    """POST /predict or /predict/batch (of the default model, or of the model and version the path names): the
    body to that model's pipeline, its answer back."""

    def handle(scope: Scope, body: bytes) -> Reply:
        pipeline = resolve(registry, scope).pipeline
        predict = pipeline.predict_batch if batch else pipeline.predict_one
        return prediction_reply(predict(body, content_encoding=header(scope, b"content-encoding")))

    async def predict_route(scope: Scope, receive: Receive, send: Send) -> None:
        await answer_body(scope, receive, send, partial(handle, scope), read_timeout=read_timeout)

    return predict_route


def v2_infer_handler(registry: ModelRegistry, read_timeout: float) -> Handler:
    """POST /v2/models/{model_name}[/versions/{model_version}]/infer: JSON, or JSON plus binary tensors."""

    def handle(scope: Scope, body: bytes) -> Reply:
        params = scope["path_params"]
        answer, header_length = codec.infer(
            resolve(registry, scope).pipeline, body, name=params["model_name"], version=params.get("model_version"),
            header_length=header(scope, HEADER_LENGTH_KEY), content_encoding=header(scope, b"content-encoding"),
        )
        if header_length is None:
            return answer, [JSON_TYPE]
        return answer, [(b"content-type", BINARY_MEDIA_TYPE.encode()), (HEADER_LENGTH_KEY, str(header_length).encode())]

    async def infer_route(scope: Scope, receive: Receive, send: Send) -> None:
        await answer_body(scope, receive, send, partial(handle, scope), read_timeout=read_timeout)

    return infer_route
