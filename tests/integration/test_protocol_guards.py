"""The protocol routes go through the same guards as /predict: API key, admission control,
prediction log and drift, against one real server with a key and a prediction log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from iris_service.names import FEATURE_NAMES, MODEL_NAME
from tests.integration.log_support import records_by_request_id, records_url
from tools.bench.payloads import rows as iris_rows
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server

API_KEY = "protocol-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FLOWERS = np.array(iris_rows(25), dtype=np.float64)
INFER = f"/v2/models/{MODEL_NAME}/infer"


@pytest.fixture(scope="module")
def guarded(
    trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    logs = tmp_path_factory.mktemp("protocol-guards")
    with bento_server(
        trained_state,
        logs,
        IRIS_API_KEY=API_KEY,
        IRIS_RECORD_STORE_URL=records_url(logs),
    ) as running:
        yield running


def _binary_infer_body() -> tuple[bytes, dict[str, str]]:
    blob = FLOWERS.astype("<f8").tobytes()
    tensor = {
        "name": "input-0",
        "shape": list(FLOWERS.shape),
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return header.encode() + blob, {"Inference-Header-Content-Length": str(len(header))}


CSV = ",".join(FEATURE_NAMES) + "\n" + "\n".join(",".join(map(str, r)) for r in FLOWERS.tolist())


def test_inference_and_metadata_need_the_key_health_does_not(guarded: LocalServer) -> None:
    body, headers = _binary_infer_body()
    refused = requests.post(f"{guarded.url}{INFER}", data=body, headers=headers, timeout=10)
    assert refused.status_code == 401 and set(refused.json()) == {"error"}
    refused = requests.post(
        f"{guarded.url}/invocations", data=CSV, headers={"Content-Type": "text/csv"}, timeout=10
    )
    assert refused.status_code == 401 and set(refused.json()) == {"error_code", "message"}
    for path in ("/v2/health/live", "/v2/health/ready", "/ping"):  # probes
        assert requests.get(f"{guarded.url}{path}", timeout=10).status_code == 200, path
    for path in ("/v2", f"/v2/models/{MODEL_NAME}", "/version"):  # metadata: fails closed
        refused = requests.get(f"{guarded.url}{path}", timeout=10)
        assert refused.status_code == 401, path
        answer = requests.get(f"{guarded.url}{path}", headers=AUTH, timeout=10)
        assert answer.status_code == 200, path


def test_binary_and_csv_predictions_are_logged_and_watched_for_drift(
    guarded: LocalServer,
) -> None:
    # One connection, so one API worker: each worker keeps its own drift window.
    worker = requests.Session()
    before = worker.get(f"{guarded.url}/drift", headers=AUTH, timeout=10).json()["observed_total"]
    body, headers = _binary_infer_body()
    v2_answer = worker.post(
        f"{guarded.url}{INFER}", data=body, headers={**headers, **AUTH}, timeout=30
    )
    assert v2_answer.status_code == 200, v2_answer.text[:300]
    assert v2_answer.headers["content-type"] == "application/octet-stream"
    csv_answer = worker.post(
        f"{guarded.url}/invocations",
        data=CSV,
        headers={"Content-Type": "text/csv", **AUTH},
        timeout=30,
    )
    assert csv_answer.status_code == 200, csv_answer.text[:300]
    after = worker.get(f"{guarded.url}/drift", headers=AUTH, timeout=10).json()["observed_total"]
    assert after - before == 2 * len(FLOWERS)

    v2_id, csv_id = v2_answer.headers["x-request-id"], csv_answer.headers["x-request-id"]
    by_request = records_by_request_id(records_url(Path(guarded.log_path).parent), v2_id, csv_id)
    v2_record, csv_record = by_request[v2_id], by_request[csv_id]
    assert v2_record["endpoint"] == INFER and csv_record["endpoint"] == "/invocations"
    assert (v2_record["protocol"], csv_record["protocol"]) == ("v2", "mlflow")
    for record in (v2_record, csv_record):
        assert record["model_tag"].startswith(f"{MODEL_NAME}:")
    assert csv_record["inputs"] == CSV  # CSV kept as its text
    assert isinstance(v2_record["inputs"], str)  # binary kept as base64
    assert csv_record["outputs"] == csv_answer.json()
