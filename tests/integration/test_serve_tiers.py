"""`make serve-tiers`: the API tier and two runner replicas behind a connection balancer
(nginx stream, like kube-proxy), all real `start-http-server` processes on 127.0.0.1.

Under wrk load of batches that go to the runner (16 connections), both replicas answer
(counted from each replica's own metrics); a replica killed under load costs no request and
/readyz stays 200; started again, it gets traffic again (connections have a bounded life).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.support import ensure_debian_packages
from tools.bench.load import LoadResult, run_wrk
from tools.bench.payloads import batch_body
from tools.bench.tiers import runner_calls
from tools.local_server import ProjectState, http_status
from tools.serve_tiers import Tiers, serve_tiers

pytestmark = pytest.mark.timeout(600)

BATCH_FLOWERS = 50
CONNECTIONS = 16
BODIES = [batch_body("service", BATCH_FLOWERS, offset) for offset in range(0, 150, 25)]
TIER_ENV = {
    # Every batch of the load goes to the runner tier, whatever the model's cost per row.
    "IRIS_RUNNER_MIN_ROWS": "10",
    # Short connection lives, so that a restarted replica is reached within the test.
    "IRIS_RUNNER_CONNECTION_MAX_AGE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def tiers(trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiers]:
    ensure_debian_packages("wrk", "nginx-light", "libnginx-mod-stream")
    log_dir = tmp_path_factory.mktemp("tiers")
    with serve_tiers(trained_state, log_dir, replicas=2, **TIER_ENV) as running:
        yield running


def load(tiers: Tiers, seconds: float) -> LoadResult:
    return run_wrk(tiers.api.url, "/predict_batch", BODIES, seconds, CONNECTIONS)


def assert_no_failure(result: LoadResult) -> None:
    assert result.requests > 100, result.raw_output
    assert result.errors == 0, (result.non_2xx, result.socket_errors, result.raw_output)


def test_both_replicas_answer_under_load(tiers: Tiers) -> None:
    before = [runner_calls(r) for r in tiers.runners]
    result = load(tiers, 6)
    after = [runner_calls(r) for r in tiers.runners]
    assert_no_failure(result)
    answered = [a - b for a, b in zip(after, before, strict=True)]
    # Runner calls batch several requests, so each replica counts calls, not requests.
    assert all(count > 0 for count in answered), answered
    assert tiers.api.worker_pids("IrisModelRunner") == []  # never built in the API process


def test_a_replica_killed_under_load_costs_no_request(tiers: Tiers) -> None:
    readyz: list[int | None] = []
    outcome: dict[str, LoadResult] = {}
    calls_before = runner_calls(tiers.runners[0])
    loader = threading.Thread(target=lambda: outcome.setdefault("load", load(tiers, 10)))
    loader.start()
    # The replica is killed while it serves the load: once its own count has grown (bounded).
    deadline = time.monotonic() + 8
    while runner_calls(tiers.runners[0]) <= calls_before:
        assert time.monotonic() < deadline and loader.is_alive(), "replica 0 got no call"
        time.sleep(0.1)
    tiers.kill_runner(0)
    assert http_status(tiers.runners[0].port, "GET", "/readyz") is None  # it is gone
    while loader.is_alive():
        readyz.append(http_status(tiers.api.port, "GET", "/readyz"))
        time.sleep(0.2)
    loader.join()
    assert_no_failure(outcome["load"])
    assert readyz and set(readyz) == {200}, readyz

    tiers.restart_runner(0)
    before = runner_calls(tiers.runners[0])
    # Load in short runs until the restarted replica has calls again (the balancer tries it
    # once its fail_timeout has passed; connections live 1 s): bounded, no failure meanwhile.
    deadline = time.monotonic() + 30
    while runner_calls(tiers.runners[0]) <= before:
        assert time.monotonic() < deadline, "the restarted replica got no call in 30 s"
        assert_no_failure(load(tiers, 3))
