"""The feedback loop end to end against a real `bentoml serve` on 127.0.0.1 (docs/feedback.md).

An isolated state (its own BentoML home, MLflow store, prediction and feedback logs): a
champion trained by the real train.py, a server with an API key, then tools/feedback_loop.py:
Iris traffic with its labels, the shifted population with its labels (live accuracy falls,
drift rises), the real `make retrain` (the challenger passes the gate on the held-out
feedback), `make promote`, the running service follows, and live accuracy on new shifted
traffic recovers. The module fixture plays it once; each test checks one claim. Then the
refusals of POST /feedback on the same server, and a restart with two API workers: the labels
are still joined and counted once. Every wait and every traffic phase is bounded.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from iris_pipeline.paths import PROJECT_ROOT
from iris_pipeline.population import draw
from iris_service.names import MODEL_NAME
from iris_service.records.store import RecordStore
from tests.integration.log_support import records_by_request_id
from tests.integration.model_support import train
from tests.support import SETOSA, VERSICOLOR
from tools.feedback_loop import LoopClient, LoopRun, make_in, run_loop, service_env
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.report import Snapshot, take_snapshot

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]

API_KEY = "feedback-loop-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FLOWERS_PER_PHASE = 150
RETRAIN_ARGS = "--candidates logistic_regression random_forest svm --cv-folds 2"
ACCURACY_THRESHOLD = 0.9  # IrisLiveAccuracyLow in deploy/monitoring/alerts.yaml
SIGNIFICANT_DRIFT = 0.25
NOISY = "--candidates logistic_regression --cv-folds 2 --label-noise 0.9"


@dataclass(frozen=True)
class Loop:
    state: ProjectState
    champion: str
    server: LocalServer
    run: LoopRun
    env: dict[str, str]
    # The live figures as the loop left them, before the other tests here add predictions and
    # labels of their own to the same server (they would move the windowed figures).
    figures: Snapshot
    live_quality: dict

    def labels(self) -> list[dict]:
        """Every label in the loop's prediction store, oldest first."""
        store = RecordStore(self.env["IRIS_RECORD_STORE_URL"])
        try:
            return list(store.iter_labels())
        finally:
            store.close()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    state = ProjectState(tmp_path_factory.mktemp("feedback-loop-state"))
    champion = train(state, "logistic_regression")
    env = {**service_env(state, FLOWERS_PER_PHASE), "IRIS_API_KEY": API_KEY}
    with bento_server(state, tmp_path_factory.mktemp("feedback-loop-logs"), **env) as server:
        run = run_loop(
            LoopClient(server.url, AUTH),
            make_in(state, env),
            flowers_per_phase=FLOWERS_PER_PHASE,
            retrain_args=RETRAIN_ARGS,
        )
        summary = run.summary()
        print("feedback loop:", json.dumps(summary, indent=2))
        (PROJECT_ROOT / "reports").mkdir(exist_ok=True)
        (PROJECT_ROOT / "reports" / "feedback-loop.json").write_text(
            json.dumps(run.record(), indent=2)
        )
        figures = take_snapshot(server.url)
        live_quality = requests.get(f"{server.url}/live_quality", headers=AUTH, timeout=10)
        live_quality.raise_for_status()
        yield Loop(state, champion, server, run, env, figures, live_quality.json())


def test_live_accuracy_is_high_on_iris_and_falls_below_the_threshold_on_the_shift(
    loop: Loop,
) -> None:
    baseline, shift = loop.run.phase("baseline"), loop.run.phase("shift")
    assert baseline.model_tags == shift.model_tags == [loop.champion]
    assert baseline.accuracy is not None and baseline.accuracy >= ACCURACY_THRESHOLD
    assert shift.accuracy is not None and shift.accuracy < ACCURACY_THRESHOLD - 0.1
    assert shift.labelled == FLOWERS_PER_PHASE  # the window: the shifted labels only


def test_drift_rises_with_the_shift(loop: Loop) -> None:
    baseline, shift = loop.run.phase("baseline"), loop.run.phase("shift")
    assert baseline.max_psi is not None and shift.max_psi is not None
    assert shift.max_psi >= SIGNIFICANT_DRIFT > baseline.max_psi


def test_retrain_trains_on_the_feedback_and_its_challenger_passes_the_gate(loop: Loop) -> None:
    output = loop.run.phase("retrain").output
    labels = 2 * FLOWERS_PER_PHASE
    held_out = -(-labels * 3 // 10)
    assert f"{labels} labels; training on the {labels - held_out} oldest, {held_out} held out" in (
        output
    )
    assert f"{held_out} held-out recent feedback labels" in output
    assert "interpreted in multiple ways" not in output  # MLflow's note on the dataset source
    assert "passes the gate" in output and "Version 2 is the challenger" in output


def test_the_feedback_is_an_mlflow_dataset_of_the_retraining_runs(loop: Loop) -> None:
    client = MlflowClient(loop.state.mlflow_uri)
    version = client.get_model_version(MODEL_NAME, "2")
    run = client.get_run(version.run_id)
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["feedback"]
    assert {tag.key: tag.value for tag in inputs[0].tags}["mlflow.data.context"] == "training"
    profile = json.loads(inputs[0].dataset.profile)
    labels = 2 * FLOWERS_PER_PHASE
    assert profile["num_rows"] == labels - (-(-labels * 3 // 10))
    assert run.data.params["feedback_labels"] == str(profile["num_rows"])
    assert run.data.params["feedback_first_label"] < run.data.params["feedback_last_label"]


def test_promotion_is_followed_and_live_accuracy_recovers(loop: Loop) -> None:
    promote, recovered = loop.run.phase("promote"), loop.run.phase("recovered")
    assert "is now the champion (gate: passed)" in promote.output
    (new_model,) = recovered.model_tags
    assert new_model != loop.champion
    assert recovered.accuracy is not None and recovered.accuracy >= ACCURACY_THRESHOLD
    shift = loop.run.phase("shift")
    assert recovered.accuracy >= shift.accuracy + 0.2  # type: ignore[operator]
    assert loop.run.phase("follow").seconds < 60


def test_the_old_and_new_versions_keep_their_own_live_figures(loop: Loop) -> None:
    snapshot = loop.figures
    accuracy = {labels["model_version"]: v for labels, v in snapshot.select("iris_live_accuracy")}
    recall = {
        (labels["model_version"], labels["class_name"]): v
        for labels, v in snapshot.select("iris_live_recall")
    }
    new_model = loop.run.phase("recovered").model_tags[0]
    assert accuracy[loop.champion] == pytest.approx(loop.run.phase("shift").accuracy)
    assert accuracy[new_model] == pytest.approx(loop.run.phase("recovered").accuracy)
    assert recall[(loop.champion, "versicolor")] < 0.5 < recall[(new_model, "versicolor")]
    answer = loop.live_quality
    assert answer["window"] == FLOWERS_PER_PHASE
    assert answer["models"][new_model]["accuracy"] == pytest.approx(accuracy[new_model])
    assert answer["models"][loop.champion]["labelled"] == FLOWERS_PER_PHASE
    delays = [value for _, value in snapshot.select("iris_live_label_delay_seconds")]
    assert len(delays) == 2 and all(0 <= delay < 60 for delay in delays), delays


# --- POST /feedback's refusals, on the same server -------------------------------------------


def _predict(loop: Loop, path: str, body: dict, client_id: str | None = None):
    """One answer; its label is sent at once (the desk waits for a record the answering
    worker's writer has not stored yet)."""
    headers = {**AUTH, **({"X-Request-ID": client_id} if client_id else {})}
    answer = requests.post(f"{loop.server.url}{path}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def _feedback(server: LocalServer, body: object, headers: dict[str, str] = AUTH):
    return requests.post(f"{server.url}/feedback", json=body, headers=headers, timeout=10)


def _assert_refused(answer: requests.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["error"] == code and body["request_id"] == answer.headers["x-request-id"]
    return body["detail"]


def test_feedback_needs_the_api_key(loop: Loop) -> None:
    answer = _predict(loop, "/predict", SETOSA)
    label = {"request_id": answer.headers["x-request-id"], "class_name": "setosa"}
    _assert_refused(_feedback(loop.server, label, headers={}), 401, "unauthorized")
    assert _feedback(loop.server, label).status_code == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"request_id": "x", "class_name": "rose"}, "'setosa', 'versicolor' or 'virginica'"),
        ({"request_id": "x"}, "send request_id and class_name"),
        ({"feedback": []}, "at least 1 item"),
        ({"request_id": "a b", "class_name": "setosa"}, "is not a request id"),
        ([1, 2], "Input should be an object"),
    ],
)
def test_malformed_feedback_is_a_400(loop: Loop, body: object, words: str) -> None:
    assert words in _assert_refused(_feedback(loop.server, body), 400, "validation_error")


def test_unknown_already_labelled_and_ambiguous_ids_are_refused(loop: Loop) -> None:
    _assert_refused(
        _feedback(loop.server, {"request_id": "never-sent", "class_name": "setosa"}),
        404,
        "unknown_request_id",
    )
    batch = _predict(loop, "/predict_batch", {"flowers": [SETOSA, VERSICOLOR]}, "twice")
    labels = [
        {"request_id": "twice/0", "class_name": "setosa"},
        {"request_id": "twice/1", "class_name": "versicolor"},
    ]
    accepted = _feedback(loop.server, {"feedback": labels})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 2
    server_id = batch.headers["x-server-request-id"]
    again = {"request_id": f"{server_id}/1", "class_name": "versicolor"}
    _assert_refused(_feedback(loop.server, again), 409, "already_labelled")
    _predict(loop, "/predict", SETOSA, "twice")
    detail = _assert_refused(
        _feedback(loop.server, {"request_id": "twice", "class_name": "setosa"}),
        409,
        "ambiguous_request_id",
    )
    assert "X-Server-Request-Id" in detail


# --- AUTO_PROMOTE -----------------------------------------------------------------------------


def _gate_lines(output: str) -> list[str]:
    """The gate's check lines (macro-F1 and three recalls), each ending in ok or FAILED."""
    return [line for line in output.splitlines() if line.strip().endswith(("ok", "FAILED"))]


@dataclass(frozen=True)
class RefusedRetrain:
    """`make retrain AUTO_PROMOTE=1` whose challenger learnt from labels that are 90 % wrong,
    with the champion and challenger before and after it."""

    result: subprocess.CompletedProcess[str]
    champion_before: str
    champion_after: str
    challenger: str

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@pytest.fixture(scope="module")
def refused_retrain(loop: Loop) -> RefusedRetrain:
    """Played once: its refusal is one test's claim, its noisy version (a worse model) the
    champion another test needs (a retraining costs a process's imports and a gate)."""
    client = MlflowClient(loop.state.mlflow_uri)
    champion_before = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    result = make_in(loop.state, loop.env)("retrain", "AUTO_PROMOTE=1", f"RETRAIN_ARGS={NOISY}")
    return RefusedRetrain(
        result,
        champion_before,
        client.get_model_version_by_alias(MODEL_NAME, "champion").version,
        client.get_model_version_by_alias(MODEL_NAME, "challenger").version,
    )


def test_auto_promote_refuses_a_worse_challenger(refused_retrain: RefusedRetrain) -> None:
    """`make retrain AUTO_PROMOTE=1` whose challenger learnt from labels that are 90 % wrong:
    the gate must refuse it (exit 3 through make, `Error 3`), the champion stays."""
    output = refused_retrain.output
    checks = _gate_lines(output)
    assert len(checks) == 4, output  # macro-F1 and three recalls, printed once (promote)
    assert any(line.strip().endswith("FAILED") for line in checks), output
    assert refused_retrain.result.returncode == 2 and "Error 3" in output, output
    challenger = refused_retrain.challenger
    assert int(challenger) > int(refused_retrain.champion_before)
    assert f"Refused: version {challenger}" in output
    assert refused_retrain.champion_after == refused_retrain.champion_before


def test_auto_promote_promotes_a_better_challenger_and_the_service_follows(
    loop: Loop, refused_retrain: RefusedRetrain
) -> None:
    """The refused noisy version made champion with FORCE=1, then `make retrain
    AUTO_PROMOTE=1` on the real labels: the gate must pass, the challenger is champion, and
    the running service follows."""
    client = MlflowClient(loop.state.mlflow_uri)
    make = make_in(loop.state, loop.env)
    worse = refused_retrain.challenger
    forced = make("promote", f"VERSION={worse}", "FORCE=1")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == worse

    # One candidate is enough to beat it (the loop's own retrain compares three).
    real = "--candidates logistic_regression --cv-folds 2"
    result = make("retrain", "AUTO_PROMOTE=1", f"RETRAIN_ARGS={real}")
    output = result.stdout + result.stderr
    checks = _gate_lines(output)
    assert len(checks) == 4 and all(line.strip().endswith("ok") for line in checks), output
    assert result.returncode == 0, output
    assert "is now the champion (gate: passed)" in output
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    assert int(champion) == int(worse) + 1
    tag = client.get_model_version(MODEL_NAME, champion).tags["bentoml_tag"]
    client_ = LoopClient(loop.server.url, AUTH)
    deadline = time.monotonic() + 60
    while client_.champion() != tag:
        assert time.monotonic() < deadline, "the service did not follow the promotion"
        time.sleep(0.2)


# --- a restart, with two API workers ---------------------------------------------------------


def _api_workers(server: LocalServer) -> list[int]:
    import psutil

    workers = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "--service-name IrisClassifier" in " ".join(process.cmdline()):
                workers.append(process.pid)
        except psutil.Error:
            continue
    return workers


def test_labels_survive_a_restart_and_two_workers_count_each_once(
    loop: Loop, tmp_path: Path
) -> None:
    before = loop.labels()
    unlabelled_answer = _predict(loop, "/predict", VERSICOLOR)
    unlabelled = unlabelled_answer.headers["x-request-id"]
    population = draw(20, seed=99, shifted=True)
    batch = _predict(loop, "/predict_batch", {"flowers": population.flowers})
    # Both answers are on disk (records are written after the answer) before a new server
    # process, with nothing in memory from this one, reads the same stores: a restart as the
    # store sees it, while the module's server keeps serving the other tests, in any order.
    server_ids = [r.headers["x-server-request-id"] for r in (unlabelled_answer, batch)]
    stored = records_by_request_id(loop.env["IRIS_RECORD_STORE_URL"], *server_ids)
    assert set(stored) == set(server_ids), "the answers' records were not written"
    two_workers = json.dumps({"services": {"IrisClassifier": {"workers": 2}}})
    with bento_server(
        loop.state, tmp_path, BENTOML_CONFIG_OVERRIDES=two_workers, **loop.env
    ) as server:
        assert len(_api_workers(server)) == 2
        snapshot = take_snapshot(server.url)  # before any new label: read from the store
        labelled = {
            labels["model_version"]: value
            for labels, value in snapshot.select("iris_live_labelled")
        }
        assert labelled[loop.champion] == FLOWERS_PER_PHASE
        old = before[-1]
        relabel = {"request_id": old["key"], "class_name": old["class_name"]}  # server id
        _assert_refused(_feedback(server, relabel), 409, "already_labelled")
        joined = _feedback(server, {"request_id": unlabelled, "class_name": "versicolor"})
        assert joined.status_code == 200, joined.text

        # Each flower of the batch sent 4 times at once over separate connections.
        request_id = batch.headers["x-request-id"]
        labels = [
            {"request_id": f"{request_id}/{i}", "class_name": name}
            for i, name in enumerate(population.classes)
        ]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda label: _feedback(server, label), [*labels, *labels] * 2))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * len(labels) + [409] * (3 * len(labels)), statuses
    after = loop.labels()
    keys = [record["key"] for record in after]
    assert len(keys) == len(set(keys)) == len(before) + 1 + len(labels)
