"""The error hierarchy shared by both front doors, and the one table mapping each error to an HTTP answer."""

from __future__ import annotations

import json
from typing import Any


class IrisServeError(Exception):
    """Base class: the message is safe to show to the client."""

    status_code = 500


class ArtifactError(IrisServeError):
    """The model artifact is missing, incomplete, tampered with, or built by incompatible libraries."""

    status_code = 500


class ModelNotReadyError(IrisServeError):
    """A prediction was asked for before the model finished loading (or while the process drains)."""

    status_code = 503


class ServiceUnavailableError(IrisServeError):
    """The server cannot take this request now (it is shutting down); the client should send it again."""

    status_code = 503


class UnknownModelError(IrisServeError):
    """The path names a model or version this server does not serve (Open Inference Protocol routes)."""

    status_code = 404


class ConflictError(IrisServeError):
    """The request asks for a change the server's current state forbids (unloading the default model)."""

    status_code = 409


class BadRequestError(IrisServeError):
    """The request cannot be read at all (for example, JSON nested too deeply to parse)."""

    status_code = 400


class AuthenticationError(IrisServeError):
    """An API key is configured and the request carries none, or a wrong one."""

    status_code = 401


class RequestTimeoutError(IrisServeError):
    """The body did not arrive within the server's read deadline (the function's gunicorn)."""

    status_code = 408


class PayloadTooLargeError(IrisServeError):
    """The body, or the number of rows in a batch, is over the configured limit."""

    status_code = 413


class UnsupportedMediaTypeError(IrisServeError):
    """The body is sent in an encoding the service does not read (a compressed body, say)."""

    status_code = 415


class ModelOutputError(IrisServeError):
    """The model's output is not finite (NaN or an infinity) for some rows: inputs beyond what it can compute.

    Such a value is never sent as JSON nor counted in the live figures, drift or metrics; ``rows`` are the
    offending rows' indexes in the request."""

    status_code = 422
    MESSAGE = "the model's output is not finite for this input; send values nearer the training range"

    def __init__(self, rows: list[int]) -> None:
        shown = ", ".join(map(str, rows[:10])) + (f" (and {len(rows) - 10} more)" if len(rows) > 10 else "")
        super().__init__(f"Row {shown}: {self.MESSAGE}.")
        self.rows = rows


class RequestValidationFailed(IrisServeError):
    """The body breaks the schema (or is not JSON); ``detail`` is FastAPI's list of error objects."""

    status_code = 422

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(detail)} validation error(s)")
        self.detail = detail


def error_body(exc: IrisServeError) -> dict[str, Any]:
    """The JSON body for an error: FastAPI's shape, ``{"detail": ...}``, in both front doors."""
    if isinstance(exc, RequestValidationFailed):
        return {"detail": exc.detail}
    return {"detail": str(exc)}


# One encoder, built once: json.dumps with options builds a new JSONEncoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_json(body: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it, so both front doors send the same bytes."""
    return _ENCODER.encode(body).encode()


def error_answer(exc: IrisServeError) -> tuple[int, bytes]:
    """The status and JSON bytes every front door sends for ``exc``."""
    return exc.status_code, encode_json(error_body(exc))
