"""Open Inference Protocol V2 (KServe / Triton REST): inference requests in, answers out.

Request: a JSON object with one input tensor of shape [N, 4] (FP32 or FP64), its `data` flat
(row-major) or nested rows, or, with the binary tensor data extension, as N * 4 little-endian
floats after the JSON header (`Inference-Header-Content-Length` = the header's length,
`parameters.binary_data_size` on the input). `outputs` asks for `predict` (INT64 class ids,
shape [N]) and/or `predict_proba` (FP64 [N, 3]); with none asked, both. An output with
`parameters.binary_data` (or the request with `parameters.binary_data_output`) is answered
as raw bytes after the JSON header, Triton's client's default.

Everything is checked before anything large is allocated: the declared shape against
MAX_BATCH_FLOWERS, the binary sizes against the declared shape and the body's real length.
Every refusal is a V2Error (400, the protocol's {"error": text}), including bodies that are
not UTF-8 JSON (UTF-16 or UTF-32 with or without a byte order mark, a UTF-8 BOM, Latin-1;
Python's json would guess and accept some of them) and JSON nested past the parser's depth:
only well-formed UTF-8 JSON is answered, and so only it reaches the prediction log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from iris_service.errors import BadRequest
from iris_service.inference.flower_arrays import InvalidFlowers, check_count, checked_flowers
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.protocols.json_bodies import UnreadableJson, strict_json
from iris_service.protocols.v2_explain import ExplainFlagError, wants_explanation

HEADER_LENGTH = "inference-header-content-length"
INPUT_DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUT_NAMES = (PREDICT, PREDICT_PROBA)
_NUMBERS = frozenset({int, float})


class V2Error(BadRequest, ValueError):
    """A request the protocol refuses; `status` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray  # float64 [N, 4], checked by flower_arrays
    outputs: tuple[RequestedOutput, ...]
    id: str | None
    explain: bool = False  # parameters.explain (v2_explain.py)
    binary_default: bool = False  # parameters.binary_data_output


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The flowers and the wanted outputs of one inference request body."""
    json_part, binary = _split(body, header_length)
    request = _json_document(json_part)
    if not isinstance(request, dict):
        raise V2Error("the request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise V2Error("'inputs' must be a list of exactly one tensor")
    parameters = _object(request.get("parameters"), "parameters")
    binary_default = parameters.get("binary_data_output") is True
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("'id' must be a string")
    try:
        rows = checked_flowers(_tensor(inputs[0], binary))
    except InvalidFlowers as exc:
        raise V2Error(str(exc)) from None
    outputs = requested_outputs(request.get("outputs"), binary_default)
    try:
        explain = wants_explanation(parameters)
    except ExplainFlagError as exc:
        raise V2Error(str(exc)) from None
    return InferRequest(rows, outputs, request_id, explain, binary_default)


def _json_document(raw: bytes) -> Any:
    """The JSON document of `raw` (strict UTF-8 JSON, iris_service/protocols/json_bodies.py);
    V2Error otherwise."""
    try:
        return strict_json(raw)
    except UnreadableJson as exc:
        raise V2Error(f"the request {exc}") from None


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise V2Error("Inference-Header-Content-Length must be an integer") from None
    if not 0 < length <= len(body):
        raise V2Error(
            f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes"
        )
    return body[:length], body[length:]


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"'{name}' must be an object")
    return value


def checked_shape(shape: Any) -> list[int]:
    """The input's declared shape when it is [N, features] with N within the limit (checked
    before anything of that size is allocated); V2Error otherwise. Shared with gRPC."""
    features = len(FEATURE_NAMES)
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(size) is int for size in shape)
        or shape[1] != features
    ):
        raise V2Error(f"the input's shape must be [N, {features}], got {shape!r}"[:200])
    try:
        check_count(shape[0])
    except InvalidFlowers as exc:
        raise V2Error(str(exc)) from None
    return shape


def input_dtype(datatype: Any) -> np.dtype:
    """The little-endian dtype of an input datatype (FP32, FP64); V2Error for another."""
    if not isinstance(datatype, str) or datatype not in INPUT_DATATYPES:  # a list: unhashable
        raise V2Error(f"the input's datatype must be FP32 or FP64, got {datatype!r}"[:200])
    return INPUT_DATATYPES[datatype]


def _tensor(tensor: dict[str, Any], binary: bytes) -> np.ndarray:
    """The input tensor as an array, its declared shape and sizes checked first."""
    shape = checked_shape(tensor.get("shape"))
    count = shape[0] * shape[1]
    dtype = input_dtype(tensor.get("datatype"))
    binary_size = _object(tensor.get("parameters"), "parameters").get("binary_data_size")
    if binary_size is not None:
        return _binary_tensor(binary_size, binary, dtype, shape, "data" in tensor)
    if binary:
        raise V2Error("binary data was sent but the input declares no binary_data_size")
    return _json_tensor(tensor.get("data"), count, shape, dtype)


def _binary_tensor(
    size: Any, binary: bytes, dtype: np.dtype, shape: list[int], has_data: bool
) -> np.ndarray:
    expected = shape[0] * shape[1] * dtype.itemsize
    if has_data:
        raise V2Error("an input has either 'data' or binary_data_size, not both")
    if type(size) is not int or size != expected:
        raise V2Error(f"binary_data_size must be {expected} for shape {shape}, got {size!r}")
    if len(binary) != expected:
        raise V2Error(f"the binary data has {len(binary)} bytes, the input declares {expected}")
    return np.frombuffer(binary, dtype=dtype).reshape(shape)


def _json_tensor(data: Any, count: int, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if not isinstance(data, list):
        raise V2Error("the input needs 'data' (a list of numbers) or binary data")
    if data and isinstance(data[0], list):  # nested rows
        if len(data) != shape[0] or not all(
            isinstance(row, list) and len(row) == shape[1] for row in data
        ):
            raise V2Error(f"'data' does not hold {shape[0]} rows of {shape[1]} numbers")
        values: Any = chain.from_iterable(data)
    else:
        if len(data) != count:
            raise V2Error(f"'data' has {len(data)} values, the shape {shape} needs {count}")
        values = data
    if not set(map(type, values)) <= _NUMBERS:
        raise V2Error("'data' must hold numbers only")
    try:
        array = np.array(data, dtype=np.float64).reshape(shape)
    except (OverflowError, ValueError):
        raise V2Error("'data' holds a number too large for a floating-point value") from None
    if dtype.itemsize == 4:
        array = array.astype(np.float32).astype(np.float64)  # what an FP32 tensor holds
    return array


def requested_outputs(outputs: Any, binary_default: bool) -> tuple[RequestedOutput, ...]:
    """The outputs asked for (objects with a `name` and optional `parameters.binary_data`),
    each at most once; with none asked, all of them. Shared with gRPC."""
    if outputs is None:
        return tuple(RequestedOutput(name, binary_default) for name in OUTPUT_NAMES)
    if not isinstance(outputs, list) or not outputs:
        raise V2Error("'outputs' must be a non-empty list")
    requested = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUT_NAMES:
            raise V2Error(f"unknown output {name!r}; this model has {', '.join(OUTPUT_NAMES)}")
        if any(earlier.name == name for earlier in requested):
            raise V2Error(f"output {name!r} is requested more than once")
        binary = _object(output.get("parameters"), "parameters").get("binary_data")
        requested.append(RequestedOutput(name, binary_default if binary is None else binary))
    return tuple(requested)


def encode_infer_response(
    request: InferRequest,
    model_name: str,
    model_version: str,
    probabilities: np.ndarray,
    extra: dict[str, tuple[str, np.ndarray]] | None = None,
) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON header when binary outputs follow it;
    `extra` outputs (an explanation's, v2_explain.py) follow the requested ones."""
    answer: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        answer["id"] = request.id
    outputs, blobs = [], []
    for name, binary, datatype, values in output_tensors(request, probabilities, extra):
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(values.shape),
        }
        if binary:
            blob = values.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values.ravel().tolist()
        outputs.append(tensor)
    answer["outputs"] = outputs
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def output_tensors(
    request: InferRequest,
    probabilities: np.ndarray,
    extra: dict[str, tuple[str, np.ndarray]] | None = None,
) -> list[tuple[str, bool, str, np.ndarray]]:
    """The answer's tensors in order, as (name, binary, datatype, little-endian values): the
    requested outputs, then the `extra` ones (binary as the request's default). Shared with
    gRPC, where `binary` means raw_output_contents."""
    tensors = {
        PREDICT: ("INT64", np.argmax(probabilities, axis=1).astype("<i8")),
        PREDICT_PROBA: ("FP64", np.ascontiguousarray(probabilities, dtype="<f8")),
    }
    wanted = [(output.name, output.binary) for output in request.outputs]
    if extra:
        tensors.update(extra)
        wanted.extend((name, request.binary_default) for name in extra)
    return [(name, binary, *tensors[name]) for name, binary in wanted]


def model_metadata(model_name: str, versions: list[str]) -> dict[str, Any]:
    """GET /v2/models/<name>[/versions/<v>]: what the model takes and answers."""
    return {
        "name": model_name,
        "versions": versions,
        "platform": "scikit-learn",
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [-1, len(FEATURE_NAMES)]},
        ],
        "outputs": [
            {"name": PREDICT, "datatype": "INT64", "shape": [-1]},
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(CLASS_NAMES)]},
        ],
    }
