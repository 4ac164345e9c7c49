"""The Open Inference Protocol (KServe V2 / Triton / MLServer REST) over the shared Predictor.

Clients built for KServe, Triton and MLServer call ``/v2/...`` unchanged. Requests are validated by the
core's rules (``IrisFeatures``) and answered by the same observed prediction call, so ``/v2`` and ``/predict``
always agree. Errors use the protocol's shape, ``{"error": "..."}``, never FastAPI's ``{"detail": ...}``.
The binary tensor data extension is supported both ways, as tritonclient uses it by default.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from irisserve import __version__
from irisserve.core.errors import (
    BadRequestError,
    IrisServeError,
    ModelNotReadyError,
    RequestValidationFailed,
    UnknownModelError,
)
from irisserve.web.deps import PredictorDep, SettingsDep
from irisserve.ops.lifecycle import is_draining
from irisserve.ops.observability import predict_observed, record_validation_error, route_of
from irisserve.core.predictor import Predictor
from irisserve.core.schemas import FEATURE_NAMES, SEED_EXAMPLE, IrisFeatures, check_batch_size, decode_json, json_safe_errors
from irisserve.core.settings import Settings

SERVER_NAME = "irisserve"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
INPUT_NAME = "input"
INPUT_DTYPES: dict[str, str] = {"FP32": "<f4", "FP64": "<f8"}
OUTPUT_DTYPES: dict[str, str] = {"label": "BYTES", "predict": "INT64", "probabilities": "FP64", "predict_proba": "FP64"}
DEFAULT_OUTPUTS = ("label", "probabilities")
PLATFORMS = {"onnx": "onnxruntime", "sklearn": "sklearn"}
MAX_ERRORS_SHOWN = 3
MAX_VALUE_CHARS = 60
N_FEATURES = len(FEATURE_NAMES)
EXAMPLE_REQUEST: dict[str, Any] = {
    "inputs": [{"name": INPUT_NAME, "shape": [1, N_FEATURES], "datatype": "FP32", "data": [list(SEED_EXAMPLE.values())]}]
}

_ROWS = TypeAdapter(list[IrisFeatures])


# --- The protocol's JSON objects ------------------------------------------------------------------

Parameters = dict[str, Any]


class V2Error(BaseModel):
    error: str = Field(..., description="What is wrong and how to fix it.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str
    shape: list[Annotated[int, Field(strict=True)]]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(None, description="Row-major values, flat or nested; absent when sent as binary.")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(..., description=f"Exactly one tensor, shape [N, {N_FEATURES}].")
    outputs: list[RequestOutput] | None = Field(None, description=f"Any of {list(OUTPUT_DTYPES)}; default {list(DEFAULT_OUTPUTS)}.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


# --- Errors in the protocol's shape ---------------------------------------------------------------


def status_of(exc: IrisServeError) -> int:
    """The core's status table, except that a body breaking the schema is a 400 in this protocol."""
    return 400 if isinstance(exc, RequestValidationFailed) else exc.status_code


def error_response(exc: IrisServeError) -> JSONResponse:
    message = str(exc)
    if isinstance(exc, RequestValidationFailed):
        message = describe_errors(exc.detail)
    return JSONResponse({"error": message}, status_code=status_of(exc))


class V2Route(APIRoute):
    """Answers every IrisServeError raised by a V2 handler as ``{"error": ...}`` instead of the app's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except IrisServeError as exc:
                if status_of(exc) == 400:
                    record_validation_error(route_of(request.scope))
                return error_response(exc)
            except RequestValidationError as exc:
                return error_response(RequestValidationFailed(json_safe_errors(exc.errors())))

        return handle


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


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "The request breaks the protocol or the model's input rules."},
    404: {"model": V2Error, "description": "Unknown model name or version."},
    413: {"model": V2Error, "description": "More rows than IRISSERVE_MAX_BATCH_SIZE."},
    503: {"model": V2Error, "description": "The model is not loaded (yet, or any more)."},
}
MODEL_ERRORS = {code: ERROR_RESPONSES[code] for code in (404, 503)}


def find_model(predictor: Predictor, name: str, version: str | None) -> None:
    """Raise UnknownModelError unless ``name`` (and ``version``, when given) is the served model."""
    manifest = predictor.manifest
    if name != manifest.name:
        raise UnknownModelError(f"Unknown model {name!r}; this server serves {manifest.name!r}.")
    if version is not None and version != manifest.version:
        raise UnknownModelError(
            f"Unknown version {version!r} of model {name!r}; the served version is {manifest.version!r}."
        )


# --- Request decoding -------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise BadRequestError(
            f"{HEADER_LENGTH} is {header_length!r}; it must be the byte length of the JSON header, "
            f"at most the body's {len(body)} bytes."
        )
    return body[: int(header_length)], body[int(header_length) :]


def parse_inference_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    json_part, binary = split_body(body, header_length)
    if not json_part.strip():
        raise BadRequestError(f"The request body is empty; send an inference request such as {json.dumps(EXAMPLE_REQUEST)}.")
    payload = decode_json(json_part)
    try:
        return InferenceRequest.model_validate(payload), binary
    except ValidationError as exc:
        raise BadRequestError(describe_errors(json_safe_errors(exc.errors(include_url=False)))) from None


def binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequestError(f"Input {tensor.name!r} has binary_data_size {size!r}; it must be a byte count.")
    return size


def check_shape(tensor: RequestInput, limit: int) -> int:
    """The number of rows, once the datatype and shape are ones this model takes."""
    if tensor.datatype not in INPUT_DTYPES:
        raise BadRequestError(
            f"Input {tensor.name!r} has datatype {tensor.datatype!r}; this model takes one of {list(INPUT_DTYPES)}."
        )
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != N_FEATURES or shape[0] < 1:
        raise BadRequestError(
            f"Input {tensor.name!r} has shape {shape}; this model takes [N, {N_FEATURES}] with N >= 1: "
            f"N rows of {', '.join(FEATURE_NAMES)}."
        )
    check_batch_size(shape[0], limit)
    return shape[0]


def flatten_rows(tensor: RequestInput, rows: int) -> list[Any]:
    """Row-major values from flat data, or from nested data whose nesting matches the shape."""
    data = tensor.data
    if data is None:
        raise BadRequestError(f"Input {tensor.name!r} has no data; send 'data' or binary_data_size.")
    nested = [isinstance(item, list) for item in data]
    if any(nested):
        if not all(nested) or len(data) != rows or any(len(row) != N_FEATURES for row in data):
            raise BadRequestError(
                f"Input {tensor.name!r}: nested data must be {rows} lists of {N_FEATURES} numbers, "
                f"matching shape {tensor.shape}; or send it flat."
            )
        data = [value for row in data for value in row]
    if len(data) != rows * N_FEATURES:
        raise BadRequestError(
            f"Input {tensor.name!r} has {len(data)} values; shape {tensor.shape} needs {rows * N_FEATURES}."
        )
    return data


def read_binary(tensor: RequestInput, binary: bytes, rows: int) -> list[float]:
    size = binary_size(tensor)
    dtype = np.dtype(INPUT_DTYPES[tensor.datatype])
    expected = rows * N_FEATURES * dtype.itemsize
    if size != expected or len(binary) != expected:
        raise BadRequestError(
            f"Input {tensor.name!r} declares binary_data_size {size} with {len(binary)} bytes after the header; "
            f"shape {tensor.shape} of {tensor.datatype} needs {expected}."
        )
    return np.frombuffer(binary, dtype=dtype).tolist()


def validate_features(values: Sequence[Any], name: str) -> list[IrisFeatures]:
    """Check every row by the core's IrisFeatures rules (finite, > 0, numbers only)."""
    records = [dict(zip(FEATURE_NAMES, values[i : i + N_FEATURES])) for i in range(0, len(values), N_FEATURES)]
    try:
        features = _ROWS.validate_python(records)
    except ValidationError as exc:
        errors = [
            {**e, "loc": (" ".join(["row", *map(str, e["loc"])]),)} for e in json_safe_errors(exc.errors(include_url=False))
        ]
        raise BadRequestError(describe_errors(errors, prefix=f"Input {name!r} ")) from None
    return features


def input_features(request: InferenceRequest, binary: bytes, limit: int) -> list[IrisFeatures]:
    """The request's one tensor as checked rows, whichever way (JSON or binary) it was sent."""
    if len(request.inputs) != 1:
        raise BadRequestError(
            f"The request has {len(request.inputs)} inputs; this model takes exactly one, shape [N, {N_FEATURES}]."
        )
    tensor = request.inputs[0]
    rows = check_shape(tensor, limit)
    if binary_size(tensor) is not None:
        values = read_binary(tensor, binary, rows)
    elif binary:
        raise BadRequestError(f"The body has {len(binary)} bytes after the JSON header but no input declares them.")
    else:
        values = flatten_rows(tensor, rows)
    return validate_features(values, tensor.name)


def requested_outputs(request: InferenceRequest) -> list[tuple[str, bool]]:
    """(name, as binary) for each output to return, in the order asked."""
    as_binary = (request.parameters or {}).get("binary_data_output") is True
    if not request.outputs:
        return [(name, as_binary) for name in DEFAULT_OUTPUTS]
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in OUTPUT_DTYPES]
    if unknown:
        raise BadRequestError(f"Unknown output(s) {unknown}; this model returns {list(OUTPUT_DTYPES)}.")
    if len(set(names)) != len(names):
        raise BadRequestError(f"Outputs {names} name one output more than once; ask for each once.")
    return [
        (output.name, (output.parameters or {}).get("binary_data", as_binary) is True) for output in request.outputs
    ]


# --- Response encoding ------------------------------------------------------------------------------


def output_tensor(name: str, predictions: list[dict[str, Any]], targets: list[str]) -> ResponseOutput:
    rows = len(predictions)
    if name == "label":
        return ResponseOutput(name=name, shape=[rows], datatype="BYTES", data=[p["prediction"] for p in predictions])
    if name == "predict":
        return ResponseOutput(name=name, shape=[rows], datatype="INT64", data=[p["prediction_id"] for p in predictions])
    values = [p["probabilities"][target] for p in predictions for target in targets]
    return ResponseOutput(name=name, shape=[rows, len(targets)], datatype="FP64", data=values)


def to_binary(tensor: ResponseOutput) -> bytes:
    """Raw little-endian values; BYTES elements each prefixed with a 4-byte length, as Triton encodes them."""
    data = tensor.data or []
    if tensor.datatype == "BYTES":
        encoded = [str(item).encode() for item in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    return np.asarray(data, dtype="<i8" if tensor.datatype == "INT64" else "<f8").tobytes()


def encode_response(response: InferenceResponse, binary_names: set[str]) -> Response | InferenceResponse:
    """JSON, or a JSON header followed by the binary outputs when any were asked for as binary."""
    if not binary_names:
        return response
    chunks = []
    for tensor in response.outputs:
        if tensor.name in binary_names:
            raw = to_binary(tensor)
            tensor.data = None
            tensor.parameters = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = response.model_dump_json(exclude_none=True).encode()
    return Response(
        content=header + b"".join(chunks), media_type=BINARY_MEDIA_TYPE, headers={HEADER_LENGTH: str(len(header))}
    )


# --- OpenAPI ------------------------------------------------------------------------------------------


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, for an openapi_extra request body."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


INFER_ROUTE: dict[str, Any] = {
    "response_model": InferenceResponse,
    "response_model_exclude_none": True,
    "responses": {
        200: {"content": {BINARY_MEDIA_TYPE: {}}, "description": "JSON, or JSON header + binary tensors."},
        **ERROR_RESPONSES,
    },
    "openapi_extra": {
        "requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(InferenceRequest)}}}
    },
}

# --- Routes ----------------------------------------------------------------------------------------------

router = APIRouter(prefix="/v2", tags=["v2"], route_class=V2Route)


@router.get("", response_model=ServerMetadata)
async def read_server_metadata() -> Any:
    """Server name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", response_model=ServerLive)
async def read_server_live() -> Any:
    """200 while the process serves HTTP."""
    return {"live": True}


@router.get("/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
async def read_server_ready(predictor: PredictorDep) -> Any:
    """200 once the model is loaded and warmed up; 503 before and while draining."""
    return {"ready": True} if serving(predictor) else JSONResponse({"ready": False}, status_code=503)


def model_metadata(predictor: Predictor) -> dict[str, Any]:
    manifest = predictor.manifest
    targets = manifest.target_names
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": PLATFORMS.get(predictor.backend_name, predictor.backend_name),
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, N_FEATURES],
                "parameters": {"feature_names": list(FEATURE_NAMES), "datatypes": list(INPUT_DTYPES)},
            }
        ],
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [-1, len(targets)] if dtype == "FP64" else [-1]}
            for name, dtype in OUTPUT_DTYPES.items()
        ],
    }


def serving(predictor: Predictor) -> bool:
    """Ready as /health counts it: loaded, and not draining after SIGTERM."""
    return predictor.ready and not is_draining()


def model_ready(predictor: Predictor, name: str, version: str | None) -> Any:
    find_model(predictor, name, version)
    ready = serving(predictor)
    body = {"name": name, "ready": ready}
    return body if ready else JSONResponse(body, status_code=503)


@router.get("/models/{model_name}", response_model=ModelMetadata, response_model_exclude_none=True, responses=MODEL_ERRORS)
async def read_model_metadata(model_name: str, predictor: PredictorDep) -> Any:
    """The model's name, versions, platform, and input and output tensors."""
    find_model(predictor, model_name, None)
    return model_metadata(predictor)


@router.get("/models/{model_name}/versions/{model_version}", response_model=ModelMetadata, response_model_exclude_none=True, responses=MODEL_ERRORS)
async def read_model_version_metadata(model_name: str, model_version: str, predictor: PredictorDep) -> Any:
    """Metadata of one version of the model."""
    find_model(predictor, model_name, model_version)
    return model_metadata(predictor)


@router.get("/models/{model_name}/ready", response_model=ModelReady, responses=MODEL_ERRORS)
async def read_model_ready(model_name: str, predictor: PredictorDep) -> Any:
    """200 when the model can answer inferences."""
    return model_ready(predictor, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", response_model=ModelReady, responses=MODEL_ERRORS)
async def read_model_version_ready(model_name: str, model_version: str, predictor: PredictorDep) -> Any:
    """200 when this version of the model can answer inferences."""
    return model_ready(predictor, model_name, model_version)


async def infer(request: Request, predictor: Predictor, settings: Settings, name: str, version: str | None) -> Any:
    """Check the request, predict every row in one call, build the asked-for outputs."""
    find_model(predictor, name, version)
    if not predictor.ready:
        raise ModelNotReadyError("The model is not loaded yet; retry shortly.")
    parsed, binary = parse_inference_request(await request.body(), request.headers.get(HEADER_LENGTH))
    outputs = requested_outputs(parsed)
    features = input_features(parsed, binary, settings.max_batch_size)
    predictions = predict_observed(predictor, features)
    targets = predictor.manifest.target_names
    response = InferenceResponse(
        model_name=name,
        model_version=predictor.version,
        id=parsed.id,
        outputs=[output_tensor(output, predictions, targets) for output, _ in outputs],
    )
    return encode_response(response, {output for output, as_binary in outputs if as_binary})


@router.post("/models/{model_name}/infer", **INFER_ROUTE)
async def create_inference(model_name: str, request: Request, predictor: PredictorDep, settings: SettingsDep) -> Any:
    """Predict a [N, 4] FP32/FP64 tensor of measurements (JSON, or binary after an Inference-Header-Content-Length header)."""
    return await infer(request, predictor, settings, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", **INFER_ROUTE)
async def create_versioned_inference(
    model_name: str, model_version: str, request: Request, predictor: PredictorDep, settings: SettingsDep
) -> Any:
    """Inference against one version of the model."""
    return await infer(request, predictor, settings, model_name, model_version)
