"""Untrusted input against one real `bentoml serve`: what clients send on the protocol routes
(family 2) and the files the service reads (family 3).

* A prediction store file that is not a database does not stop the start: predictions are
  answered, /readyz is 200, POST /feedback answers 503 and the log says why.
* An aliases file that names another model, or is not JSON, is ignored: answers stay 200,
  /readyz stays 200, one log line says why, and GET /model shows the reason without a path.
* Deeply nested JSON, oversized CSV fields and bodies in encodings other than UTF-8 get a
  4xx in the protocol's error shape (never a 500), never reach the prediction store, and
  every record the store gains reads back as JSON, so /feedback keeps working.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from iris_service.inference.model_aliases import aliases_path, read_aliases
from iris_service.names import FEATURE_NAMES, MODEL_NAME
from tests.integration.log_support import records_url, wait_for_records
from tests.support import SETOSA
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

INFER = f"/v2/models/{MODEL_NAME}/infer"
FLOWER = [5.1, 3.5, 1.4, 0.2]
V2_BODY = json.dumps(
    {"id": "café", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                               "data": FLOWER}]},
    ensure_ascii=False,
)  # fmt: skip
MLFLOW_BODY = json.dumps(
    {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": [FLOWER]}, "params": {"n": "é"}},
    ensure_ascii=False,
)
CSV_BODY = ",".join(FEATURE_NAMES) + "\n" + ",".join(map(str, FLOWER)) + "\n"
JSON_HEADERS = {"Content-Type": "application/json"}
CSV_HEADERS = {"Content-Type": "text/csv"}
ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "latin-1")


@pytest.fixture(scope="module")
def home(trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BentoML home of this module's own: the session's models, a copy of its aliases (this
    module writes bad ones)."""
    home = tmp_path_factory.mktemp("untrusted") / "bentoml"
    home.mkdir()
    (home / "models").symlink_to(trained_state.bentoml_home / "models")
    aliases = aliases_path(MODEL_NAME, home)
    aliases.parent.mkdir()
    shutil.copy(aliases_path(MODEL_NAME, trained_state.bentoml_home), aliases)
    return home


@pytest.fixture(scope="module")
def server(trained_state: ProjectState, home: Path) -> Iterator[LocalServer]:
    with bento_server(
        trained_state,
        home.parent,
        BENTOML_HOME=str(home),
        IRIS_RECORD_STORE_URL=records_url(home / "records"),
        IRIS_ALIAS_POLL_SECONDS="0.1",
    ) as running:
        yield running


def _served(server: LocalServer) -> None:
    """/predict, V2 and /invocations answer 200; /readyz is 200."""
    answer = requests.post(f"{server.url}/predict", json=SETOSA, timeout=10)
    assert answer.status_code == 200 and answer.json()["class_name"] == "setosa", answer.text
    infer = requests.post(
        f"{server.url}{INFER}", data=V2_BODY.encode(), headers=JSON_HEADERS, timeout=10
    )
    assert infer.status_code == 200, infer.text
    scoring = requests.post(
        f"{server.url}/invocations", data=CSV_BODY, headers=CSV_HEADERS, timeout=10
    )
    assert scoring.status_code == 200, scoring.text
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200


def _model(server: LocalServer) -> dict:
    answer = requests.get(f"{server.url}/model", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _wait_for_refusal(server: LocalServer, fragment: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        model = _model(server)
        if fragment in (model["last_refusal"] or ""):
            return model
        time.sleep(0.1)
    pytest.fail(f"GET /model never showed {fragment!r}: {model}\n{server.log_tail()}")


def test_a_store_file_that_is_not_a_database_costs_feedback_not_answers(
    trained_state: ProjectState, home: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "records" / "records.db"
    damaged.parent.mkdir()
    damaged.write_bytes(b"these bytes are not an SQLite database\n" * 200)
    with bento_server(
        trained_state,
        tmp_path,
        BENTOML_HOME=str(home),
        IRIS_RECORD_STORE_URL=records_url(damaged.parent),
    ) as damaged_server:
        _served(damaged_server)
        predicted = requests.post(f"{damaged_server.url}/predict", json=SETOSA, timeout=10)
        label = {"request_id": predicted.headers["x-server-request-id"], "class_name": "setosa"}
        refused = requests.post(f"{damaged_server.url}/feedback", json=label, timeout=10)
        log = damaged_server.log()
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "store_unavailable" and "Retry-After" in refused.headers
    assert "prediction store is unavailable at start" in log and "not a database" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"champion": "other-model:v1", "challenger": null}', "other-model:v1 is not a version"),
        ("{not json", "not valid JSON"),
        ('{"champion": "' + MODEL_NAME + ':../../elsewhere"}', "the champion is not a tag"),
    ],
)
def test_a_bad_aliases_file_leaves_the_models_in_service(
    server: LocalServer, home: Path, content: str, fragment: str
) -> None:
    before = _model(server)
    path = aliases_path(MODEL_NAME, home)
    good = path.read_text()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(content)
    temporary.replace(path)  # atomically, as the pipeline writes it
    try:
        model = _wait_for_refusal(server, fragment)
        for _ in range(5):
            _served(server)
        assert model["champion"] == before["champion"]
        assert "aliases_file" not in model
        shown = json.dumps(model)
        assert str(home) not in shown and "/" not in model["last_refusal"], shown
        # Said once by each process that follows the file (every API worker and the runner),
        # although each polls it every 0.1 s.
        processes = len(server.worker_pids())
        deadline = time.monotonic() + 10
        while True:
            logged = [line for line in server.log().splitlines() if fragment in line]
            by_process = Counter(re.findall(r"\[(?:entry_)?service:[^\]]+\]", "\n".join(logged)))
            if len(by_process) >= processes or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(by_process) == processes and set(by_process.values()) == {1}, logged
    finally:
        temporary.write_text(good)
        temporary.replace(path)
    assert read_aliases(MODEL_NAME, home) is not None


def _refused(answer: requests.Response, shape: set[str]) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert set(answer.json()) == shape, answer.text[:300]
    assert "Traceback" not in answer.text


def test_bodies_a_protocol_cannot_read_are_4xx_and_never_reach_the_store(
    server: LocalServer, home: Path
) -> None:
    store = records_url(home / "records")
    started = time.time()  # records carry the time of their answer (same clock, same host)
    v2_error, mlflow_error = {"error"}, {"error_code", "message"}
    for depth in (1_000, 100_000):
        nested = ("[" * depth).encode()
        answer = requests.post(f"{server.url}{INFER}", data=nested, timeout=10)
        _refused(answer, v2_error)
        body = b'{"instances":' + nested
        answer = requests.post(
            f"{server.url}/invocations", data=body, headers=JSON_HEADERS, timeout=10
        )
        _refused(answer, mlflow_error)
    for field in ("1" * 200_000, '"' + "x" * 200_000 + '"', "1" * 300):
        body = CSV_BODY.replace("5.1", field, 1).encode()
        answer = requests.post(
            f"{server.url}/invocations", data=body, headers=CSV_HEADERS, timeout=10
        )
        _refused(answer, mlflow_error)
    for encoding in ENCODINGS:
        answer = requests.post(f"{server.url}{INFER}", data=V2_BODY.encode(encoding), timeout=10)
        _refused(answer, v2_error)
        for body, headers in ((MLFLOW_BODY, JSON_HEADERS), (CSV_BODY + "é", CSV_HEADERS)):
            answer = requests.post(
                f"{server.url}/invocations", data=body.encode(encoding), headers=headers,
                timeout=10,
            )  # fmt: skip
            _refused(answer, mlflow_error)
    latin1 = {"Content-Type": "text/csv; charset=latin-1"}
    answer = requests.post(f"{server.url}/invocations", data=CSV_BODY, headers=latin1, timeout=10)
    _refused(answer, mlflow_error)
    assert answer.status_code == 415
    # The same bodies in UTF-8 are answered, logged as JSON, and labels still work.
    _served(server)
    scoring = requests.post(
        f"{server.url}/invocations", data=MLFLOW_BODY.encode(), headers=JSON_HEADERS, timeout=10
    )
    assert scoring.status_code == 200, scoring.text
    # Binary tensor data after a JSON header, sent as application/json: logged as base64.
    header = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                     "parameters": {"binary_data_size": 32}}]}
    ).encode()  # fmt: skip
    binary = header + struct.pack("<4d", *FLOWER)
    headers = {**JSON_HEADERS, "Inference-Header-Content-Length": str(len(header))}
    infer = requests.post(f"{server.url}{INFER}", data=binary, headers=headers, timeout=10)
    assert infer.status_code == 200, infer.text
    # Labelled at once: the desk waits for a record the answering worker has not stored yet.
    predicted = requests.post(f"{server.url}/predict", json=SETOSA, timeout=10)
    server_id = predicted.headers["x-server-request-id"]
    label = {"request_id": server_id, "class_name": "setosa"}
    feedback = requests.post(f"{server.url}/feedback", json=label, timeout=10)
    assert feedback.status_code == 200, feedback.text

    def ours(found: list[dict]) -> list[dict]:
        return [record for record in found if record["ts"] >= started]

    def complete(found: list[dict]) -> bool:
        endpoints = [record["endpoint"] for record in ours(found)]
        return endpoints.count(INFER) >= 2 and endpoints.count("/invocations") >= 2

    records = ours(wait_for_records(store, complete))  # other workers write a little later
    endpoints = [record["endpoint"] for record in records]
    assert endpoints.count(INFER) == 2 and endpoints.count("/invocations") == 2, endpoints
    # In the order they were answered: two workers write their records at their own pace.
    v2_json, v2_binary = sorted(
        (r for r in records if r["endpoint"] == INFER), key=lambda r: r["ts"]
    )
    assert v2_json["inputs"]["id"] == "café"  # UTF-8 text survives as text
    assert base64.b64decode(v2_binary["inputs"]) == binary
