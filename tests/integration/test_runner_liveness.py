"""A hung runner fails readiness at once and liveness after the grace period; a killed one is
respawned by the supervisor. Against a real `bentoml serve` with a short grace period."""

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
WATCH_LIMIT_S = 40.0


@pytest.fixture(scope="module")
def watched(
    trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    with bento_server(
        trained_state,
        tmp_path_factory.mktemp("runner-liveness"),
        IRIS_RUNNER_LIVENESS_GRACE_SECONDS=str(GRACE_S),
        IRIS_RUNNER_PING_TIMEOUT_SECONDS=str(PING_TIMEOUT_S),
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


@pytest.mark.timeout(150)
def test_hung_runner_fails_readiness_at_once_and_liveness_after_the_grace(
    watched: LocalServer,
) -> None:
    assert healthy(watched.url)
    runner = watched.worker_pid()
    stopped = ProbeLog()
    os.kill(runner, signal.SIGSTOP)
    try:
        stopped.watch_until(watched.url, lambda ready, live: ready == 503)
        # Meanwhile a prediction is refused at once, not left to the runner call's timeout.
        asked = time.monotonic()
        answer = requests.post(f"{watched.url}/predict", json=VERSICOLOR, timeout=20)
        refused_in_s = time.monotonic() - asked
        assert answer.status_code == 503 and refused_in_s < 1.0, (answer.status_code, refused_in_s)
        assert answer.json()["error"] == "model_not_ready" and answer.headers["retry-after"]
        stopped.watch_until(watched.url, lambda ready, live: live == 503)
    finally:
        os.kill(runner, signal.SIGCONT)
    resumed = ProbeLog()
    resumed.watch_until(watched.url, lambda ready, live: ready == 200 and live == 200)
    assert healthy(watched.url)

    statuses = {(ready, live) for _, ready, live in stopped.samples}
    assert statuses <= {(200, 200), (503, 200), (503, 503)}, statuses  # never a 500
    not_ready_s = stopped.first(readyz=503)
    dead_s = stopped.first(livez=503)
    assert not_ready_s is not None and not_ready_s <= PING_TIMEOUT_S + 3, stopped.samples[:20]
    # Alive through the grace period (measured from the runner's last answer, up to a ping
    # period before the stop), dead soon after it.
    assert dead_s is not None and GRACE_S - 1.5 <= dead_s <= GRACE_S + PING_TIMEOUT_S + 3
    recovered_s = resumed.first(readyz=200, livez=200)
    print(
        f"\nrunner SIGSTOP: /readyz 503 after {not_ready_s:.1f} s, /livez 503 after "
        f"{dead_s:.1f} s (grace {GRACE_S} s); /predict 503 in {refused_in_s * 1000:.0f} ms; "
        f"after SIGCONT both 200 in {recovered_s:.1f} s"
    )


@pytest.mark.timeout(150)
def test_killed_runner_is_respawned_and_readiness_follows(watched: LocalServer) -> None:
    assert healthy(watched.url)
    runner = watched.worker_pid()
    killed = ProbeLog()
    os.kill(runner, signal.SIGKILL)
    killed.watch_until(
        watched.url, lambda ready, live: ready == 200 and killed.first(readyz=503) is not None
    )
    assert watched.worker_pid() != runner
    assert healthy(watched.url)
    not_ready_s = killed.first(readyz=503)
    assert not_ready_s is not None and not_ready_s <= PING_TIMEOUT_S + 3, killed.samples[:20]
    ready_s = killed.first(readyz=200, after=not_ready_s)
    dead = [at for at, _, live in killed.samples if live != 200]
    # Until the supervisor's new runner answers, the old socket is silent; liveness holds
    # through the grace period and fails only for an outage longer than that.
    assert all(at > GRACE_S - 1.5 for at in dead), killed.samples
    print(
        f"\nrunner SIGKILL: /readyz 503 after {not_ready_s:.1f} s, 200 again after "
        f"{ready_s:.1f} s; /livez failed {len(dead)} of {len(killed.samples)} probes"
    )
