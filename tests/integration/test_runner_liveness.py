"""A hung or killed runner costs no answer: the API workers compute what it would have
(readiness stays 200); a hung one fails liveness after the grace period (a restart brings
the batching back), a killed one is respawned by the supervisor. Against a real
`bentoml serve` with a short grace period, where batches of RUNNER_ROWS flowers go to the
runner."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.integration.reliability_support import assert_error_shape, healthy
from tests.support import VERSICOLOR
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server

GRACE_S = 8
PING_TIMEOUT_S = 1
# A call to the hung runner waits this long before the API worker computes the answer: an
# answer that took half of it waited for the runner (a causal bound, not a latency target).
CALL_TIMEOUT_S = 5
WATCH_LIMIT_S = 40.0
RUNNER_ROWS = 20
BATCH = {"flowers": [VERSICOLOR] * RUNNER_ROWS}


@pytest.fixture(scope="module")
def watched(
    trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    with bento_server(
        trained_state,
        tmp_path_factory.mktemp("runner-liveness"),
        IRIS_RUNNER_LIVENESS_GRACE_SECONDS=str(GRACE_S),
        IRIS_RUNNER_PING_TIMEOUT_SECONDS=str(PING_TIMEOUT_S),
        IRIS_RUNNER_CALL_TIMEOUT_SECONDS=str(CALL_TIMEOUT_S),
        IRIS_RUNNER_MIN_ROWS=str(RUNNER_ROWS),
    ) as running:
        yield running


@dataclass
class ProbeLog:
    """(seconds since the fault, /readyz status, /livez status) every 0.2 s."""

    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def probe(self, base_url: str) -> tuple[int, int]:
        statuses = []
        for path in ("/readyz", "/livez"):
            # A probe must answer from the recorded state, far inside a kubelet's timeout.
            response = requests.get(f"{base_url}{path}", timeout=3)
            if response.status_code != 200:
                assert_error_shape(
                    response.status_code, response.json(), response.headers.get("x-request-id")
                )
            statuses.append(response.status_code)
        self.samples.append((time.monotonic() - self.started, *statuses))
        return statuses[0], statuses[1]

    def first(
        self, readyz: int | None = None, livez: int | None = None, after: float = -1.0
    ) -> float | None:
        for at, ready, live in self.samples:
            if at <= after:
                continue
            if (readyz is None or ready == readyz) and (livez is None or live == livez):
                return at
        return None

    def watch_until(self, base_url: str, done, limit_s: float = WATCH_LIMIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if done(*self.probe(base_url)):
                return
            time.sleep(0.2)
        raise AssertionError(f"probes never reached the expected state: {self.samples[-5:]}")


STATUS_ROUTES = ("/ping", "/v2/health/ready", "/model")  # answered without the runner


def _answers(base_url: str) -> dict[str, tuple[int, float]]:
    """(status, seconds) of one flower, of a batch the runner would compute, and of the
    health and status routes (answered from the core's state and the heartbeat's record)."""
    timed = {}
    for path, body in (("/predict", VERSICOLOR), ("/predict_batch", BATCH)):
        asked = time.monotonic()
        response = requests.post(f"{base_url}{path}", json=body, timeout=20)
        timed[path] = (response.status_code, time.monotonic() - asked)
    for path in STATUS_ROUTES:
        asked = time.monotonic()
        response = requests.get(f"{base_url}{path}", timeout=20)
        timed[path] = (response.status_code, time.monotonic() - asked)
    return timed


def _in_runner(base_url: str) -> float:
    (value,) = [
        float(line.rsplit(" ", 1)[1])
        for line in requests.get(f"{base_url}/metrics", timeout=5).text.splitlines()
        if line.startswith('iris_inferences_total{computed_in="runner"}')
    ]
    return value


@pytest.mark.timeout(150)
def test_hung_runner_costs_no_answer_and_fails_liveness_after_the_grace(
    watched: LocalServer,
) -> None:
    assert healthy(watched.url)
    runner = watched.worker_pid()
    # Once the heartbeat has found the runner ready, batches go to it (bounded wait).
    deadline = time.monotonic() + 30
    while True:
        before = _in_runner(watched.url)
        assert _answers(watched.url)["/predict_batch"][0] == 200
        if _in_runner(watched.url) == before + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert _in_runner(watched.url) == before + 1  # the batch went to the runner
    stopped = ProbeLog()
    os.kill(runner, signal.SIGSTOP)
    try:
        answers = []
        deadline = time.monotonic() + WATCH_LIMIT_S
        while time.monotonic() < deadline:
            answers.append(_answers(watched.url))
            _, live = stopped.probe(watched.url)
            if live == 503:
                break
            time.sleep(0.2)
        answers.append(_answers(watched.url))
    finally:
        os.kill(runner, signal.SIGCONT)
    resumed = ProbeLog()
    resumed.watch_until(watched.url, lambda ready, live: ready == 200 and live == 200)
    assert healthy(watched.url)

    statuses = {(ready, live) for _, ready, live in stopped.samples}
    assert statuses <= {(200, 200), (200, 503)}, statuses  # ready throughout, never a 500
    assert {status for timed in answers for status, _ in timed.values()} == {200}
    # Once the heartbeat has found the runner silent, batches are computed at once.
    late = [timed["/predict_batch"][1] for timed in answers[3:]]
    assert late and max(late) < CALL_TIMEOUT_S / 2, late
    # The health and status routes never wait for the hung runner (a call would block).
    waited = [timed[path][1] for timed in answers for path in STATUS_ROUTES]
    assert max(waited) < CALL_TIMEOUT_S / 2, waited
    dead_s = stopped.first(livez=503)
    # Alive through the grace period (measured from the runner's last answer, up to a ping
    # period before the stop), dead soon after it.
    assert dead_s is not None and GRACE_S - 1.5 <= dead_s <= GRACE_S + PING_TIMEOUT_S + 3
    recovered_s = resumed.first(readyz=200, livez=200)
    print(
        f"\nrunner SIGSTOP: {len(answers)} rounds of answers all 200, /livez 503 after "
        f"{dead_s:.1f} s (grace {GRACE_S} s); after SIGCONT both 200 in {recovered_s:.1f} s"
    )


@pytest.mark.timeout(150)
def test_killed_runner_is_respawned_and_costs_no_answer(watched: LocalServer) -> None:
    assert healthy(watched.url)
    runner = watched.worker_pid()
    killed = ProbeLog()
    os.kill(runner, signal.SIGKILL)
    answers = []
    deadline = time.monotonic() + WATCH_LIMIT_S
    while time.monotonic() < deadline:
        answers.append(_answers(watched.url))
        killed.probe(watched.url)
        try:
            respawned: int | None = watched.worker_pid()
        except LookupError:
            respawned = None
        if respawned not in (None, runner):
            before = _in_runner(watched.url)
            answers.append(_answers(watched.url))
            if _in_runner(watched.url) > before:
                break  # the new runner computes batches again
        time.sleep(0.2)
    else:
        raise AssertionError(f"the runner was not respawned: {killed.samples[-5:]}")
    assert {status for timed in answers for status, _ in timed.values()} == {200}
    assert {ready for _, ready, _ in killed.samples} == {200}
    dead = [at for at, _, live in killed.samples if live != 200]
    # Until the supervisor's new runner answers, the old socket is silent; liveness holds
    # through the grace period and fails only for an outage longer than that.
    assert all(at > GRACE_S - 1.5 for at in dead), killed.samples
    print(
        f"\nrunner SIGKILL: {len(answers)} rounds of answers all 200, ready throughout; "
        f"/livez failed {len(dead)} of {len(killed.samples)} probes"
    )
