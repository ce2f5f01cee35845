"""The Open Inference Protocol V2 over gRPC against a real `bentoml serve`, API key on.

A client made from the proto's generated stubs (grpcio) and Triton's own client
(`tritonclient.grpc`; its [grpc] extra wants protobuf<7, so grpcio is pinned beside the base
package, as for HTTP) check: liveness, readiness, server and model metadata;
inference with typed contents and with raw contents (FP64 and FP32), whose probabilities
must equal REST V2's from the same server; an explanation equal to REST's; refusals with the
right gRPC status codes; the standard health service (open, like the HTTP probes) and
reflection (behind the key); the call in the request log and the metrics; and a second
server started on the same gRPC port exits at once with status 1.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from iris_service.names import MODEL_NAME
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2 as pb
from iris_service.protocols.grpc_generated import grpc_predict_v2_pb2_grpc as pb_grpc
from iris_service.settings import settings
from tools.bench.payloads import rows as iris_rows
from tools.grpc_requests import infer_request
from tools.local_server import HOST, LocalServer, ProjectState, bento_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

KEY = "grpc-test-key-0123456789abcdef"
AUTH = (("authorization", f"Bearer {KEY}"),)
FLOWERS = np.array(iris_rows(60), dtype=np.float64)
INFER = "/inference.GRPCInferenceService/ModelInfer"
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def keyed_server(trained_state: ProjectState, server_logs: Path) -> Iterator[LocalServer]:
    with bento_server(trained_state, server_logs, IRIS_API_KEY=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def channel(keyed_server: LocalServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{HOST}:{keyed_server.grpc_port()}") as opened:
        grpc.channel_ready_future(opened).result(timeout=TIMEOUT_S)
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def _outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The answer's tensors by name, raw or typed."""
    dtypes = {"INT64": "<i8", "FP64": "<f8", "FP32": "<f4"}
    fields = {"INT64": "int64_contents", "FP64": "fp64_contents", "FP32": "fp32_contents"}
    found = {}
    for position, output in enumerate(response.outputs):
        if response.raw_output_contents:
            values = np.frombuffer(response.raw_output_contents[position], dtypes[output.datatype])
        else:
            values = np.array(getattr(output.contents, fields[output.datatype]))
        found[output.name] = values.reshape(list(output.shape))
    return found


def _rest_v2(server: LocalServer, flowers: np.ndarray, explain: bool = False) -> dict:
    body: dict = {
        "inputs": [
            {"name": "input-0", "shape": list(flowers.shape), "datatype": "FP64",
             "data": flowers.ravel().tolist()}
        ]
    }  # fmt: skip
    if explain:
        body["parameters"] = {"explain": True}
    answer = requests.post(
        f"{server.url}/v2/models/{MODEL_NAME}/infer",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()  # type: ignore[operator]
    return refused.value.code()


def test_live_ready_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), metadata=AUTH, timeout=TIMEOUT_S).live
    assert stub.ServerReady(pb.ServerReadyRequest(), metadata=AUTH, timeout=TIMEOUT_S).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=AUTH, timeout=TIMEOUT_S)
    assert server.name == "IrisClassifier" and server.version
    model = stub.ModelMetadata(
        pb.ModelMetadataRequest(name=MODEL_NAME), metadata=AUTH, timeout=TIMEOUT_S
    )
    assert model.name == MODEL_NAME and len(model.versions) >= 1
    assert list(model.inputs[0].shape) == [-1, 4] and model.inputs[0].datatype == "FP64"
    assert {o.name: o.datatype for o in model.outputs} == {
        "predict": "INT64",
        "predict_proba": "FP64",
    }
    version = model.versions[0]
    ready = stub.ModelReady(
        pb.ModelReadyRequest(name=MODEL_NAME, version=version), metadata=AUTH, timeout=TIMEOUT_S
    )
    assert ready.ready
    unknown = pb.ModelReadyRequest(name=MODEL_NAME, version="no-such-version")
    assert (
        _code(lambda: stub.ModelReady(unknown, metadata=AUTH, timeout=TIMEOUT_S))
        == grpc.StatusCode.NOT_FOUND
    )


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_gives_rest_v2_probabilities(
    stub: pb_grpc.GRPCInferenceServiceStub, keyed_server: LocalServer, raw: bool, datatype: str
) -> None:
    flowers = FLOWERS if datatype == "FP64" else FLOWERS.astype(np.float32).astype(np.float64)
    rest = _rest_v2(keyed_server, flowers)
    response, call = stub.ModelInfer.with_call(
        infer_request(flowers, datatype, raw, id="grpc-7"), metadata=AUTH, timeout=TIMEOUT_S
    )
    assert response.model_name == MODEL_NAME and response.id == "grpc-7"
    assert bool(response.raw_output_contents) == raw  # raw in, raw out
    outputs = _outputs(response)
    np.testing.assert_allclose(outputs["predict_proba"], rest["predict_proba"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(outputs["predict"], rest["predict"])
    assert dict(call.trailing_metadata())["x-server-request-id"]


def test_explain_parameter_answers_like_rest(
    stub: pb_grpc.GRPCInferenceServiceStub, keyed_server: LocalServer
) -> None:
    flowers = FLOWERS[:5]
    rest = _rest_v2(keyed_server, flowers, explain=True)
    request = infer_request(flowers)
    request.parameters["explain"].bool_param = True
    outputs = _outputs(stub.ModelInfer(request, metadata=AUTH, timeout=TIMEOUT_S))
    assert outputs["explanation"].shape == (5, 3, 4)
    np.testing.assert_allclose(outputs["explanation"], rest["explanation"], atol=1e-7)
    np.testing.assert_allclose(outputs["base_value"], rest["base_value"], atol=1e-7)


def _refusal_cases() -> dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode]]:
    one = FLOWERS[:1]
    wrong_shape = infer_request(one)
    wrong_shape.inputs[0].shape[:] = [1, 3]
    short_raw = infer_request(one, raw=True)
    short_raw.raw_input_contents[0] = short_raw.raw_input_contents[0][:-8]
    explain_many = infer_request(np.repeat(one, settings.max_explain_flowers + 1, axis=0), raw=True)
    explain_many.parameters["explain"].bool_param = True
    unknown_model = infer_request(one)
    unknown_model.model_name = "no-such-model"
    not_a_number = infer_request(np.array([[5.1, np.nan, 1.4, 0.2]]))
    too_many = infer_request(np.repeat(one, settings.max_batch_flowers + 1, axis=0), raw=True)
    too_large = infer_request(np.repeat(one, 20_000, axis=0), raw=True)  # 640 KB > 256 KiB
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "wrong shape": (wrong_shape, invalid),
        "raw size": (short_raw, invalid),
        "NaN": (not_a_number, invalid),
        "rows over the limit": (too_many, invalid),
        "explain over its limit": (explain_many, invalid),
        "unknown model": (unknown_model, grpc.StatusCode.NOT_FOUND),
        "message over the size limit": (too_large, grpc.StatusCode.RESOURCE_EXHAUSTED),
    }


@pytest.mark.parametrize("case", list(_refusal_cases()))
def test_bad_requests_get_their_status_code(
    stub: pb_grpc.GRPCInferenceServiceStub, case: str
) -> None:
    request, expected = _refusal_cases()[case]
    assert _code(lambda: stub.ModelInfer(request, metadata=AUTH, timeout=TIMEOUT_S)) == expected


def test_the_api_key_guards_all_but_health(
    stub: pb_grpc.GRPCInferenceServiceStub, channel: grpc.Channel
) -> None:
    request = infer_request(FLOWERS[:1])
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: stub.ModelInfer(request, timeout=TIMEOUT_S)) == unauthenticated
    wrong = (("authorization", "Bearer not-the-key-0123456789"),)
    assert _code(lambda: stub.ModelInfer(request, metadata=wrong, timeout=TIMEOUT_S)) == (
        unauthenticated
    )
    assert _code(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT_S)) == (
        unauthenticated
    )
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with pytest.raises(grpc.RpcError) as refused:
        list(reflection.ServerReflectionInfo(iter(ask), timeout=TIMEOUT_S))
    assert refused.value.code() == unauthenticated
    (answer,) = reflection.ServerReflectionInfo(iter(ask), metadata=AUTH, timeout=TIMEOUT_S)
    names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def _log_lines_with(server: LocalServer, text: str, timeout_s: float = 10.0) -> list[dict]:
    """The server's JSON log lines containing `text`, once there is one (a request's line is
    written by the request log's thread after the answer), or none after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [json.loads(line) for line in server.log().splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_calls_are_logged_and_measured_with_their_protocol(
    stub: pb_grpc.GRPCInferenceServiceStub, keyed_server: LocalServer
) -> None:
    metadata = (*AUTH, ("x-request-id", "grpc-probe-1"))
    _, call = stub.ModelInfer.with_call(
        infer_request(FLOWERS[:1]), metadata=metadata, timeout=TIMEOUT_S
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-probe-1"
    # A refusal of its own (this test must not rely on the refusal tests having run before).
    not_a_number = infer_request(np.array([[5.1, np.nan, 1.4, 0.2]]))
    refused = _code(lambda: stub.ModelInfer(not_a_number, metadata=AUTH, timeout=TIMEOUT_S))
    assert refused == grpc.StatusCode.INVALID_ARGUMENT
    metrics = requests.get(f"{keyed_server.url}/metrics", timeout=TIMEOUT_S).text
    assert f'iris_request_latency_ms_count{{endpoint="{INFER}",status="OK"}}' in metrics
    assert f'iris_errors_total{{endpoint="{INFER}",error="invalid_argument"}}' in metrics
    lines = _log_lines_with(keyed_server, "grpc-probe-1")
    assert lines and lines[-1]["protocol"] == "grpc" and lines[-1]["endpoint"] == INFER
    assert lines[-1]["status"] == 0


def test_a_second_server_on_the_same_grpc_port_fails_loudly(
    trained_state: ProjectState, keyed_server: LocalServer, tmp_path: Path
) -> None:
    port = keyed_server.grpc_port()
    with bento_server(trained_state, tmp_path, wait=False, IRIS_GRPC_PORT=str(port)) as second:
        try:
            status = second.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second server kept running:\n{second.log_tail()}")
        assert status == 1
        assert f"the gRPC port {HOST}:{port} is taken" in second.log()
    assert keyed_server.process.poll() is None  # the first one is untouched


def test_an_answered_inference_is_a_prediction_record(
    stub: pb_grpc.GRPCInferenceServiceStub, keyed_server: LocalServer
) -> None:
    metadata = (*AUTH, ("x-request-id", "grpc-record-1"))
    answer = stub.ModelInfer(
        infer_request(FLOWERS[:2], raw=True), metadata=metadata, timeout=TIMEOUT_S
    )
    assert keyed_server.bentoml_home is not None
    store = keyed_server.bentoml_home / "records" / "records.db"
    deadline, found = time.monotonic() + 15, []
    while not found and time.monotonic() < deadline:
        time.sleep(0.2)
        if store.exists():
            with sqlite3.connect(store) as db:
                found = db.execute(
                    "SELECT endpoint, protocol, model_tag, api_key_id FROM predictions "
                    "WHERE client_request_id = 'grpc-record-1'"
                ).fetchall()
    assert found, "no record within 15 s"
    ((endpoint, protocol, model_tag, api_key_id),) = found
    assert (endpoint, protocol) == (INFER, "grpc")
    assert model_tag.endswith(f":{answer.model_version}") and api_key_id


TRITON_SCRIPT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton

address, key, model, flowers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
headers = {"authorization": f"Bearer {key}"}
client = triton.InferenceServerClient(address)
assert client.is_server_live(headers=headers) and client.is_server_ready(headers=headers)
assert client.is_model_ready(model, headers=headers)
assert client.get_model_metadata(model, headers=headers, as_json=True)["name"] == model
tensor = triton.InferInput("input-0", [len(flowers), 4], "FP64")
tensor.set_data_from_numpy(np.array(flowers, dtype=np.float64))
result = client.infer(model, [tensor], headers=headers, client_timeout=10)
print(json.dumps({"predict_proba": result.as_numpy("predict_proba").tolist(),
                  "predict": result.as_numpy("predict").tolist()}))
client.close()
"""


def test_tritons_grpc_client_infers_like_rest(keyed_server: LocalServer) -> None:
    """Triton's own gRPC client (the pinned tritonclient; its [grpc] extra wants protobuf<7,
    so grpcio is pinned beside it): health, metadata and a raw inference. In a process of
    its own: Triton's generated messages and ours share the package `inference`, and one
    process cannot register both."""
    address = f"{HOST}:{keyed_server.grpc_port()}"
    result = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, address, KEY, MODEL_NAME,
         json.dumps(FLOWERS.tolist())],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    rest = _rest_v2(keyed_server, FLOWERS)
    np.testing.assert_allclose(answer["predict_proba"], rest["predict_proba"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(answer["predict"], rest["predict"])
