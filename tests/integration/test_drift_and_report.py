"""GET /drift and `make report` against the session's real `bentoml serve`."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.names import FEATURE_NAMES
from tools import report
from tools.local_server import LocalServer

pytestmark = pytest.mark.server


# Each API worker keeps its own drift window (docs/monitoring.md): one keep-alive connection
# reaches one worker, so the flowers sent and the window read are that worker's.
WORKER = requests.Session()


def _send(server: LocalServer, rows: np.ndarray) -> None:
    flowers = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in rows.round(1)]
    response = WORKER.post(f"{server.url}/predict_batch", json={"flowers": flowers}, timeout=60)
    assert response.status_code == 200, response.text


def _drift(server: LocalServer) -> dict:
    response = WORKER.get(f"{server.url}/drift", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_drift_is_low_for_iris_traffic_and_high_for_shifted_traffic(server: LocalServer) -> None:
    window = _drift(server)["window_size"]
    iris = load_iris().data
    rng = np.random.default_rng(11)
    # Sending a whole window of flowers replaces whatever earlier tests sent.
    _send(server, iris[rng.integers(0, len(iris), window)])
    normal = _drift(server)
    assert normal["status"] == "ok" and normal["flowers_in_window"] == window
    assert normal["max_psi"] < 0.1, normal

    shifted = iris[rng.integers(0, len(iris), window)]
    shifted[:, 2] += 1.5  # petal length, cm
    shifted[:, 3] += 0.6  # petal width, cm
    _send(server, shifted)
    drifted = _drift(server)
    scores = {name: feature["psi"] for name, feature in drifted["features"].items()}
    assert drifted["level"] == "significant"
    assert scores["petal_length"] > 0.25 and scores["petal_width"] > 0.25, scores
    assert scores["sepal_length"] < 0.1 and scores["sepal_width"] < 0.1, scores
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'iris_feature_drift_psi{feature="petal_length"}' in metrics
    print(f"drift: normal max PSI {normal['max_psi']}, shifted {scores}")


def _labels_received(server: LocalServer) -> float:
    """Every label POST /feedback has counted, whatever its outcome."""
    snapshot = report.take_snapshot(server.url)
    return sum(value for _, value in snapshot.select("iris_feedback_total"))


@pytest.mark.timeout(120)
def test_make_report_renders_the_dashboard_views(server: LocalServer) -> None:
    """`make report SERVICE_URL=...`: /metrics snapshots around its own bounded traffic, and
    not one label sent to a service the report did not start."""
    labels_before = _labels_received(server)
    started = time.time()
    result = subprocess.run(
        [
            "make",
            "-o",
            ".venv/.installed",  # the suite already runs inside the installed .venv
            "report",
            f"SERVICE_URL={server.url}",
            "REPORT_ARGS=--seconds 8 --interval 1.5",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no labels" in result.stdout
    assert _labels_received(server) == labels_before
    written = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    names = {line.rsplit("/", 1)[-1] for line in written}
    assert "monitoring.png" in names and "monitoring-data-drift-psi-per-feature.png" in names
    assert "explanations.png" in names  # the contributions of a few flowers (/explain)
    assert len(names) == len(report.dashboard_panels()) + 2
    for line in written:
        path = PROJECT_ROOT / "reports" / line.rsplit("/", 1)[-1]
        assert path.stat().st_size > 5000 and path.stat().st_mtime >= started - 1


def test_the_scratch_service_of_a_report_keeps_its_own_stores(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRIS_RECORD_STORE_URL", "postgresql://shared/iris")
    monkeypatch.setenv("IRIS_RECORD_MAX_PREDICTIONS", "5")
    unset, env = report.scratch_store_env(tmp_path)
    assert {"IRIS_RECORD_STORE_URL", "IRIS_RECORD_MAX_PREDICTIONS"} <= set(unset)
    assert env["IRIS_RECORD_STORE_URL"] == f"sqlite:///{tmp_path}/service-records/records.db"
