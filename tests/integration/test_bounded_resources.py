"""Nothing a client sends grows the server: tens of thousands of distinct requests, without
and with the API key, against a real `bentoml serve` (issue 23, family 1).

Every resource is counted structurally, never by time or resident memory: the metric series
the service exposes (the same set after as before), the bytes of the multiprocess metric
files, the rows of the prediction store (within its retention bound), and the length of every
request-log line. A first round of each kind of request creates the series a kind may
legitimately have (a status code per route); the measured rounds then send thousands of
distinct paths, model names and versions, request ids and flowers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from iris_service.names import MODEL_NAME
from iris_service.records.store import RecordStore
from tests.integration.log_support import records_url
from tests.support import SETOSA
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.report import take_snapshot

pytestmark = pytest.mark.server

API_KEY = "bounded-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_PREDICTIONS = 1_000
CONCURRENCY = 16
V2_BODY = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}],
    "outputs": [{"name": "predict"}],
}


@pytest.fixture(scope="module")
def server(
    trained_state: ProjectState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    logs = tmp_path_factory.mktemp("bounded")
    with bento_server(
        trained_state,
        logs,
        IRIS_API_KEY=API_KEY,
        IRIS_DRIFT_MIN_FLOWERS="20",
        IRIS_RECORD_STORE_URL=records_url(logs),
        IRIS_RECORD_MAX_PREDICTIONS=str(MAX_PREDICTIONS),
    ) as running:
        yield running


def _requests(kind: str, count: int) -> Iterator[tuple[str, str, dict, object]]:
    """`count` distinct requests of one kind: (method, path, headers, JSON body or None)."""
    for _ in range(count):
        token = os.urandom(8).hex()
        if kind == "unknown path, no key":
            yield "GET", f"/{token}", {}, None
        elif kind == "V2 model name, no key":
            yield "POST", f"/v2/models/{token}/infer", {}, V2_BODY
        elif kind == "unknown path":
            yield "GET", f"/{token}/{token}", AUTH, None
        elif kind == "V2 model name":
            yield "POST", f"/v2/models/{token}/infer", AUTH, V2_BODY
        elif kind == "V2 model version":
            yield "POST", f"/v2/models/{MODEL_NAME}/versions/{token}/infer", AUTH, V2_BODY
        elif kind == "prediction with its own request id":
            flower = {**SETOSA, "sepal_length": 4.0 + int(token[:4], 16) / 65_536}
            yield "POST", "/predict", {**AUTH, "X-Request-ID": f"client-{token}"}, flower
        else:
            raise ValueError(kind)


KINDS = {  # distinct requests per kind in the measured round: 20,000 in all
    "unknown path, no key": 5_000,
    "V2 model name, no key": 3_000,
    "unknown path": 4_000,
    "V2 model name": 2_500,
    "V2 model version": 2_500,
    "prediction with its own request id": 3_000,
}
EXPECTED = {
    "unknown path, no key": 401,
    "V2 model name, no key": 401,
    "unknown path": 404,
    "V2 model name": 404,
    "V2 model version": 404,
    "prediction with its own request id": 200,
}


async def _send(base: str, plan: list[tuple[str, str, dict, object]]) -> Counter:
    """Every request of `plan` on CONCURRENCY connections; the statuses by (path kind)."""
    statuses: Counter = Counter()
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                method, path, headers, body = queue.get_nowait()
                data = None if body is None else json.dumps(body)
                if data is not None:
                    headers = {**headers, "Content-Type": "application/json"}
                async with session.request(method, base + path, data=data, headers=headers) as r:
                    await r.read()
                    statuses[r.status] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses


def _round(server: LocalServer, scale: float) -> dict[str, Counter]:
    by_kind = {}
    for kind, count in KINDS.items():
        plan = list(_requests(kind, max(1, int(count * scale))))
        by_kind[kind] = asyncio.run(_send(server.url, plan))
    return by_kind


def _series(server: LocalServer) -> set[tuple]:
    return set(take_snapshot(server.url).samples)


def _per_process(series: set[tuple]) -> tuple[set[tuple], set[str]]:
    """The series with their `pid` label left out, and the pids seen. A gauge of a process
    (BentoML's last-request time, a worker's drift) is one series per process: a worker that
    answered its first request of a kind only in the measured round adds one, bounded by
    the processes, not by the requests."""
    without_pid = {(name, tuple(kv for kv in labels if kv[0] != "pid")) for name, labels in series}
    pids = {value for _, labels in series for key, value in labels if key == "pid"}
    return without_pid, pids


def _bytes(folder: Path, pattern: str = "*") -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern) if path.is_file())


@pytest.mark.timeout(420)  # includes training the session's model when this runs first
def test_twenty_thousand_distinct_requests_leave_every_resource_within_its_bound(
    server: LocalServer,
) -> None:
    home = Path(server.log_path).parent / f"bentoml-home-{server.port}"
    metric_files = home / "prometheus_multiproc_dir"
    log_dir = Path(server.log_path).parent
    # Each kind a few dozen times first: its legitimate series exist (a status per route; the
    # drift gauges once a worker has seen IRIS_DRIFT_MIN_FLOWERS flowers).
    _round(server, scale=0.05)
    series_before, metric_bytes_before = _series(server), _bytes(metric_files)
    assert metric_bytes_before > 0, f"no metric files in {metric_files}"

    by_kind = _round(server, scale=1.0)
    series_after, metric_bytes_after = _series(server), _bytes(metric_files)
    stored = RecordStore(records_url(log_dir)).count_predictions()

    sent = sum(sum(statuses.values()) for statuses in by_kind.values())
    print(
        f"\n{sent} distinct requests: {len(series_before)} metric series before, "
        f"{len(series_after)} after; metric files {metric_bytes_before} -> "
        f"{metric_bytes_after} bytes; {stored} stored predictions"
    )
    for kind, statuses in by_kind.items():
        assert statuses == {EXPECTED[kind]: KINDS[kind]}, (kind, statuses)
    assert sent >= 20_000
    (kinds_before, _), (kinds_after, pids) = _per_process(series_before), _per_process(series_after)
    new_series = sorted(kinds_after - kinds_before)
    assert new_series == [], new_series[:10]
    assert pids <= {str(pid) for pid in server.worker_pids()}, pids
    # A worker's file may grow once (files double) when it first writes a series another
    # worker created while priming; thousands of new series would multiply the bytes.
    assert metric_bytes_after <= 2 * metric_bytes_before
    # The store's retention runs after each writer (two API workers) wrote a tenth of the
    # limit: at most the limit x (1 + 2 / 10) plus two batches; 3,000 were answered.
    assert MAX_PREDICTIONS <= stored <= 1.1 * MAX_PREDICTIONS + 200
    # One request-log line per measured request, each of bounded length whatever was sent.
    lines = [line for line in server.log().splitlines() if line.startswith('{"event": "request"')]
    assert len(lines) >= KINDS["prediction with its own request id"]
    assert max(map(len, lines)) <= 400, max(lines, key=len)
