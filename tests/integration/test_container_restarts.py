"""A crashed or hung model runner inside the real image is restarted by the container engine.

In a container BentoML does not respawn a dead worker: `bentoml serve` exits, and the engine's
restart policy (`--restart=on-failure`; on Kubernetes the kubelet) starts the container again.
A hung runner keeps every process alive (and the API workers answer every prediction without
it), so only the liveness check sees it: `/livez` answers 503 once the runner has been silent
for longer than IRIS_RUNNER_LIVENESS_GRACE_SECONDS, and podman's health check with
`--health-on-failure=restart` restarts the container. Podman runs health checks from systemd
timers, which a CI container does not have, so the test plays the timer: it runs
`podman healthcheck run` once a second, as the kubelet runs its probe, and
stops at the restart (a podman deployment whose timer goes on needs `--health-start-period`
longer than the start, as Kubernetes has its startupProbe: podman counts a failure during a
start as one of the retries, and does not end the start period at the first success).

Each test prints its timeline (seconds after the fault); docs/reliability.md reports them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.integration.container_support import (
    BUILD_TIMEOUT_S,
    container_logs,
    running_container,
    wait_ready,
)
from tests.support import SETOSA

GRACE_S = 6  # IRIS_RUNNER_LIVENESS_GRACE_SECONDS in these containers (default 30)
RECOVERY_TIMEOUT_S = 120
LIVEZ_PROBE = (
    'python3 -c "import urllib.request; '
    "urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=3)\""
)
RESTARTING = (
    "--restart=on-failure",
    "-e",
    "IRIS_API_KEYS_REQUIRED=false",  # explicitly open (the image requires a key): as container-run
    "-e",
    f"IRIS_RUNNER_LIVENESS_GRACE_SECONDS={GRACE_S}",
    "--health-cmd",
    LIVEZ_PROBE,
    "--health-interval=disable",  # the test is the timer (see the module docstring)
    "--health-retries=2",
    "--health-on-failure=restart",
)

pytestmark = [pytest.mark.container, pytest.mark.timeout(BUILD_TIMEOUT_S)]


@pytest.fixture
def restarting(image) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    backend, env, tag = image
    if backend == "docker":
        pytest.skip("docker has no --health-on-failure; these restarts are podman's")
    with running_container(backend, env, tag, options=RESTARTING, rm=False) as (base, cli, name):
        yield base, cli, name, env


def _inspect(cli: str, name: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [cli, "inspect", name], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(out.stdout)[0]


def _started_at(cli: str, name: str, env: dict[str, str]) -> str:
    """When the container's current run started. A restart by the restart policy also
    counts in RestartCount; one by the health check (`--health-on-failure=restart`) does
    not, so a changed start time is what tells both."""
    return str(_inspect(cli, name, env)["State"]["StartedAt"])


def _wait_for_restart(
    cli: str, name: str, env: dict[str, str], first_start: str, tick: Callable[[], None]
) -> float:
    """Seconds until the container runs again after a restart; `tick` runs every second."""
    start = time.monotonic()
    while _started_at(cli, name, env) == first_start:
        assert time.monotonic() - start < RECOVERY_TIMEOUT_S, container_logs(cli, name, env)
        tick()
        time.sleep(1.0)
    return time.monotonic() - start


def _runner_pid(cli: str, name: str, env: dict[str, str]) -> int:
    """The runner worker's pid inside the container (`podman top`)."""
    out = subprocess.run(
        [cli, "top", name, "pid", "args"], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    pids = [line.split()[0] for line in out.splitlines() if "IrisModelRunner" in line]
    assert len(pids) == 1, out
    return int(pids[0])


def _signal_runner(cli: str, name: str, env: dict[str, str], signal_name: str) -> float:
    """Send the runner `signal_name`; the wall-clock time it was sent, as read in the container
    (same kernel clock as here). `podman exec` itself can take seconds on a busy machine, so
    its return is no measure of when the signal went."""
    pid = _runner_pid(cli, name, env)
    script = f"import os, signal, time; os.kill({pid}, signal.{signal_name}); print(time.time())"
    sent = subprocess.run(
        [cli, "exec", name, "python3", "-c", script],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return float(sent.stdout.strip())


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def _serves(base: str) -> None:
    answer = requests.post(f"{base}/predict", json=SETOSA, timeout=10)
    assert answer.status_code == 200 and answer.json()["class_name"] == "setosa", answer.text


def test_a_killed_runner_restarts_the_container(restarting) -> None:
    base, cli, name, env = restarting
    _serves(base)
    first_start = _started_at(cli, name, env)
    killed = _signal_runner(cli, name, env, "SIGKILL")
    # `bentoml serve` exits (no respawn in a container); the restart policy starts it again.
    restarted_s = _wait_for_restart(cli, name, env, first_start, tick=lambda: None)
    assert _inspect(cli, name, env)["RestartCount"] >= 1  # the policy, not a health check
    assert wait_ready(base, RECOVERY_TIMEOUT_S) is not None, container_logs(cli, name, env)
    _serves(base)
    print(
        f"\nSIGKILL of the runner: container restarted {restarted_s:.1f} s after the kill, "
        f"ready {time.time() - killed:.1f} s after it"
    )


def test_a_hung_runner_fails_liveness_and_is_restarted(restarting) -> None:
    base, cli, name, env = restarting
    _serves(base)
    # The health check passes while the runner answers (exit status 0).
    subprocess.run([cli, "healthcheck", "run", name], env=env, check=True, timeout=30)
    first_start = _started_at(cli, name, env)
    stopped = _signal_runner(cli, name, env, "SIGSTOP")
    seen: dict[str, float] = {}

    answered: list[int | None] = []

    def probe() -> None:
        """What the kubelet does once a second: readiness, liveness, the health check; and a
        client's prediction, which the API worker answers without the runner."""
        now = time.time() - stopped
        for route in ("readyz", "livez"):
            if route not in seen and _status(f"{base}/{route}") == 503:
                seen[route] = now
        if "livez" not in seen:
            try:
                answered.append(
                    requests.post(f"{base}/predict", json=SETOSA, timeout=5).status_code
                )
            except requests.RequestException:
                answered.append(None)
        subprocess.run([cli, "healthcheck", "run", name], env=env, capture_output=True, timeout=30)

    restarted_s = _wait_for_restart(cli, name, env, first_start, tick=probe)
    assert wait_ready(base, RECOVERY_TIMEOUT_S) is not None, container_logs(cli, name, env)
    _serves(base)
    unready_s, unalive_s = seen.get("readyz"), seen.get("livez")
    print(
        f"\nSIGSTOP of the runner: {len(answered)} predictions until /livez 503 after "
        f"{unalive_s} s ({set(answered)}), /readyz 503 after {unready_s} s, container "
        f"restarted {restarted_s:.1f} s after the stop, ready {time.time() - stopped:.1f} s "
        f"after it"
    )
    assert unalive_s is not None, seen
    # The API workers answer without the runner: ready, and every prediction answered, until
    # the runner has been silent for the grace period and liveness restarts the container.
    assert unready_s is None or unready_s >= unalive_s, seen
    assert answered and set(answered) == {200}, answered
    assert unalive_s >= GRACE_S - 2  # silent since the last ping (one a second) before the stop
