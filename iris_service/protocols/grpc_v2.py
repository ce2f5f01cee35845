"""Open Inference Protocol V2 over gRPC: ModelInferRequest in, ModelInferResponse out.

The gRPC twin of `v2.py` (REST): the same rules, from the same functions. One input tensor of
shape [N, 4], FP32 or FP64, given either as typed contents (`fp32_contents` /
`fp64_contents`) or as raw little-endian bytes in `raw_input_contents` (one entry, what
`tritonclient.grpc` sends); the shape, datatype and size are checked (v2.checked_shape,
v2.input_dtype) before the values are read, and the flowers by flower_arrays, as in REST.
`outputs` and `parameters.explain` are read by v2.requested_outputs and
v2_explain.wants_explanation.

The answer's tensors come from v2.output_tensors. They are raw (`raw_output_contents`, as
Triton answers) when the request's input was raw, or when it asks for binary outputs
(`parameters.binary_data_output`, or `binary_data` on an output), and typed contents
otherwise: a response carries one form or the other, never both (the proto's rule).

Every refusal is a v2.V2Error; `status_code` maps its HTTP status to the gRPC status code.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from iris_service.inference.flower_arrays import InvalidFlowers, checked_flowers
from iris_service.protocols import v2
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.protocols.v2_explain import ExplainFlagError, wants_explanation

# The HTTP statuses of the REST answers and their gRPC codes (grpc's own mapping where one
# exists; admission's 429 is RESOURCE_EXHAUSTED, as a quota is).
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents"}


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC code of a refusal the REST transport answers with `http_status`."""
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def parameter_values(parameters: Any) -> dict[str, Any]:
    """A map<string, InferParameter> as plain values (bool, int or str; None when unset)."""
    values: dict[str, Any] = {}
    for name, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[name] = None if choice is None else getattr(parameter, choice)
    return values


def parse_infer_request(request: pb.ModelInferRequest) -> v2.InferRequest:
    """The flowers and the wanted outputs of one ModelInferRequest; V2Error when refused."""
    if len(request.inputs) != 1:
        raise v2.V2Error("'inputs' must hold exactly one tensor")
    parameters = parameter_values(request.parameters)
    raw = len(request.raw_input_contents) > 0
    binary_default = raw or parameters.get("binary_data_output") is True
    try:
        rows = checked_flowers(_tensor(request.inputs[0], request.raw_input_contents))
    except InvalidFlowers as exc:
        raise v2.V2Error(str(exc)) from None
    outputs = v2.requested_outputs(
        [
            {"name": output.name, "parameters": parameter_values(output.parameters)}
            for output in request.outputs
        ]
        or None,
        binary_default,
    )
    binary = any(output.binary for output in outputs)
    try:
        explain = wants_explanation(parameters)
    except ExplainFlagError as exc:
        raise v2.V2Error(str(exc)) from None
    if binary:  # one form for the whole answer
        outputs = tuple(v2.RequestedOutput(output.name, True) for output in outputs)
    return v2.InferRequest(rows, outputs, request.id or None, explain, binary_default or binary)


def _tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw: Any) -> np.ndarray:
    """The input as an array: shape and datatype checked first, then its values counted."""
    shape = v2.checked_shape(list(tensor.shape))
    dtype = v2.input_dtype(tensor.datatype)
    count = shape[0] * shape[1]
    if raw:
        if tensor.HasField("contents"):
            raise v2.V2Error("an input has either contents or raw_input_contents, not both")
        if len(raw) != 1:
            raise v2.V2Error(f"raw_input_contents must hold 1 entry, got {len(raw)}")
        expected = count * dtype.itemsize
        if len(raw[0]) != expected:
            raise v2.V2Error(
                f"the raw input has {len(raw[0])} bytes, shape {shape} of {tensor.datatype} "
                f"needs {expected}"
            )
        return np.frombuffer(raw[0], dtype=dtype).reshape(shape)
    field = _CONTENTS[tensor.datatype]
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise v2.V2Error(f"'{field}' has {len(values)} values, the shape {shape} needs {count}")
    # e.g. fp32_contents in an input declared FP64: refused, never converted silently
    others = [d.name for d, _ in tensor.contents.ListFields() if d.name != field]
    if others:
        raise v2.V2Error(f"a {tensor.datatype} input takes '{field}' only, got {others[0]!r}")
    return np.array(values, dtype=dtype).reshape(shape)


def encode_infer_response(
    request: v2.InferRequest,
    model_name: str,
    model_version: str,
    probabilities: np.ndarray,
    extra: dict[str, tuple[str, np.ndarray]] | None = None,
) -> pb.ModelInferResponse:
    """The ModelInferResponse of an answer: raw or typed outputs, as `request` asks."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request.id or ""
    )
    for name, binary, datatype, values in v2.output_tensors(request, probabilities, extra):
        output = response.outputs.add(name=name, datatype=datatype, shape=values.shape)
        if binary:
            response.raw_output_contents.append(values.tobytes())
        else:
            getattr(output.contents, _CONTENTS[datatype]).extend(values.ravel().tolist())
    return response


def model_metadata(model_name: str, versions: list[str]) -> pb.ModelMetadataResponse:
    """ModelMetadata: the same description as REST's GET /v2/models/<name>."""
    described = v2.model_metadata(model_name, versions)
    return pb.ModelMetadataResponse(
        name=described["name"],
        versions=described["versions"],
        platform=described["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["outputs"]],
    )
