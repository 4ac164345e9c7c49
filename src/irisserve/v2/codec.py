"""The V2 tensor codec over the request pipeline: a request's one input tensor to the model's float32
matrix [N, n_features], and the predictor's typed predictions to the asked-for output tensors.

Rows are checked by the same rules as ``/predict`` (the spec's generated model), so ``/v2`` and
``/predict`` always agree. The binary tensor data extension is supported both ways, as tritonclient uses
it by default. Every problem is a BadRequestError (400 in this protocol) that says what to send instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from irisserve.core.errors import BadRequestError, ModelNotReadyError, RequestValidationFailed, UnknownModelError, encode_json
from irisserve.core.pipeline import (
    RequestPipeline,
    check_batch_size,
    check_content_encoding,
    decode_json,
    json_safe_errors,
    row_values,
)
from irisserve.core.predictor import ClassPredictions, Predictions
from irisserve.core.spec import FLOAT32_MAX, ModelSpec
from irisserve.v2.models import (
    InferenceRequest,
    RequestInput,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "input"
INPUT_DTYPES: dict[str, str] = {"FP32": "<f4", "FP64": "<f8"}
CLASSIFIER_OUTPUTS: dict[str, str] = {"label": "BYTES", "predict": "INT64", "probabilities": "FP64", "predict_proba": "FP64"}
REGRESSOR_OUTPUTS: dict[str, str] = {"predict": "FP64"}
MAX_ERRORS_SHOWN = 3
MAX_VALUE_CHARS = 60
# Digits past which a shape or size cannot be a real one: refused before Python converts it.
MAX_HEADER_DIGITS = 12


def output_dtypes(spec: ModelSpec) -> dict[str, str]:
    return CLASSIFIER_OUTPUTS if spec.is_classifier else REGRESSOR_OUTPUTS


def default_outputs(spec: ModelSpec) -> tuple[str, ...]:
    return ("label", "probabilities") if spec.is_classifier else ("predict",)


def example_request(spec: ModelSpec) -> dict[str, Any]:
    row = list(spec.example.values())
    return {"inputs": [{"name": INPUT_NAME, "shape": [1, len(row)], "datatype": "FP32", "data": [row]}]}


def shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def describe_errors(errors: Sequence[dict[str, Any]], *, prefix: str = "") -> str:
    """Pydantic errors as one sentence per error: where, what, and the value received."""
    parts = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        received = f" (received {shorten(error['input'])})" if "input" in error and not isinstance(error["input"], dict) else ""
        parts.append(f"{prefix}{where}: {error.get('msg', 'invalid')}{received}")
    more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
    return "; ".join(parts) + more + "."


# --- Request decoding -------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_HEADER_DIGITS or int(text) > len(body):
        raise BadRequestError(
            f"{HEADER_LENGTH} is {shorten(header_length)}; it must be the byte length of the JSON header, "
            f"at most the body's {len(body)} bytes."
        )
    return body[: int(text)], body[int(text) :]


def parse_inference_request(body: bytes, header_length: str | None, spec: ModelSpec) -> tuple[InferenceRequest, bytes]:
    json_part, binary = split_body(body, header_length)
    if not json_part.strip():
        raise BadRequestError(f"The request body is empty; send an inference request such as {json.dumps(example_request(spec))}.")
    try:
        return InferenceRequest.model_validate_json(json_part), binary  # one call on the bytes; errors below
    except ValidationError:
        pass
    try:
        payload = decode_json(json_part)
    except RequestValidationFailed as exc:
        error = exc.detail[0]
        raise BadRequestError(
            f"The request body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])} at byte {error['loc'][-1]})."
        ) from None
    try:
        return InferenceRequest.model_validate(payload), binary
    except ValidationError as exc:
        raise BadRequestError(describe_errors(json_safe_errors(exc.errors(include_url=False)))) from None


def binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequestError(f"Input {tensor.name!r} has binary_data_size {shorten(size)}; it must be a byte count.")
    return size


def check_shape(tensor: RequestInput, spec: ModelSpec, limit: int) -> int:
    """The number of rows, once the datatype and shape are ones this model takes."""
    n_features = len(spec.features)
    if tensor.datatype not in INPUT_DTYPES:
        raise BadRequestError(
            f"Input {tensor.name!r} has datatype {shorten(tensor.datatype)}; this model takes one of {list(INPUT_DTYPES)}."
        )
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise BadRequestError(
            f"Input {tensor.name!r} has shape {shorten(shape)}; this model takes [N, {n_features}] with N >= 1: "
            f"N rows of {', '.join(spec.feature_names)}."
        )
    check_batch_size(shape[0], limit)
    return shape[0]


def flatten_rows(tensor: RequestInput, rows: int, n_features: int) -> list[Any]:
    """Row-major values from flat data, or from nested data whose nesting matches the shape."""
    data = tensor.data
    if data is None:
        raise BadRequestError(f"Input {tensor.name!r} has no data; send 'data' or binary_data_size.")
    nested = [isinstance(item, list) for item in data]
    if any(nested):
        if not all(nested) or len(data) != rows or any(len(row) != n_features for row in data):
            raise BadRequestError(
                f"Input {tensor.name!r}: nested data must be {rows} lists of {n_features} numbers, "
                f"matching shape {tensor.shape}; or send it flat."
            )
        data = [value for row in data for value in row]
    if len(data) != rows * n_features:
        raise BadRequestError(
            f"Input {tensor.name!r} has {len(data)} values; shape {tensor.shape} needs {rows * n_features}."
        )
    return data


def read_binary(tensor: RequestInput, binary: bytes, rows: int, n_features: int) -> list[float]:
    size = binary_size(tensor)
    dtype = np.dtype(INPUT_DTYPES[tensor.datatype])
    expected = rows * n_features * dtype.itemsize
    if size != expected or len(binary) != expected:
        raise BadRequestError(
            f"Input {tensor.name!r} declares binary_data_size {size} with {len(binary)} bytes after the header; "
            f"shape {tensor.shape} of {tensor.datatype} needs {expected}."
        )
    return np.frombuffer(binary, dtype=dtype).tolist()


@lru_cache(maxsize=4)
def _lower_bounds(spec: ModelSpec) -> list[float]:
    """Per feature: values must be > this (an exclusive minimum, else just below -float32 max)."""
    below_range = float(np.nextafter(-FLOAT32_MAX, -np.inf))
    return [f.exclusive_minimum if f.exclusive_minimum is not None else below_range for f in spec.features]


@lru_cache(maxsize=4)
def _rows_adapter(spec: ModelSpec) -> TypeAdapter[Any]:
    return TypeAdapter(list[spec.request_model])  # type: ignore[name-defined]


def validate_rows(values: Sequence[Any], spec: ModelSpec, name: str) -> list[list[float]]:
    """Check every row by the spec's rules (the same as /predict's: finite numbers, within each constraint).

    Plain numbers within every bound pass in one vectorised check; anything else goes through the spec's
    generated model, which words the error exactly as /predict does."""
    width = len(spec.features)
    lows = _lower_bounds(spec) * (len(values) // width)
    # type() is: bool, str and None go to the slow path; NaN fails both comparisons, infinities one.
    if len(lows) == len(values) and all(
        (type(value) is float or type(value) is int) and low < value <= FLOAT32_MAX for value, low in zip(values, lows, strict=True)
    ):
        return [list(values[i : i + width]) for i in range(0, len(values), width)]
    names = spec.feature_names
    width = len(names)
    records = [dict(zip(names, values[i : i + width], strict=True)) for i in range(0, len(values), width)]
    try:
        rows = _rows_adapter(spec).validate_python(records)
    except ValidationError as exc:
        errors = [
            {**e, "loc": (" ".join(["row", *map(str, e["loc"])]),)} for e in json_safe_errors(exc.errors(include_url=False))
        ]
        raise BadRequestError(describe_errors(errors, prefix=f"Input {name!r} ")) from None
    return [row_values(row) for row in rows]


def input_rows(request: InferenceRequest, binary: bytes, spec: ModelSpec, limit: int) -> list[list[float]]:
    """The request's one tensor as checked rows, whichever way (JSON or binary) it was sent."""
    n_features = len(spec.features)
    if len(request.inputs) != 1:
        raise BadRequestError(
            f"The request has {len(request.inputs)} inputs; this model takes exactly one, shape [N, {n_features}]."
        )
    tensor = request.inputs[0]
    rows = check_shape(tensor, spec, limit)
    if binary_size(tensor) is not None:
        values = read_binary(tensor, binary, rows, n_features)
    elif binary:
        raise BadRequestError(f"The body has {len(binary)} bytes after the JSON header but no input declares them.")
    else:
        values = flatten_rows(tensor, rows, n_features)
    return validate_rows(values, spec, tensor.name)


def requested_outputs(request: InferenceRequest, spec: ModelSpec) -> list[tuple[str, bool]]:
    """(name, as binary) for each output to return, in the order asked."""
    as_binary = (request.parameters or {}).get("binary_data_output") is True
    if not request.outputs:
        return [(name, as_binary) for name in default_outputs(spec)]
    names = [output.name for output in request.outputs]
    known = output_dtypes(spec)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BadRequestError(f"Unknown output(s) {[name[:MAX_VALUE_CHARS] for name in unknown]}; this model returns {list(known)}.")
    if len(set(names)) != len(names):
        raise BadRequestError(f"Outputs {names} name one output more than once; ask for each once.")
    return [
        (output.name, (output.parameters or {}).get("binary_data", as_binary) is True) for output in request.outputs
    ]


# --- Response encoding ------------------------------------------------------------------------------


Tensor = dict[str, Any]  # a response output: name, shape, datatype, then data (or parameters when binary)


def output_tensor(name: str, predictions: Predictions, spec: ModelSpec) -> Tensor:
    """One output tensor straight from the predictor's arrays."""
    if not isinstance(predictions, ClassPredictions):
        return {"name": name, "shape": [len(predictions.values)], "datatype": "FP64", "data": predictions.values}
    rows = len(predictions.class_ids)
    if name == "label":
        return {"name": name, "shape": [rows], "datatype": "BYTES", "data": [spec.targets[i] for i in predictions.class_ids]}
    if name == "predict":
        return {"name": name, "shape": [rows], "datatype": "INT64", "data": predictions.class_ids}
    values = [p for row in predictions.probabilities for p in row]
    return {"name": name, "shape": [rows, len(spec.targets)], "datatype": "FP64", "data": values}


def to_binary(tensor: Tensor) -> bytes:
    """Raw little-endian values; BYTES elements each prefixed with a 4-byte length, as Triton encodes them."""
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        encoded = [str(item).encode() for item in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    return np.asarray(data, dtype="<i8" if tensor["datatype"] == "INT64" else "<f8").tobytes()


def encode_response(answer: dict[str, Any], binary_names: set[str]) -> tuple[bytes, int | None]:
    """The body, and the JSON header's length when binary outputs follow it (else None: all JSON). The
    shape is InferenceResponse's (models.py documents it in the OpenAPI), built as plain dicts."""
    if not binary_names:
        return encode_json(answer), None
    chunks = []
    for tensor in answer["outputs"]:
        if tensor["name"] in binary_names:
            raw = to_binary(tensor)
            del tensor["data"]
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = encode_json(answer)
    return header + b"".join(chunks), len(header)


def model_metadata(spec: ModelSpec, platform: str) -> dict[str, Any]:
    n_classes = len(spec.targets)
    return {
        "name": spec.name,
        "versions": [spec.version],
        "platform": platform,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, len(spec.features)],
                "parameters": {"feature_names": list(spec.feature_names), "datatypes": list(INPUT_DTYPES)},
            }
        ],
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [-1, n_classes] if name in ("probabilities", "predict_proba") else [-1]}
            for name, dtype in output_dtypes(spec).items()
        ],
    }


# --- The whole inference ---------------------------------------------------------------------------------------


def find_model(spec: ModelSpec, name: str, version: str | None) -> None:
    """Raise UnknownModelError unless ``name`` (and ``version``, when given) is the served model."""
    if name != spec.name:
        raise UnknownModelError(f"Unknown model {shorten(name)}; this server serves {spec.name!r}.")
    if version is not None and version != spec.version:
        raise UnknownModelError(f"Unknown version {shorten(version)} of model {name!r}; the served version is {spec.version!r}.")


def infer(
    pipeline: RequestPipeline, body: bytes, *, name: str, version: str | None, header_length: str | None,
    content_encoding: str | None,
) -> tuple[bytes, int | None]:
    """One inference request, checked, predicted in one call, answered: the body and, when binary outputs
    follow the JSON header, that header's length."""
    spec = pipeline.spec
    find_model(spec, name, version)
    untyped = [feature.name for feature in spec.features if feature.kind in ("category", "boolean") or feature.nullable]
    if untyped:  # the one [N, features] FP32 tensor would carry a category as its internal code: refused, never misread
        raise BadRequestError(
            f"Model {spec.name!r} has features the Open Inference Protocol route does not carry yet (categories, booleans "
            f"or missing values: {', '.join(map(repr, untyped[:10]))}); send its rows to POST /predict or /predict/batch."
        )
    if not pipeline.predictor.ready:
        raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
    check_content_encoding(content_encoding)
    parsed, binary = parse_inference_request(body, header_length, spec)
    outputs = requested_outputs(parsed, spec)
    rows = input_rows(parsed, binary, spec, pipeline.limits.max_batch_size)
    predictions, _ = pipeline.predict_rows(rows)
    answer: dict[str, Any] = {"model_name": name, "model_version": spec.version}
    if parsed.id is not None:
        answer["id"] = parsed.id
    answer["outputs"] = [output_tensor(output, predictions, spec) for output, _ in outputs]
    return encode_response(answer, {output for output, as_binary in outputs if as_binary})
