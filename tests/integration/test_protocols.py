"""The service speaks the Open Inference Protocol V2 and MLflow scoring to real clients.

- Triton's own client (`tritonclient.http`) against a real `bentoml serve`: liveness,
  readiness, server and model metadata, inference of a numpy batch in JSON and in binary
  mode, compared with the stored model's own predict_proba.
- `mlflow models serve` of the same MLflow run, on 127.0.0.1: the same body, in every
  scoring format (and the run's own serving_input_example.json), must get the same status
  and the same predictions from both servers.
- Malformed tensors get 400 in the protocol's shape, never a 5xx.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from iris_service.names import FEATURE_NAMES, MODEL_NAME
from iris_service.settings import settings
from tools.bench.models import BenchModel, describe
from tools.bench.payloads import rows as iris_rows
from tools.local_server import HOST, LocalServer, ProjectState, free_port, start_server

pytestmark = pytest.mark.server

FLOWERS = np.array(iris_rows(60), dtype=np.float64)
PROBA_SCRIPT = """
import json, sys, bentoml
from iris_service.inference.model_loading import load_model
model = load_model(bentoml.models.get(sys.argv[1]))
print(json.dumps(model.predict_proba(json.loads(sys.argv[2])).tolist()))
"""


@pytest.fixture(scope="module")
def stored(trained_state: ProjectState) -> BenchModel:
    return describe(trained_state, f"{MODEL_NAME}", "svm")


@pytest.fixture(scope="module")
def expected_proba(trained_state: ProjectState, stored: BenchModel) -> np.ndarray:
    """predict_proba of FLOWERS by the stored model itself, outside the server."""
    result = subprocess.run(
        [sys.executable, "-c", PROBA_SCRIPT, stored.tag, json.dumps(FLOWERS.tolist())],
        env=trained_state.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return np.array(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def client(server: LocalServer) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(f"{HOST}:{server.port}", network_timeout=30)
    yield connection
    connection.close()


def test_triton_client_health_and_metadata(
    client: triton.InferenceServerClient, stored: BenchModel
) -> None:
    version = stored.tag.partition(":")[2]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    assert client.is_model_ready(MODEL_NAME, model_version=version)
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL_NAME, model_version="no-such-version")
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"] and server["name"]
    model = client.get_model_metadata(MODEL_NAME)
    assert model["name"] == MODEL_NAME and version in model["versions"]
    assert model["inputs"][0]["shape"] == [-1, len(FEATURE_NAMES)]
    assert {o["name"]: o["datatype"] for o in model["outputs"]} == {
        "predict": "INT64",
        "predict_proba": "FP64",
    }
    assert client.get_model_metadata(MODEL_NAME, model_version=version)["versions"] == [version]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata(MODEL_NAME, model_version="no-such-version")
    assert unknown.value.status() == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_triton_client_infers_like_the_model(
    client: triton.InferenceServerClient,
    stored: BenchModel,
    expected_proba: np.ndarray,
    binary: bool,
    datatype: str,
) -> None:
    tensor = triton.InferInput("input-0", list(FLOWERS.shape), datatype)
    values = FLOWERS if datatype == "FP64" else FLOWERS.astype(np.float32)
    tensor.set_data_from_numpy(values, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("predict_proba", binary_data=binary),
        triton.InferRequestedOutput("predict", binary_data=binary),
    ]
    version = stored.tag.partition(":")[2]
    result = client.infer(
        MODEL_NAME, [tensor], model_version=version, outputs=outputs, request_id="req-7"
    )
    answer = result.get_response()
    assert answer["model_name"] == MODEL_NAME and answer["model_version"] == version
    assert answer["id"] == "req-7"
    tolerance = 1e-12 if datatype == "FP64" else 1e-4  # FP32 inputs are rounded first
    np.testing.assert_allclose(result.as_numpy("predict_proba"), expected_proba, atol=tolerance)
    np.testing.assert_array_equal(result.as_numpy("predict"), expected_proba.argmax(axis=1))


def test_triton_client_default_outputs_are_both_in_binary(
    client: triton.InferenceServerClient, expected_proba: np.ndarray
) -> None:
    tensor = triton.InferInput("input-0", list(FLOWERS.shape), "FP64")
    tensor.set_data_from_numpy(FLOWERS)
    result = client.infer(MODEL_NAME, [tensor])
    np.testing.assert_allclose(result.as_numpy("predict_proba"), expected_proba, atol=1e-12)
    np.testing.assert_array_equal(result.as_numpy("predict"), expected_proba.argmax(axis=1))


def _v2_infer(server: LocalServer, body: bytes, headers: dict[str, str] | None = None):
    return requests.post(
        f"{server.url}/v2/models/{MODEL_NAME}/infer", data=body, headers=headers, timeout=30
    )


def _tensor(shape: list, datatype: str, data: object) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


ONE = [5.1, 3.5, 1.4, 0.2]
BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": 32},
            }
        ]
    }
).encode()
MALFORMED = {
    "wrong shape": (_tensor([1, 3], "FP64", ONE[:3]), {}),
    "wrong datatype": (_tensor([1, 4], "BYTES", ONE), {}),
    "data length not matching shape": (_tensor([2, 4], "FP64", ONE), {}),
    "NaN": (_tensor([1, 4], "FP64", ONE).replace(b"5.1", b"NaN"), {}),
    "huge declared shape": (_tensor([2**62, 4], "FP64", ONE), {}),
    "binary length that lies": (
        BINARY_HEADER + np.array(ONE).tobytes()[:-8],
        {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
    ),
    "header length beyond the body": (
        BINARY_HEADER + np.array(ONE).tobytes(),
        {"Inference-Header-Content-Length": "1000000000"},
    ),
    "not JSON": (b"\x00\xff garbage", {}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_tensors_get_400_in_the_protocol_shape(server: LocalServer, case: str) -> None:
    body, headers = MALFORMED[case]
    response = _v2_infer(server, body, headers)
    assert response.status_code == 400, response.text[:300]
    answer = response.json()
    assert set(answer) == {"error"} and answer["error"], answer
    assert "Traceback" not in response.text
    assert response.headers.get("x-request-id")


def test_v2_unknown_models_get_404_and_oversized_bodies_413(server: LocalServer) -> None:
    unknown = requests.post(
        f"{server.url}/v2/models/nope/infer", data=_tensor([1, 4], "FP64", ONE), timeout=10
    )
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    huge = _v2_infer(server, b" " * 400_000)
    assert huge.status_code == 413 and set(huge.json()) == {"error"}
    limit = settings.max_batch_flowers
    too_many = _tensor([limit + 1, 4], "FP64", ONE * (limit + 1))
    # Well under the body limit (IRIS_MAX_BODY_BYTES fits the largest batch): refused for its
    # count, by the protocol, before anything of that size is allocated.
    refused = _v2_infer(server, too_many)
    assert refused.status_code == 400 and set(refused.json()) == {"error"}, refused.text
    assert f"got {limit + 1}" in refused.json()["error"], refused.text


def test_v2_requests_are_measured_and_logged_like_predictions(server: LocalServer) -> None:
    response = _v2_infer(server, _tensor([1, 4], "FP64", ONE), {"X-Request-ID": "v2-probe-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "v2-probe-1"
    assert float(response.headers["x-latency-ms"]) > 0
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'iris_request_latency_ms_count{endpoint="/v2/models/*/infer",status="200"}' in metrics


# ------------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def mlflow_server(
    trained_state: ProjectState, stored: BenchModel, server_logs: Path
) -> Iterator[LocalServer]:
    """`mlflow models serve` of the run the service serves (the command of tools/bench)."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
    command += ["-m", stored.mlflow_uri, "--env-manager", "local", "--host", HOST]
    command += ["--port", str(port), "--workers", "1"]
    running = start_server(
        command, trained_state.env(), port, server_logs / f"mlflow-{port}.log", ready_path="/ping"
    )
    try:
        yield running
    finally:
        running.stop()


RECORDS = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in FLOWERS[:5].tolist()]
COLUMNS = {name: FLOWERS[:5, i].tolist() for i, name in enumerate(FEATURE_NAMES)}
SHUFFLED = list(reversed(FEATURE_NAMES))
CSV = (
    ",".join(SHUFFLED)
    + "\n"
    + "\n".join(",".join(str(value) for value in reversed(row)) for row in FLOWERS[:5].tolist())
)
JSON_BODIES = {
    "dataframe_split": {
        "dataframe_split": {"columns": SHUFFLED, "data": FLOWERS[:5, ::-1].tolist()}
    },
    "dataframe_records": {"dataframe_records": RECORDS},
    "instances records": {"instances": RECORDS},
    "inputs records": {"inputs": RECORDS},
    "inputs columns": {"inputs": COLUMNS},
    "instances columns": {"instances": COLUMNS},
    "split without columns": {"dataframe_split": {"data": FLOWERS[:5].tolist()}},
    "rows without names": {"instances": FLOWERS[:5].tolist()},
    "no input key": {"rows": RECORDS},
    "missing a column": {"dataframe_records": [{"sepal_length": 5.1}]},
}


def _both(service: LocalServer, mlflow: LocalServer, body: bytes, content_type: str):
    headers = {"Content-Type": content_type}
    ours = requests.post(f"{service.url}/invocations", data=body, headers=headers, timeout=30)
    theirs = requests.post(f"{mlflow.url}/invocations", data=body, headers=headers, timeout=30)
    return ours, theirs


def _assert_same_answer(ours: requests.Response, theirs: requests.Response) -> None:
    assert ours.status_code == theirs.status_code, (ours.text[:300], theirs.text[:300])
    if theirs.status_code == 200:
        expected = theirs.json()["predictions"]
        assert set(ours.json()) == {"predictions"}
        # Ours is the compiled (ONNX) model, theirs the scikit-learn pickle: the pipeline's
        # equivalence bound, and the same class for every flower.
        np.testing.assert_allclose(ours.json()["predictions"], expected, atol=1e-5)
        assert np.array(expected).shape[0] > 0
        if np.array(expected).ndim == 2:
            assert (np.argmax(ours.json()["predictions"], 1) == np.argmax(expected, 1)).all()
    else:
        assert set(ours.json()) == {"error_code", "message"}, ours.text[:300]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", sorted(JSON_BODIES))
def test_invocations_answer_like_mlflow_models_serve(
    server: LocalServer, mlflow_server: LocalServer, name: str
) -> None:
    body = json.dumps(JSON_BODIES[name]).encode()
    _assert_same_answer(*_both(server, mlflow_server, body, "application/json"))


def test_invocations_csv_and_the_runs_serving_input_example(
    server: LocalServer, mlflow_server: LocalServer, stored: BenchModel
) -> None:
    _assert_same_answer(*_both(server, mlflow_server, CSV.encode(), "text/csv"))
    example = (stored.mlflow_model_dir / "serving_input_example.json").read_bytes()
    ours, theirs = _both(server, mlflow_server, example, "application/json")
    assert theirs.status_code == 200
    _assert_same_answer(ours, theirs)


def test_ping_version_and_mlflow_error_shape(
    server: LocalServer, mlflow_server: LocalServer
) -> None:
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
    ours = requests.get(f"{server.url}/version", timeout=10)
    theirs = requests.get(f"{mlflow_server.url}/version", timeout=10)
    assert ours.status_code == 200 and ours.text == theirs.text
    refused = requests.post(
        f"{server.url}/invocations", data="x", headers={"Content-Type": "text/plain"}, timeout=10
    )
    assert refused.status_code == 415 and set(refused.json()) == {"error_code", "message"}
