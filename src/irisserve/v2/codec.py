"""The V2 tensor codec over the request pipeline: a request's input tensors to validated rows, and the
predictor's typed predictions to the asked-for output tensors.

A plain model (every feature a number, none nullable: Iris) takes one FP32/FP64 tensor [N, n_features]. A typed
model (categories, integers, booleans, gaps) takes one named input per feature, each [N] or [N, 1], as MLServer's
pandas codec and Triton name them: BYTES for a category, INT64 (or FP64/FP32 of whole values) for a category coded
as integers, FP64/FP32/INT64 for a number or an integer, BOOL for a boolean. The columns become the same row objects
/predict validates.

Rows are checked by the same rules as ``/predict`` (the spec's generated model), so ``/v2`` and
``/predict`` always agree. The binary tensor data extension is supported both ways, as tritonclient uses
it by default. Every problem is a BadRequestError (400 in this protocol) that says what to send instead.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
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
from irisserve.core.spec import FLOAT32_MAX, MAX_CATEGORIES_LISTED, Feature, ModelSpec
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
# A typed model's inputs: one per feature, each of these datatypes by the feature's kind (the first is the metadata's).
KIND_DTYPES: dict[str, tuple[str, ...]] = {
    "number": ("FP64", "FP32", "INT64"),
    "integer": ("FP64", "FP32", "INT64"),
    "category": ("BYTES",),
    "boolean": ("BOOL",),
}
# A category coded as integers (its model reads int64): INT64 first, as a pandas integer column is sent.
INTEGER_CATEGORY_DTYPES: tuple[str, ...] = ("INT64", "FP64", "FP32")
NUMERIC_DTYPES: dict[str, str] = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}
MAX_NAMES_LISTED = 10


def feature_dtypes(feature: Feature) -> tuple[str, ...]:
    """The datatypes a typed model's input for ``feature`` takes; the first is the metadata's."""
    return INTEGER_CATEGORY_DTYPES if feature.integer_categories else KIND_DTYPES[feature.kind]


def describe_kind(feature: Feature) -> str:
    return "category coded as integers" if feature.integer_categories else feature.kind


def output_dtypes(spec: ModelSpec) -> dict[str, str]:
    return CLASSIFIER_OUTPUTS if spec.is_classifier else REGRESSOR_OUTPUTS


def default_outputs(spec: ModelSpec) -> tuple[str, ...]:
    return ("label", "probabilities") if spec.is_classifier else ("predict",)


def example_request(spec: ModelSpec) -> dict[str, Any]:
    if not spec.plain:
        return {
            "inputs": [
                {"name": f.name, "shape": [1], "datatype": feature_dtypes(f)[0], "data": [spec.example.get(f.name)]}
                for f in spec.features
            ]
        }
    row = list(spec.example.values())
    return {"inputs": [{"name": INPUT_NAME, "shape": [1, len(row)], "datatype": "FP32", "data": [row]}]}


def listed(names: Sequence[str]) -> str:
    """At most MAX_NAMES_LISTED names, then how many more."""
    text = ", ".join(repr(name[:MAX_VALUE_CHARS]) for name in names[:MAX_NAMES_LISTED])
    return text + (f" (and {len(names) - MAX_NAMES_LISTED} more)" if len(names) > MAX_NAMES_LISTED else "")


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


# --- A typed model: one named input per feature ------------------------------------------------------


def column_length(tensor: RequestInput, feature: Feature) -> int:
    """The input's N, once its datatype suits the feature's kind and its shape is [N] or [N, 1]."""
    accepted = feature_dtypes(feature)
    if tensor.datatype not in accepted:
        raise BadRequestError(
            f"Input {tensor.name!r} has datatype {shorten(tensor.datatype)}; feature {feature.name!r} is a {describe_kind(feature)}: "
            f"send one of {list(accepted)}."
        )
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise BadRequestError(f"Input {tensor.name!r} has shape {shorten(shape)}; each input is [N] or [N, 1] with N >= 1.")
    return shape[0]


def column_from_json(tensor: RequestInput, rows: int) -> list[Any]:
    data = tensor.data
    if data is None:
        raise BadRequestError(f"Input {tensor.name!r} has no data; send 'data' or binary_data_size.")
    if data and all(isinstance(item, list) for item in data):  # [N, 1] nested
        if any(len(item) != 1 for item in data):
            raise BadRequestError(f"Input {tensor.name!r}: nested data must be {rows} lists of one value each; or send it flat.")
        data = [item[0] for item in data]
    if len(data) != rows:
        raise BadRequestError(f"Input {tensor.name!r} has {len(data)} values; shape {tensor.shape} needs {rows}.")
    return data


def column_from_bytes(tensor: RequestInput, raw: bytes, rows: int) -> list[Any]:
    """Binary tensor data: little-endian numbers, one byte per BOOL, BYTES each after a 4-byte little-endian length."""
    wrong = f"Input {tensor.name!r} has binary data that is not {rows} {tensor.datatype} values"
    if tensor.datatype in NUMERIC_DTYPES:
        dtype = np.dtype(NUMERIC_DTYPES[tensor.datatype])
        if len(raw) != rows * dtype.itemsize:
            raise BadRequestError(f"{wrong}: shape {tensor.shape} of {tensor.datatype} needs {rows * dtype.itemsize} bytes, got {len(raw)}.")
        return np.frombuffer(raw, dtype=dtype).tolist()
    if tensor.datatype == "BOOL":
        flags = np.frombuffer(raw, dtype=np.uint8)
        if len(flags) != rows or bool((flags > 1).any()):
            raise BadRequestError(f"{wrong}: {rows} bytes, each 0 or 1.")
        return [bool(flag) for flag in flags.tolist()]
    values: list[Any] = []
    offset = 0
    while offset < len(raw) and len(values) < rows:
        if offset + 4 > len(raw):
            break
        (size,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + size > len(raw):
            break
        try:
            values.append(raw[offset + 4 : offset + 4 + size].decode())
        except UnicodeDecodeError:
            raise BadRequestError(f"Input {tensor.name!r}: element {len(values)} is not UTF-8 text.") from None
        offset += 4 + size
    if len(values) != rows or offset != len(raw):
        raise BadRequestError(f"{wrong}: {rows} elements, each a 4-byte little-endian length then that many bytes.")
    return values


def binary_chunks(request: InferenceRequest, binary: bytes) -> dict[str, bytes]:
    """Each binary input's bytes, cut from the body in the order the inputs are listed (as tritonclient writes them)."""
    chunks: dict[str, bytes] = {}
    offset = 0
    for tensor in request.inputs:
        size = binary_size(tensor)
        if size is None:
            continue
        if offset + size > len(binary):
            raise BadRequestError(
                f"Input {tensor.name!r} declares binary_data_size {size}; only {len(binary) - offset} bytes are left after the header."
            )
        chunks[tensor.name] = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise BadRequestError(f"The body has {len(binary) - offset} bytes after the JSON header that no input declares.")
    return chunks


def as_row_value(value: Any, feature: Feature) -> Any:
    """A tensor element as /predict's JSON value: a nullable number's NaN and a nullable category's empty string
    (not one of its values) are missing (None); anything else is left for the spec's rules to judge."""
    if feature.nullable:
        if isinstance(value, float) and value != value:
            return None
        if feature.kind == "category" and value == "" and "" not in feature.codes:
            return None
    return value


def describe_row_errors(errors: Sequence[dict[str, Any]]) -> str:
    """The spec's errors on row objects, each naming the input (the feature) and the row."""
    worded = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        named = len(loc) >= 2  # (row, feature): the feature is the input
        where = f"Input {str(loc[1])[:MAX_VALUE_CHARS]!r} row {loc[0]}" if named else " ".join(["row", *map(str, loc)])
        worded.append({**error, "loc": (where,)})
    return describe_errors(worded)


def typed_rows(request: InferenceRequest, binary: bytes, spec: ModelSpec, limit: int) -> list[list[Any]]:
    """A typed model's inputs (one per feature, in any order) as rows checked by the spec's rules, as /predict's are."""
    features = {feature.name: feature for feature in spec.features}
    names = [tensor.name for tensor in request.inputs]
    unknown = [name for name in names if name not in features]
    if unknown:
        raise BadRequestError(
            f"Unknown input(s) {listed(unknown)}; model {spec.name!r} takes one input per feature, each [N] or [N, 1]: "
            f"{listed(spec.feature_names)}."
        )
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)  # linear: a body may list 20,000 inputs
    if repeated:
        raise BadRequestError(f"Input(s) {listed(repeated)} sent more than once; send each feature's input once.")
    missing = [name for name in spec.feature_names if name not in names]
    if missing:
        raise BadRequestError(
            f"Missing input(s) {listed(missing)}; model {spec.name!r} takes one input per feature, each [N] or [N, 1] "
            "(a nullable feature's missing values as null, or NaN for a number)."
        )
    first = request.inputs[0]
    rows = column_length(first, features[first.name])
    for tensor in request.inputs[1:]:
        length = column_length(tensor, features[tensor.name])
        if length != rows:
            raise BadRequestError(
                f"Input {tensor.name!r} has {length} rows but input {first.name!r} has {rows}; every input needs the same N."
            )
    check_batch_size(rows, limit)
    chunks = binary_chunks(request, binary)
    columns = {
        tensor.name: (column_from_bytes(tensor, chunks[tensor.name], rows) if tensor.name in chunks else column_from_json(tensor, rows))
        for tensor in request.inputs
    }
    records = [
        {feature.name: as_row_value(columns[feature.name][index], feature) for feature in spec.features} for index in range(rows)
    ]
    try:
        validated = _rows_adapter(spec).validate_python(records)
    except ValidationError as exc:
        raise BadRequestError(describe_row_errors(json_safe_errors(exc.errors(include_url=False)))) from None
    return [row_values(row) for row in validated]


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


def feature_input(feature: Feature) -> dict[str, Any]:
    """A typed model's input for one feature: its name, datatype and shape, and its kind's rules as parameters."""
    dtypes = feature_dtypes(feature)
    parameters: dict[str, Any] = {"kind": feature.kind, "nullable": feature.nullable, "datatypes": list(dtypes)}
    if feature.kind == "category":
        parameters["categories"] = list(feature.categories[:MAX_CATEGORIES_LISTED])  # integers for an integer category
        parameters["unseen"] = "predicted and flagged" if feature.unknown == "ignore" else "refused"
    return {"name": feature.name, "datatype": dtypes[0], "shape": [-1], "parameters": parameters}


def model_metadata(spec: ModelSpec, platform: str) -> dict[str, Any]:
    n_classes = len(spec.targets)
    inputs = (
        [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, len(spec.features)],
                "parameters": {"feature_names": list(spec.feature_names), "datatypes": list(INPUT_DTYPES)},
            }
        ]
        if spec.plain
        else [feature_input(feature) for feature in spec.features]
    )
    return {
        "name": spec.name,
        "versions": [spec.version],
        "platform": platform,
        "inputs": inputs,
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
    if not pipeline.predictor.ready:
        raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
    check_content_encoding(content_encoding)
    parsed, binary = parse_inference_request(body, header_length, spec)
    outputs = requested_outputs(parsed, spec)
    limit = pipeline.limits.max_batch_size
    rows = input_rows(parsed, binary, spec, limit) if spec.plain else typed_rows(parsed, binary, spec, limit)
    predictions, _ = pipeline.predict_rows(rows)
    answer: dict[str, Any] = {"model_name": name, "model_version": spec.version}
    if parsed.id is not None:
        answer["id"] = parsed.id
    answer["outputs"] = [output_tensor(output, predictions, spec) for output, _ in outputs]
    return encode_response(answer, {output for output, as_binary in outputs if as_binary})
