"""Explanations served by a real `bentoml serve` of a model the real train.py stored (with its
background sample): POST /explain and V2 `parameters.explain` give the same answer, which
adds up to the probabilities /predict answers; bad input and too many rows are refused in
each route's own error shape; a version stored before explanations (no background) still
predicts and answers 409 to explain."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from iris_service.http.schemas import SETOSA_EXAMPLE, VERSICOLOR_EXAMPLE, VIRGINICA_EXAMPLE
from iris_service.inference.model_loading import BACKGROUND_FILE, BACKGROUND_METADATA
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from iris_service.settings import settings
from tools.bench.payloads import rows as iris_rows
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]
FLOWERS = [SETOSA_EXAMPLE, VERSICOLOR_EXAMPLE, VIRGINICA_EXAMPLE]
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"


def _v2_request(rows: list[list[float]], **parameters: object) -> dict:
    tensor = {"name": "input-0", "shape": [len(rows), len(FEATURE_NAMES)], "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": rows}], "parameters": parameters}


def _explain(server: LocalServer, flower: dict[str, float]) -> requests.Response:
    return requests.post(f"{server.url}/explain", json=flower, timeout=30)


def test_explain_answers_the_prediction_and_contributions_that_add_up(
    server: LocalServer,
) -> None:
    for flower in FLOWERS:
        response = _explain(server, flower)
        assert response.status_code == 200, response.text
        answer = response.json()
        predicted = requests.post(f"{server.url}/predict", json=flower, timeout=10).json()
        assert answer["class_name"] == predicted["class_name"]
        assert answer["model_tag"] == predicted["model_tag"]
        assert answer["model_version"] == predicted["model_tag"].split(":")[1]
        assert answer["output"] == "probability"
        assert answer["background"]["rows"] == 50
        for name in CLASS_NAMES:
            assert abs(answer["probabilities"][name] - predicted["probabilities"][name]) <= 1e-6
            contributions = answer["contributions"][name]
            assert list(contributions) == list(FEATURE_NAMES)
            total = answer["base_value"][name] + sum(contributions.values())
            assert abs(total - answer["probabilities"][name]) <= 1e-6
        # The predicted class owes its probability to the features: some contribution is large.
        assert max(abs(v) for v in answer["contributions"][answer["class_name"]].values()) > 0.05
        assert response.headers["x-request-id"]


def test_v2_explain_gives_the_same_answer_as_the_explain_route(server: LocalServer) -> None:
    rows = [[flower[name] for name in FEATURE_NAMES] for flower in FLOWERS]
    response = requests.post(
        f"{server.url}{V2_INFER}", json=_v2_request(rows, explain=True), timeout=30
    )
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["explanation"]["shape"] == [3, len(CLASS_NAMES), len(FEATURE_NAMES)]
    assert outputs["explanation"]["datatype"] == "FP32"
    assert outputs["base_value"]["shape"] == [len(CLASS_NAMES)]
    contributions = np.array(outputs["explanation"]["data"]).reshape(3, 3, 4)
    base = np.array(outputs["base_value"]["data"])
    probabilities = np.array(outputs["predict_proba"]["data"]).reshape(3, 3)
    assert np.abs(base + contributions.sum(axis=2) - probabilities).max() <= 1e-6
    for row, flower in enumerate(FLOWERS):
        answer = _explain(server, flower).json()
        rest = np.array(
            [[answer["contributions"][k][f] for f in FEATURE_NAMES] for k in CLASS_NAMES]
        )
        assert np.abs(contributions[row] - rest).max() <= 1e-6  # FP32 of the same values
        assert np.abs(base - [answer["base_value"][k] for k in CLASS_NAMES]).max() <= 1e-6
    # Without the parameter, the answer has no explanation outputs.
    plain = requests.post(f"{server.url}{V2_INFER}", json=_v2_request(rows), timeout=10)
    assert [o["name"] for o in plain.json()["outputs"]] == ["predict", "predict_proba"]


def test_bad_input_and_too_many_rows_are_refused(server: LocalServer) -> None:
    bad = _explain(server, {**SETOSA_EXAMPLE, "sepal_length": -1})
    missing = _explain(server, {k: v for k, v in SETOSA_EXAMPLE.items() if k != "petal_width"})
    batch = _explain(server, {"flowers": [SETOSA_EXAMPLE]})
    for refused in (bad, missing, batch):
        assert refused.status_code == 400, refused.text
        assert set(refused.json()) == {"error", "detail", "request_id"}
        assert refused.json()["error"] == "validation_error"
    limit = [list(row) for row in iris_rows(settings.max_explain_flowers + 1)]
    too_many = requests.post(
        f"{server.url}{V2_INFER}", json=_v2_request(limit, explain=True), timeout=30
    )
    assert too_many.status_code == 400
    assert too_many.json() == {
        "error": f"at most {settings.max_explain_flowers} flowers can be explained in one request, "
        f"got {settings.max_explain_flowers + 1}"
    }
    not_a_flag = requests.post(
        f"{server.url}{V2_INFER}", json=_v2_request(limit[:2], explain="yes"), timeout=10
    )
    assert not_a_flag.status_code == 400 and set(not_a_flag.json()) == {"error"}
    at_limit = requests.post(
        f"{server.url}{V2_INFER}", json=_v2_request(limit[:-1], explain=True), timeout=60
    )
    assert at_limit.status_code == 200
    outputs = {output["name"]: output for output in at_limit.json()["outputs"]}
    assert outputs["explanation"]["shape"] == [settings.max_explain_flowers, 3, 4]


def test_the_swagger_document_shows_explain_with_an_example(server: LocalServer) -> None:
    """Swagger UI's "Try it out" body is a real flower, and the answer is documented with
    its base value and contributions."""
    operation = requests.get(f"{server.url}/docs.json", timeout=10).json()["paths"]["/explain"]
    body = operation["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["example"] == VERSICOLOR_EXAMPLE
    answer = operation["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"base_value", "contributions", "background", "output"} <= set(answer["properties"])
    assert answer["example"]["output"] == "probability"


def test_the_background_is_logged_in_the_run_and_stored_with_the_model(
    trained_state: ProjectState,
) -> None:
    """Every candidate's MLflow run logs the background; the stored version holds its
    chosen run's, with the SHA-256 and row count in its metadata."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(trained_state.mlflow_uri)
    experiment = client.get_experiment_by_name(MODEL_NAME)
    runs = client.search_runs([experiment.experiment_id])
    assert runs
    for run in runs:
        assert BACKGROUND_FILE in {item.path for item in client.list_artifacts(run.info.run_id)}
    mlflow.set_tracking_uri(trained_state.mlflow_uri)
    folders = [
        path
        for path in (trained_state.bentoml_home / "models" / MODEL_NAME).iterdir()
        if (path / "model.yaml").is_file()
    ]
    assert folders
    for folder in folders:  # every version this session's train.py stored
        metadata = yaml.safe_load((folder / "model.yaml").read_text())["metadata"]
        stored = (folder / BACKGROUND_FILE).read_bytes()
        assert metadata[BACKGROUND_METADATA]["sha256"] == hashlib.sha256(stored).hexdigest()
        run_id = metadata["mlflow_run_id"]
        logged = mlflow.artifacts.load_text(f"runs:/{run_id}/{BACKGROUND_FILE}")
        assert json.loads(logged) == json.loads(stored)
        rows = json.loads(stored)["rows"]
        assert len(rows) == metadata[BACKGROUND_METADATA]["rows"] == 50
        assert all(len(row) == len(FEATURE_NAMES) for row in rows)


@pytest.fixture(scope="module")
def server_without_background(
    trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    """A copy of the trained store whose versions are as stored before explanations: no
    background file, no background in their metadata."""
    state = ProjectState(tmp_path_factory.mktemp("state-without-background"))
    shutil.copytree(trained_state.bentoml_home, state.bentoml_home, symlinks=True)
    for folder in (state.bentoml_home / "models" / MODEL_NAME).iterdir():
        info = folder / "model.yaml"
        if not info.is_file():
            continue
        document = yaml.safe_load(info.read_text())
        document["metadata"].pop(BACKGROUND_METADATA, None)
        info.write_text(yaml.safe_dump(document))
        (folder / BACKGROUND_FILE).unlink(missing_ok=True)
    with bento_server(state, Path(tmp_path_factory.mktemp("logs-without-background"))) as running:
        yield running


def test_a_version_stored_before_explanations_predicts_and_refuses_to_explain(
    server_without_background: LocalServer,
) -> None:
    url = server_without_background.url
    assert requests.post(f"{url}/predict", json=SETOSA_EXAMPLE, timeout=10).status_code == 200
    refused = requests.post(f"{url}/explain", json=SETOSA_EXAMPLE, timeout=10)
    assert refused.status_code == 409
    assert refused.json()["error"] == "explanation_unavailable"
    assert "make train" in refused.json()["detail"]
    v2 = requests.post(
        f"{url}{V2_INFER}", json=_v2_request([[5.1, 3.5, 1.4, 0.2]], explain=True), timeout=10
    )
    assert v2.status_code == 409 and "without an explanation background" in v2.json()["error"]
