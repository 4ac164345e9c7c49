"""An empty functions-framework ASGI function returning a constant: ``@functions_framework.aio.http`` on an
``async def``, which functions-framework serves with Starlette on gunicorn's uvicorn worker (the floor of
that stack, beside the Flask one of ``empty_function.py``)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.aio.http
async def predict(request: Request) -> Response:
    return Response(b'{"prediction":"constant"}', media_type="application/json")
