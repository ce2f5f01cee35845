"""Start-up with a missing or damaged model, and a graceful restart under load that loses
no prediction record."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tests.integration.log_support import prediction_records, records_url
from tests.integration.reliability_support import REFUSED, TrafficLog, drive
from tools.local_server import (
    LocalServer,
    ProjectState,
    bento_server,
    bentoml_serve_command,
    free_port,
)

pytestmark = pytest.mark.server

GRACE_PERIOD_S = 10  # what `make serve` passes as --timeout-graceful-shutdown


def _serve_until_exit(
    state: ProjectState, bentoml_home: Path, **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        bentoml_serve_command(free_port()),
        cwd=PROJECT_ROOT,
        env=state.env(BENTOML_HOME=str(bentoml_home), **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if "error" in line.lower()]


@pytest.mark.timeout(180)
def test_missing_model_is_one_clear_line_and_a_failed_exit(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    result = _serve_until_exit(trained_state, tmp_path / "empty-store")
    assert result.returncode != 0
    [line] = _error_lines(result)
    assert "iris-classifier:latest is not in the BentoML store" in line
    assert "make train" in line


@pytest.mark.timeout(180)
def test_corrupt_model_is_one_clear_line_and_a_failed_exit(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    store = tmp_path / "damaged-store"
    shutil.copytree(trained_state.bentoml_home / "models", store / "models", symlinks=True)
    damaged = [path for path in (store / "models").rglob("model.onnx") if path.is_file()]
    assert damaged
    for path in damaged:
        path.write_bytes(b"not a model")
    result = _serve_until_exit(trained_state, store)
    assert result.returncode != 0
    [line] = _error_lines(result)
    assert "iris-classifier:" in line and "damaged" in line and "make train" in line


@pytest.mark.timeout(180)
def test_contradicting_batch_limits_are_one_clear_line_and_a_failed_exit(
    trained_state: ProjectState,
) -> None:
    """A batch limit above the runner's max batch, and a body limit too small for the
    largest batch: the server does not start, and says which setting to change."""
    home = trained_state.bentoml_home
    too_many = _serve_until_exit(trained_state, home, IRIS_MAX_BATCH_FLOWERS="5000")
    assert too_many.returncode != 0
    [line] = _error_lines(too_many)
    assert "IRIS_MAX_BATCH_FLOWERS=5000" in line and "max_batch_size=1000" in line
    too_small = _serve_until_exit(trained_state, home, IRIS_MAX_BODY_BYTES="20000")
    assert too_small.returncode != 0
    [line] = _error_lines(too_small)
    assert "IRIS_MAX_BODY_BYTES=20000 is too small" in line and "IRIS_MAX_BATCH_FLOWERS" in line


def _request_log_ids(server_log: str) -> set[str]:
    """Client request ids of every request the server read (its JSON request-log lines)."""
    ids = set()
    for line in server_log.splitlines():
        if line.startswith('{"event": "request"'):
            ids.add(json.loads(line)["request_id"])
    return ids


async def _traffic_with_sigterm(server: LocalServer, duration_s: float) -> tuple[TrafficLog, float]:
    """Load on `server`; SIGTERM to `bentoml serve` alone (as Kubernetes does) once 200
    requests were answered; the load goes on until the server has exited and 50 requests were
    refused at the connection (bounded by `duration_s`), then stops."""
    stop, log = asyncio.Event(), TrafficLog()
    traffic = asyncio.create_task(
        drive(f"{server.url}/predict", 16, duration_s, fresh_connections=True, stop=stop, log=log)
    )
    try:
        while len(log.with_status(200)) < 200:
            assert not traffic.done(), "the load ended before SIGTERM"
            await asyncio.sleep(0.05)
        os.kill(server.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        exited = await asyncio.to_thread(server.process.wait, GRACE_PERIOD_S + 20)
        assert exited is not None
        shutdown_s = time.monotonic() - signalled
        while log.statuses()[REFUSED] < 50 and not traffic.done():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
    return await traffic, shutdown_s


@pytest.mark.timeout(240)
def test_graceful_restart_under_load_loses_no_prediction(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    store = records_url(tmp_path)
    grace = ("--timeout-graceful-shutdown", str(GRACE_PERIOD_S))
    with bento_server(
        trained_state, tmp_path, serve_args=grace, IRIS_RECORD_STORE_URL=store
    ) as first:
        before, shutdown_s = asyncio.run(_traffic_with_sigterm(first, 60.0))
    first_log = first.log()
    with bento_server(  # the restarted server keeps the inputs out of its records
        trained_state,
        tmp_path,
        serve_args=grace,
        IRIS_RECORD_STORE_URL=store,
        IRIS_RECORD_INPUTS="false",
    ) as second:
        after = asyncio.run(drive(f"{second.url}/predict", 16, 30.0, max_requests=500))

    statuses = before.statuses()
    # In flight at SIGTERM: completed (200). New ones: refused at the connection, before
    # anything was sent. Any other failure is a dropped answer, except a connection-level
    # failure (reset, broken pipe, disconnect) of a request the server never read: a
    # connection still waiting in the listener's queue when it closes is reset by the kernel
    # (without Kubernetes' preStop delay, clients still connect while the server stops). The
    # server's request log, one line per request it handled, tells the two apart.
    answered = {status for status in statuses if isinstance(status, int)}
    assert answered == {200}, statuses  # no HTTP error: never a 5xx during the drain
    assert statuses[REFUSED] > 0, "no request was sent after the listener closed"
    read_by_server = _request_log_ids(first_log)
    assert len(read_by_server) >= statuses[200] > 0
    failed = [o.request_id for o in before.outcomes if o.status is None and o.error != REFUSED]
    assert not read_by_server.intersection(failed), "an answer was dropped after the request"
    assert set(after.statuses()) == {200}, after.statuses()
    assert shutdown_s < GRACE_PERIOD_S, shutdown_s
    assert "Traceback" not in first_log

    successes = before.with_status(200) + after.with_status(200)
    records = prediction_records(store)
    print(
        f"\ngraceful restart: {len(successes)} predictions answered ({dict(statuses)} before, "
        f"exit {shutdown_s:.1f} s after SIGTERM), {len(records)} records"
    )
    # One record per answer, under the server's own id, carrying the client's id.
    server_ids = [r["server_request_id"] for r in records]
    assert len(server_ids) == len(set(server_ids)), "a duplicated record"
    assert sorted(server_ids) == sorted(o.server_request_id for o in successes)
    assert {r["client_request_id"] for r in records} == {o.request_id for o in successes}
    assert all(r["outputs"]["class_name"] == "versicolor" for r in records)
    after_restart = {o.request_id for o in after.outcomes}
    for record in records:
        assert (record["inputs"] is not None) == (record["client_request_id"] not in after_restart)
