"""The one request pipeline both front doors call: bytes in, bytes out.

decode (JSON) → limits (body size; batch size before any row is validated) → validate (the spec's
generated models; at most ``MAX_ERRORS_SHOWN`` errors echoed, each input cut short) → predict (one
vectorised call) → encode (the HTTP body, built here and nowhere else). A front door only translates:
its request's bytes to a call here, the answer or the raised ``IrisServeError`` (``errors.error_answer``)
to its framework's response. Bodies are FastAPI's shapes, so the web service's API is what it was.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pydantic_core
from pydantic import BaseModel, ValidationError

from irisserve.core.errors import (
    BadRequestError,
    ModelOutputError,
    PayloadTooLargeError,
    RequestValidationFailed,
    UnsupportedMediaTypeError,
    encode_json,
)
from irisserve.core.predictor import NO_TEXTS, VECTORISE_FROM_ROWS, ClassPredictions, Predictions, Predictor, Texts
from irisserve.core.spec import ModelSpec

# A 1 MiB body of {"0":0,"1":0,...} breaks the schema 80,000 times; listing every error took 7 s of CPU
# and an 11 MB answer. The first few tell the client what to fix.
MAX_ERRORS_SHOWN = 20
MAX_INPUT_ITEMS_ECHOED = 20
MAX_INPUT_CHARS_ECHOED = 200
# A refused (413) body is still read and dropped, up to this much, so its client reads the 413 rather than a
# reset; past it the connection is simply closed.
DISCARD_MAX_BYTES = 16 * 1024 * 1024
TOO_DEEP = "The request body is nested too deeply to parse; send a flat JSON object of feature names and numbers."
NUMBER_TOO_LONG = "The request body holds a number too long to parse; send features as ordinary decimal numbers."
NOT_UTF8 = "The request body is not UTF-8 text; send JSON encoded as UTF-8."
LONE_SURROGATE = (
    "The request body holds a lone UTF-16 surrogate escape (such as \\ud800), which is not a character; "
    "send feature names and text as valid Unicode."
)
# Past this many fields more than the model has features, an object is refused from its key count alone: a 1 MiB
# body of 100,000 unknown keys cost pydantic 0.6-4 s of CPU to word 100,000 errors nobody reads.
EXTRA_FIELDS_MARGIN = MAX_ERRORS_SHOWN
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

# Called after each model call with the spec, the float32 matrix the model saw ([rows, features]), the
# predictions, each row's out-of-range features and the seconds the model took: the web service counts them in
# its metrics, both doors feed their live figures and drift window from it.
PredictionObserver = Callable[[ModelSpec, np.ndarray, Predictions, list[list[str]], float], None]


class Answer(NamedTuple):
    """A prediction's JSON body and its W3C Server-Timing header (each stage's milliseconds)."""

    body: bytes
    server_timing: str


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_batch_size: int


def body_too_large(limit: int, size: int | None = None) -> PayloadTooLargeError:
    """The 413 for a body over IRISSERVE_MAX_BODY_BYTES (``size`` when Content-Length told it)."""
    got = f"is {size} bytes" if size is not None else "is larger than that"
    return PayloadTooLargeError(
        f"The request body {got}; the limit is {limit} bytes (setting IRISSERVE_MAX_BODY_BYTES). "
        "Send fewer rows per request."
    )


def check_content_encoding(content_encoding: str | None) -> None:
    """Bodies are read as sent: a compressed one is refused (415) rather than misread as text that is not UTF-8."""
    if content_encoding and content_encoding.strip().lower() != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {content_encoding.strip()[:40]!r} is not supported; send the body uncompressed."
        )


def check_batch_size(count: int, limit: int) -> None:
    """Refuse a batch over the configured limit, naming both numbers and the setting."""
    if count > limit:
        raise PayloadTooLargeError(
            f"The batch has {count} instances; the limit is {limit} (setting IRISSERVE_MAX_BATCH_SIZE)."
        )


# --- decode ---------------------------------------------------------------------------------------


def decode_json(body: bytes) -> Any:
    """The body as JSON, refused the way FastAPI refuses a body it cannot read (its 422 shapes), or a 400
    saying what is wrong when the bytes cannot be JSON at all."""
    if not body.strip():
        raise RequestValidationFailed([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestValidationFailed(
            [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}]
        ) from None
    except UnicodeDecodeError:
        raise BadRequestError(NOT_UTF8) from None
    except RecursionError:
        raise BadRequestError(TOO_DEEP) from None
    except ValueError:  # int() past sys.get_int_max_str_digits()
        raise BadRequestError(NUMBER_TOO_LONG) from None
    if _SURROGATE_ESCAPE.search(body) and _holds_lone_surrogate(payload):
        raise BadRequestError(LONE_SURROGATE)
    return payload


def decode_json_quickly(body: bytes) -> Any:
    """``decode_json`` for a body already known to be wrong (a great many keys): pydantic's JSON parser, faster
    than the json module on a 1 MiB object; anything it refuses is decoded again by ``decode_json`` to word why."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        return decode_json(body)


def _holds_lone_surrogate(payload: Any) -> bool:
    """Whether a decoded value holds a string UTF-8 cannot encode (a lone surrogate): echoed, it would fail."""
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def check_text(text: str) -> None:
    """Refuse a string that came through a fast path (the V2 ``id``) if UTF-8 cannot encode it."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise BadRequestError(LONE_SURROGATE) from None


# --- validate ---------------------------------------------------------------------------------------


def json_safe_errors(errors: Sequence[Mapping[str, Any]], total: int | None = None) -> list[dict[str, Any]]:
    """Validation errors as FastAPI shows them (type, loc, msg, input, ctx), made JSON-safe and capped.

    FastAPI's own handler echoes ``input`` verbatim and fails with a 500 when it holds NaN or an
    infinity; here those become strings ("nan", "inf"). At most MAX_ERRORS_SHOWN errors are listed, then
    one entry saying how many more; a large echoed input is replaced by a note of its size."""
    shown = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        cut = {key: value for key, value in error.items() if key not in ("url", "input")}
        if isinstance(cut.get("loc"), (list, tuple)):
            cut["loc"] = [_cut(part) for part in cut["loc"]]  # a 1,000,000-character unknown key
        if isinstance(cut.get("ctx"), Mapping):
            cut["ctx"] = {key: _cut(value) for key, value in cut["ctx"].items()}
        safe = _json_safe(cut)
        safe["input"] = _shrink(_json_safe(_cut(error.get("input"))))  # cut first: the input may be the whole body
        shown.append(safe)
    total = len(errors) if total is None else total
    if total > MAX_ERRORS_SHOWN:
        more = total - MAX_ERRORS_SHOWN
        shown.append({"type": "too_many_errors", "loc": ["body"], "msg": f"{more} more errors not shown; fix these first.", "input": None})
    return shown


def _json_safe(value: Any, depth: int = 0) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if depth > 8:
        return "<nested too deeply, not echoed>"
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in value]
    return str(value)


def _cut(value: Any) -> Any:
    """A long string cut short, a large object or array replaced by a note of its size (cheap: no encoding)."""
    if isinstance(value, (dict, list)) and len(value) > MAX_INPUT_ITEMS_ECHOED:
        kind = "object with" if isinstance(value, dict) else "array of"
        return f"<{kind} {len(value)} items, not echoed>"
    if isinstance(value, str) and len(value) > MAX_INPUT_CHARS_ECHOED:
        return value[:MAX_INPUT_CHARS_ECHOED] + f"... <{len(value)} characters, cut>"
    return value


def _shrink(value: Any) -> Any:
    value = _cut(value)
    if isinstance(value, (dict, list)) and len(encode_json(value)) > MAX_INPUT_CHARS_ECHOED * 5:
        return f"<{'object' if isinstance(value, dict) else 'array'} of {len(encode_json(value))} bytes, not echoed>"
    return value


def validate(schema: type[BaseModel], payload: Any) -> Any:
    """Validate a decoded JSON value; raise RequestValidationFailed in FastAPI's shape (loc starts with "body")."""
    try:
        return schema.model_validate(payload, from_attributes=True)  # as FastAPI does: same error types
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationFailed(json_safe_errors([{**e, "loc": ("body", *e["loc"])} for e in errors])) from None


def row_values(instance: BaseModel) -> list[Any]:
    """A validated row's values in the spec's feature order (the generated model's field order)."""
    return list(instance.__dict__.values())


# --- predict and encode ------------------------------------------------------------------------------


class RequestPipeline:
    """One model's request path, shared by the web service and the function."""

    def __init__(self, predictor: Predictor, limits: Limits, *, observe: PredictionObserver | None = None) -> None:
        self.predictor = predictor
        self.spec = predictor.spec
        self.limits = limits
        self.observe = observe
        spec = self.spec
        self._names = spec.feature_names
        self._mins = [feature.minimum for feature in spec.features]
        self._maxs = [feature.maximum for feature in spec.features]
        self._targets = list(spec.targets)
        self._instances_is_feature = "instances" in self._names
        # In a valid body every ':' and '{' belongs to JSON syntax or a feature name (names may hold them).
        self._row_colons = len(self._names) + sum(encode_json(name).count(b":") for name in self._names)
        self._row_braces = 1 + sum(encode_json(name).count(b"{") for name in self._names)

    def check_body_size(self, size: int) -> None:
        if size > self.limits.max_body_bytes:
            raise body_too_large(self.limits.max_body_bytes, size)

    def predict_one(self, body: bytes, *, content_encoding: str | None = None) -> Answer:
        """``POST /predict``: one row in, one prediction object out."""
        return self._answer(body, content_encoding, batch=False)

    def predict_batch(self, body: bytes, *, content_encoding: str | None = None) -> Answer:
        """``POST /predict/batch``: ``{"instances": [...]}`` in, ``{"predictions": [...], "model_version"}`` out."""
        return self._answer(body, content_encoding, batch=True)

    def predict_any(self, body: bytes, *, content_encoding: str | None = None) -> Answer:
        """The function's one URL: a batch when the object has ``instances``, else one row."""
        return self._answer(body, content_encoding, batch=None)

    def _answer(self, body: bytes, content_encoding: str | None, *, batch: bool | None) -> Answer:
        started = time.perf_counter()
        check_content_encoding(content_encoding)
        self.check_body_size(len(body))
        rows, batch = self._rows(body, batch)
        parsed = time.perf_counter()
        try:
            answers = self.answers(rows)
        except ModelOutputError as exc:  # FastAPI's 422 shape, naming each row as a schema error would
            raise RequestValidationFailed(
                json_safe_errors(
                    [
                        {"type": "model_output_not_finite", "loc": ["body", "instances", row] if batch else ["body"],
                         "msg": exc.MESSAGE[:1].upper() + exc.MESSAGE[1:], "input": None}
                        for row in exc.rows
                    ]
                )
            ) from None
        predicted = time.perf_counter()
        encoded = encode_answers({"predictions": answers, "model_version": self.spec.version} if batch else answers[0])
        timing = f"parse;dur={(parsed - started) * 1e3:.3f}, predict;dur={(predicted - parsed) * 1e3:.3f}"
        return Answer(encoded, f"{timing}, encode;dur={(time.perf_counter() - predicted) * 1e3:.3f}")

    def _rows(self, body: bytes, batch: bool | None) -> tuple[list[list[float]], bool]:
        """The validated rows, and whether the body was a batch (``batch`` None: decide by ``instances``).

        A valid body is parsed and validated by one pydantic call on its bytes; anything else takes the
        decode-then-validate path, which alone words the errors (FastAPI's 422 bodies, the limits' 400/413)."""
        as_batch = batch if batch is not None else (b'"instances"' in body and not self._instances_is_feature)
        may_be_valid = self._may_be_valid(body, as_batch)
        if may_be_valid:
            try:
                if as_batch:
                    instances = self.spec.batch_model.model_validate_json(body).instances  # type: ignore[attr-defined]
                    check_batch_size(len(instances), self.limits.max_batch_size)
                    return [row_values(row) for row in instances], True
                return [row_values(self.spec.request_model.model_validate_json(body))], False
            except ValidationError:
                pass
        payload = decode_json(body) if may_be_valid else decode_json_quickly(body)
        if batch is None:
            batch = self.is_batch(payload)
        if batch:
            return self._batch_rows(payload), True
        self._check_field_count(payload, ["body"])
        return [row_values(validate(self.spec.request_model, payload))], False

    def is_batch(self, payload: Any) -> bool:
        """The function's one URL: a batch is an object with ``instances``, unless that is a feature holding a number."""
        if not isinstance(payload, dict) or "instances" not in payload:
            return False
        return not self._instances_is_feature or isinstance(payload["instances"], list)

    def _may_be_valid(self, body: bytes, batch: bool) -> bool:
        """Whether the body's ``:`` count allows a valid body (each key has one; valid bodies hold no other
        strings): a body with far more keys skips pydantic's parse, which words one error per key, slowly."""
        colons = body.count(b":")
        if not batch:
            return colons <= self._row_colons
        rows = (body.count(b"{") - 1) // self._row_braces
        return colons <= 1 + min(rows, self.limits.max_batch_size) * self._row_colons

    def _check_field_count(self, row: Any, loc: list[Any]) -> None:
        """Refuse an object with far more fields than the model has features from its keys alone, in the 422
        shape pydantic would give (missing features, then unknown fields), without validating each one."""
        if not isinstance(row, dict) or len(row) <= len(self._names) + EXTRA_FIELDS_MARGIN:
            return
        missing = [name for name in self._names if name not in row]
        errors: list[dict[str, Any]] = [
            {"type": "missing", "loc": [*loc, name], "msg": "Field required", "input": row} for name in missing[:MAX_ERRORS_SHOWN]
        ]
        known = set(self._names)
        for key, value in row.items():
            if len(errors) >= MAX_ERRORS_SHOWN:
                break
            if key not in known:
                errors.append({"type": "extra_forbidden", "loc": [*loc, key], "msg": "Extra inputs are not permitted", "input": value})
        unknown = len(row) - (len(self._names) - len(missing))
        raise RequestValidationFailed(json_safe_errors(errors, total=len(missing) + unknown))

    def _batch_rows(self, payload: Any) -> list[list[float]]:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if isinstance(instances, list):  # before validation: a 1 MiB body holds 60,000 bad rows
            check_batch_size(len(instances), self.limits.max_batch_size)
            for index, row in enumerate(instances):
                self._check_field_count(row, ["body", "instances", index])
        batch = validate(self.spec.batch_model, payload)
        return [row_values(row) for row in batch.instances]

    def answers(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """Predict validated rows in one model call; each row's response object."""
        predictions, flags = self.predict_rows(rows)
        return encode_predictions(self.spec, predictions, flags)

    def predict_rows(self, rows: Sequence[Sequence[Any]]) -> tuple[Predictions, list[list[str]]]:
        """Validated rows (``ModelSpec.encode``) through the model."""
        if self.spec.plain and len(rows) >= VECTORISE_FROM_ROWS:
            # Python floats as float64 once, for the range check; as float32 (the same rounding np.asarray would do
            # from each float) for the model.
            values = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
            return self.predict_matrix(values.astype(np.float32), values)
        matrix, texts = self.spec.encode(rows)
        return self.predict_matrix(matrix, rows if self.spec.plain else None, texts)

    def predict_matrix(
        self, matrix: np.ndarray, rows: Sequence[Sequence[float]] | np.ndarray | None = None, texts: Texts = NO_TEXTS
    ) -> tuple[Predictions, list[list[str]]]:
        """The model call with its out-of-range flags (a category: an unseen value), observed (metrics) when an
        observer is set."""
        started = time.perf_counter()
        predictions = self.predictor.predict(matrix, texts)
        seconds = time.perf_counter() - started
        flags = self.out_of_range(matrix.tolist() if rows is None else rows)
        if self.observe is not None:
            self.observe(self.spec, matrix, predictions, flags, seconds)
        return predictions, flags

    def out_of_range(self, rows: Sequence[Sequence[float]] | np.ndarray) -> list[list[str]]:
        """Each row's features outside the training range (still predicted, but flagged); a missing value (NaN) is not."""
        names, mins, maxs = self._names, self._mins, self._maxs
        if len(rows) < VECTORISE_FROM_ROWS:
            return [
                [name for name, value, low, high in zip(names, row, mins, maxs, strict=True) if value < low or value > high]
                for row in rows
            ]
        values = np.asarray(rows, dtype=np.float64)
        outside = (values < np.asarray(mins)) | (values > np.asarray(maxs))
        hits = np.asarray(outside.any(axis=1)).tolist()
        return [[names[i] for i in np.flatnonzero(outside[r])] if hits[r] else [] for r in range(len(outside))]


def encode_answers(answers: Any) -> bytes:
    """Prediction answers as JSON, by pydantic-core's encoder: three times as fast as the json module on a 1,000-row
    batch. They hold only finite floats (the predictor refuses any other output), ints, and the manifest's own names, so
    neither encoder's refusals (NaN, a lone surrogate) can apply; floats below 1e-4 read ``7.9e-5``, not ``7.9e-05``."""
    return pydantic_core.to_json(answers)


def encode_predictions(spec: ModelSpec, predictions: Predictions, flags: list[list[str]]) -> list[dict[str, Any]]:
    """The response object of each row: the one place the HTTP shape of a prediction is built."""
    version = spec.version
    if isinstance(predictions, ClassPredictions):
        targets = spec.targets
        return [
            {
                "prediction": targets[class_id],
                "prediction_id": class_id,
                "confidence": probabilities[class_id],
                "probabilities": dict(zip(targets, probabilities, strict=True)),
                "model_version": version,
                "out_of_range_features": flagged,
            }
            for class_id, probabilities, flagged in zip(predictions.class_ids, predictions.probabilities, flags, strict=True)
        ]
    return [
        {"prediction": value, "model_version": version, "out_of_range_features": flagged}
        for value, flagged in zip(predictions.values, flags, strict=True)
    ]
