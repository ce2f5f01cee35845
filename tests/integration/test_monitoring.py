"""deploy/monitoring against real tools: promtool, and a real Prometheus scraping `bentoml serve`.

Prometheus (Debian's package) listens on 127.0.0.1, keeps its data in a temp dir and scrapes
the session's server every second; every wait is bounded.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from iris_pipeline.paths import PROJECT_ROOT
from tests.support import SETOSA, VERSICOLOR, VIRGINICA, ensure_debian_packages
from tools import report
from tools.local_server import LocalServer, free_port

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"


@pytest.fixture(scope="module")
def prometheus_installed() -> None:
    ensure_debian_packages("prometheus")


def test_alert_rules_and_scrape_config_pass_promtool(prometheus_installed: None) -> None:
    rules = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(
        ["promtool", "check", "config", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "IrisHighErrorRatio",
        "IrisLatencyP99OverSLO",
        "IrisReadinessFlapping",
        "IrisFeatureDriftSignificant",
        "IrisPredictionRecordsLost",
        "IrisLiveAccuracyLow",
        "IrisTooLittleFeedback",
    } <= alerts


def test_live_quality_alerts_fire_as_their_unit_tests_say(prometheus_installed: None) -> None:
    """deploy/monitoring/alerts-test.yaml: a champion below 90 % with enough labels pages, a
    replaced version does not, and a champion with too few labels is a ticket."""
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts-test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The instant query's result, at `at` (Unix time) or now."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        response = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_for_scrapes_after(self, since: float, scrapes: int = 2, timeout: float = 30) -> None:
        """Until Prometheus has scraped the service `scrapes` times after `since` (Unix time),
        read from the timestamps of its `up` series (bounded)."""
        seen: set[float] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < scrapes:
            assert time.monotonic() < deadline, f"{len(seen)} scrapes in {timeout} s"
            for series in self.query('timestamp(up{job="iris-classifier"})'):
                if float(series["value"][1]) > since:
                    seen.add(float(series["value"][1]))
            time.sleep(0.2)

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus(
    prometheus_installed: None, server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """The shipped scrape config and rules, pointed at the session's server, 1 s interval."""
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(MONITORING / "alerts.yaml")]
    job = config["scrape_configs"][0]
    job["scrape_timeout"] = "1s"
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.port}"]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield Prometheus(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _send_traffic(server: LocalServer) -> dict[str, int]:
    """A bounded mix: 20 flowers of each class one by one, one batch of 150, 5 invalid, and
    the true class of the first three flowers (POST /feedback) plus one unknown label."""
    session = requests.Session()
    sent = {"setosa": 0, "versicolor": 0, "virginica": 0}
    labels = []
    for _ in range(20):
        for name, flower in (
            ("setosa", SETOSA),
            ("versicolor", VERSICOLOR),
            ("virginica", VIRGINICA),
        ):
            answer = session.post(f"{server.url}/predict", json=flower, timeout=10)
            assert answer.ok
            if len(labels) < 3:
                labels.append({"request_id": answer.headers["x-request-id"], "class_name": name})
            sent[name] += 1
    feedback = session.post(f"{server.url}/feedback", json={"feedback": labels}, timeout=10)
    assert feedback.status_code == 200, feedback.text
    unknown = {"request_id": "never-predicted", "class_name": "setosa"}
    assert session.post(f"{server.url}/feedback", json=unknown, timeout=10).status_code == 404
    from sklearn.datasets import load_iris

    from iris_service.names import FEATURE_NAMES

    flowers = [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in load_iris().data]
    assert session.post(f"{server.url}/predict_batch", json={"flowers": flowers}, timeout=30).ok
    for _ in range(5):
        response = session.post(f"{server.url}/predict", json={"sepal_length": 1}, timeout=10)
        assert response.status_code == 400
    return sent


def _fill_a_drift_window(server: LocalServer) -> None:
    """Iris batches over one connection (one API worker) until the service publishes drift
    scores: each worker publishes once its own window holds enough flowers (200), which the
    traffic above alone does not guarantee when it is spread over the workers (bounded)."""
    from sklearn.datasets import load_iris

    from iris_service.settings import FEATURE_NAMES

    flowers = [dict(zip(FEATURE_NAMES, map(float, r), strict=True)) for r in load_iris().data]
    session = requests.Session()
    for _ in range(10):
        if any(True for _ in report.take_snapshot(server.url).select("iris_feature_drift_psi")):
            return
        answer = session.post(f"{server.url}/predict_batch", json={"flowers": flowers}, timeout=30)
        assert answer.ok, answer.text
    raise AssertionError("no drift score after 10 batches of 150 flowers")


def _value(result: list[dict]) -> float:
    assert result, "no data"
    return float(result[0]["value"][1])


def _quantile(q: float, buckets: list[dict]) -> float:
    """histogram_quantile as Prometheus computes it, from `sum by (le)` bucket series:
    linear interpolation inside the bucket that holds the rank; the highest finite bound if
    that bucket is +Inf."""
    counts = sorted((float(s["metric"]["le"]), float(s["value"][1])) for s in buckets)
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in counts:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    raise AssertionError(f"no bucket holds rank {rank}: {counts}")


def _api_workers(server: LocalServer) -> list:
    import psutil

    return [psutil.Process(pid) for pid in server.worker_pids("IrisClassifier")]


def _cpu_ms(processes: list) -> float:
    """User + system CPU time of `processes` so far, in ms."""
    return sum(sum(process.cpu_times()[:2]) for process in processes) * 1000


def _predict_cpu_ms(server: LocalServer) -> float:
    """The service's own sum of CPU ms over /predict requests (its /metrics)."""
    snapshot = report.take_snapshot(server.url)
    samples = snapshot.select("iris_request_cpu_ms_sum", endpoint="/predict")
    return sum(value for _, value in samples)


@pytest.mark.server
@pytest.mark.timeout(180)
def test_prometheus_scrapes_the_service_and_every_dashboard_query_has_data(
    prometheus: Prometheus, server: LocalServer, tmp_path: Path
) -> None:
    up = prometheus.wait_for('up{job="iris-classifier"} == 1')
    assert up, "Prometheus never scraped the service"
    workers = _api_workers(server)
    cpu_before, used_before = _predict_cpu_ms(server), _cpu_ms(workers)
    sent = _send_traffic(server)
    cpu_during, used_during = _predict_cpu_ms(server) - cpu_before, _cpu_ms(workers) - used_before
    _fill_a_drift_window(server)
    traffic_done = time.time()
    # Counters only grow: wait until a scrape after the traffic is in (bounded).
    count_expr = 'sum(iris_request_latency_ms_count{endpoint="/predict",status="200"})'
    deadline = time.monotonic() + 30
    while _value(prometheus.wait_for(count_expr)) < 60 and time.monotonic() < deadline:
        time.sleep(0.5)
    # Two scrapes after the traffic, so rate() has points on both sides of it.
    prometheus.wait_for_scrapes_after(traffic_done, scrapes=2)

    findings: dict[str, object] = {}
    buckets = prometheus.query('iris_request_latency_ms_bucket{endpoint="/predict",status="200"}')
    assert {series["metric"]["le"] for series in buckets} >= {"1.0", "100.0", "+Inf"}
    findings["predict_200_count"] = _value(prometheus.query(count_expr))
    assert findings["predict_200_count"] >= 60
    # The dashboard's p99 is the quantile of the service's own buckets (both read at one
    # instant): not a latency threshold (those are `make bench`'s), the wiring of the query.
    at = time.time()
    increases = 'sum by (le) (increase(iris_request_latency_ms_bucket{endpoint="/predict"}[5m]))'
    p99 = _value(prometheus.query(f"histogram_quantile(0.99, {increases})", at=at))
    findings["predict_p99_ms"] = p99
    assert p99 > 0
    assert p99 == pytest.approx(_quantile(0.99, prometheus.query(increases, at=at)), rel=1e-6)
    # The resident-memory gauge is an API worker's own resident memory (as psutil reads it
    # now, traffic over), in MB; not a memory threshold.
    rss = _value(prometheus.query("max(iris_process_resident_memory_mb)"))
    findings["resident_memory_mb"] = rss
    actual = max(worker.memory_info().rss for worker in workers) / 2**20
    assert rss == pytest.approx(actual, rel=0.2), (rss, actual)
    # The CPU histogram counts process CPU time per request, in ms: the requests of the
    # traffic were sent one at a time, so together they cannot have used more CPU than the API
    # workers used meanwhile (psutil); Prometheus holds the service's own sum.
    assert 0 < cpu_during <= used_during, (cpu_during, used_during)
    cpu_sum = _value(prometheus.query('sum(iris_request_cpu_ms_sum{endpoint="/predict"})'))
    cpu_count = _value(prometheus.query('sum(iris_request_cpu_ms_count{endpoint="/predict"})'))
    findings["cpu_ms_per_predict"] = cpu_sum / cpu_count
    assert cpu_sum >= cpu_before + cpu_during - 1e-6
    classes = {
        series["metric"]["class_name"]: float(series["value"][1])
        for series in prometheus.query("iris_predictions_total")
    }
    findings["predictions_by_class"] = classes
    for name, count in sent.items():
        assert classes[name] >= count + 45, classes  # + the batch: ~50 flowers per class
    errors = _value(prometheus.query('sum(iris_errors_total{error="validation_error"})'))
    assert errors >= 5

    # Every query of the Grafana dashboard returns data from this Prometheus.
    empty = []
    for panel in report.dashboard_panels():
        for target in panel["targets"]:
            expr = report.promql(target["expr"])
            result = prometheus.query(expr)
            finite = [s for s in result if math.isfinite(float(s["value"][1]))]
            findings[f"{panel['title']} / {target['refId']}"] = len(finite)
            if not finite:
                empty.append((panel["title"], expr))
    assert not empty, empty

    # The alert rules load and evaluate without errors against the real series.
    rules = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
    shipped = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    names = {rule["alert"] for group in shipped["groups"] for rule in group["rules"]}
    assert names and set(health) == names, (health, names)  # every shipped rule loaded
    assert set(health.values()) <= {"ok", "unknown"}, health

    # `make report`'s Prometheus mode renders every panel from a query range.
    out_dir = tmp_path / "reports"
    assert (
        report.main(
            [
                "--prometheus-url",
                prometheus.url,
                "--minutes",
                "3",
                "--step",
                "2",
                "--out-dir",
                str(out_dir),
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "monitoring.png" in pngs and len(pngs) == len(report.dashboard_panels()) + 1
    print("Prometheus findings:", json.dumps(findings, indent=2))
    Path(PROJECT_ROOT / "reports").mkdir(exist_ok=True)
    (PROJECT_ROOT / "reports" / "prometheus-findings.json").write_text(
        json.dumps(findings, indent=2)
    )


@pytest.mark.server
def test_a_metric_file_left_empty_does_not_break_the_scrape(server: LocalServer) -> None:
    """A process killed as it created its metric file leaves it empty; the scrape still answers
    with every other worker's metrics (iris_service/monitoring/metric_files.py)."""
    assert server.bentoml_home is not None
    metric_dir = server.bentoml_home / "prometheus_multiproc_dir"
    assert any(metric_dir.glob("*.db")), "the server writes no metric files"
    requests.post(f"{server.url}/predict", json=SETOSA, timeout=10).raise_for_status()
    left_empty = metric_dir / "counter_999999999.db"  # no such process: one that was killed
    left_empty.touch()
    try:
        answer = requests.get(f"{server.url}/metrics", timeout=10)
    finally:
        left_empty.unlink()
    assert answer.status_code == 200, answer.text[:300]
    assert 'iris_request_latency_ms_count{endpoint="/predict",status="200"}' in answer.text
