"""The V2 gRPC codecs (iris_service/protocols/grpc_v2.py): the same rules as REST V2's.

Typed and raw contents decode to the flowers sent (FP32 as what an FP32 tensor holds); every
malformed request is a V2Error with the status REST answers, mapped to its gRPC code; answers
are raw when the input was raw and typed otherwise, and carry the same numbers as REST's JSON
answer for the same request. The generated code matches a fresh generation from the proto.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from iris_service.names import MODEL_NAME
from iris_service.protocols import grpc_v2, v2
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.settings import settings
from tools import grpc_code
from tools.grpc_requests import infer_request

FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 4.2, 1.5]])
PROBABILITIES = np.array([[0.9, 0.08, 0.02], [0.01, 0.1, 0.89], [0.2, 0.7, 0.1]])


def _request(
    flowers: np.ndarray = FLOWERS, datatype: str = "FP64", raw: bool = False
) -> pb.ModelInferRequest:
    return infer_request(flowers, datatype, raw, id="r-1")


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_typed_and_raw_contents_decode_to_the_flowers_sent(raw: bool, datatype: str) -> None:
    parsed = grpc_v2.parse_infer_request(_request(datatype=datatype, raw=raw))
    expected = FLOWERS if datatype == "FP64" else FLOWERS.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(parsed.rows, expected)
    assert parsed.rows.dtype == np.float64
    assert parsed.id == "r-1" and not parsed.explain
    assert [o.name for o in parsed.outputs] == [v2.PREDICT, v2.PREDICT_PROBA]
    assert all(o.binary == raw for o in parsed.outputs)


def _broken(change: str) -> pb.ModelInferRequest:
    request = _request()
    tensor = request.inputs[0]
    if change == "no input":
        del request.inputs[:]
    elif change == "two inputs":
        request.inputs.append(tensor)
    elif change == "three columns":
        tensor.shape[:] = [4, 3]
    elif change == "too many rows":
        tensor.shape[:] = [settings.max_batch_flowers + 1, 4]
    elif change == "INT64 datatype":
        tensor.datatype = "INT64"
    elif change == "values short":
        del tensor.contents.fp64_contents[-1]
    elif change == "fp32 values in an FP64 input":
        tensor.contents.fp32_contents.append(1.0)
    elif change == "NaN":
        tensor.contents.fp64_contents[1] = float("nan")
    elif change == "negative":
        tensor.contents.fp64_contents[0] = -1.0
    elif change == "raw and typed":
        request.raw_input_contents.append(FLOWERS.tobytes())
    elif change == "raw size":
        request = _request(raw=True)
        request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    elif change == "two raw entries":
        request = _request(raw=True)
        request.raw_input_contents.append(b"")
    elif change == "unknown output":
        request.outputs.add(name="logits")
    elif change == "output twice":
        request.outputs.add(name=v2.PREDICT)
        request.outputs.add(name=v2.PREDICT)
    elif change == "explain as a string":
        request.parameters["explain"].string_param = "yes"
    return request


BROKEN = [
    "no input",
    "two inputs",
    "three columns",
    "too many rows",
    "INT64 datatype",
    "values short",
    "fp32 values in an FP64 input",
    "NaN",
    "negative",
    "raw and typed",
    "raw size",
    "two raw entries",
    "unknown output",
    "output twice",
    "explain as a string",
]


@pytest.mark.parametrize("change", BROKEN)
def test_malformed_requests_are_invalid_arguments(change: str) -> None:
    with pytest.raises(v2.V2Error) as refused:
        grpc_v2.parse_infer_request(_broken(change))
    assert grpc_v2.status_code(refused.value.status) == grpc.StatusCode.INVALID_ARGUMENT


def test_rest_statuses_map_to_grpc_codes() -> None:
    assert grpc_v2.status_code(404) == grpc.StatusCode.NOT_FOUND
    assert grpc_v2.status_code(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_v2.status_code(503) == grpc.StatusCode.UNAVAILABLE
    assert grpc_v2.status_code(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_v2.status_code(500) == grpc.StatusCode.INTERNAL


def test_outputs_parameters_and_explain_are_read() -> None:
    request = _request()
    request.outputs.add(name=v2.PREDICT_PROBA)
    request.parameters["explain"].bool_param = True
    parsed = grpc_v2.parse_infer_request(request)
    assert [o.name for o in parsed.outputs] == [v2.PREDICT_PROBA] and parsed.explain
    request.outputs[0].parameters["binary_data"].bool_param = True
    assert grpc_v2.parse_infer_request(request).outputs[0].binary  # typed in, raw asked


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_answers_carry_rest_v2s_numbers(raw: bool) -> None:
    parsed = grpc_v2.parse_infer_request(_request(raw=raw))
    answer = grpc_v2.encode_infer_response(parsed, MODEL_NAME, "v1", PROBABILITIES)
    assert answer.model_name == MODEL_NAME and answer.model_version == "v1"
    assert answer.id == "r-1"
    assert len(answer.raw_output_contents) == (2 if raw else 0)
    rest_request = v2.InferRequest(
        parsed.rows, tuple(v2.RequestedOutput(o.name, False) for o in parsed.outputs), "r-1"
    )
    body, _ = v2.encode_infer_response(rest_request, MODEL_NAME, "v1", PROBABILITIES)
    rest = {o["name"]: o for o in json.loads(body)["outputs"]}
    for position, output in enumerate(answer.outputs):
        assert list(output.shape) == rest[output.name]["shape"]
        assert output.datatype == rest[output.name]["datatype"]
        if raw:
            dtype = "<i8" if output.datatype == "INT64" else "<f8"
            values = np.frombuffer(answer.raw_output_contents[position], dtype).tolist()
            assert not output.HasField("contents")
        elif output.datatype == "INT64":
            values = list(output.contents.int64_contents)
        else:
            values = list(output.contents.fp64_contents)
        assert values == rest[output.name]["data"]


def test_explanation_outputs_follow_the_requested_ones() -> None:
    parsed = grpc_v2.parse_infer_request(_request())
    contributions = np.zeros((3, 3, 4), dtype="<f4")
    extra = {
        "explanation": ("FP32", contributions),
        "base_value": ("FP32", np.array([0.3, 0.3, 0.4], dtype="<f4")),
    }
    answer = grpc_v2.encode_infer_response(parsed, MODEL_NAME, "v1", PROBABILITIES, extra)
    names = [o.name for o in answer.outputs]
    assert names == [v2.PREDICT, v2.PREDICT_PROBA, "explanation", "base_value"]
    assert list(answer.outputs[2].shape) == [3, 3, 4]
    assert len(answer.outputs[2].contents.fp32_contents) == 36


def test_model_metadata_matches_rest() -> None:
    metadata = grpc_v2.model_metadata(MODEL_NAME, ["a", "b"])
    rest = v2.model_metadata(MODEL_NAME, ["a", "b"])
    assert list(metadata.versions) == rest["versions"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["outputs"]
    ]


def test_the_generated_code_matches_the_proto() -> None:
    assert grpc_code.main(["--check"]) == 0
