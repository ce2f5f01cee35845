"""One prediction store for every replica: two `bentoml serve` instances ("replicas", each
with its own BentoML home and working files) sharing a real PostgreSQL server started here.

- A prediction answered by one replica is labelled through the other.
- `iris_live_accuracy` agrees on both.
- The same label sent to both at once is recorded once.
- PostgreSQL stopped mid-traffic: every answer is still 200, the lost records are counted,
  /feedback answers 503 with Retry-After; when PostgreSQL is back, records and labels are
  kept again without a restart of the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests

from iris_service.records.store import RecordStore
from tests.integration.postgres_support import PostgresServer, start_postgres
from tests.integration.reliability_support import TrafficLog, drive
from tests.support import SETOSA, VERSICOLOR
from tests.unit.test_record_store import label, prediction
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.report import take_snapshot

pytestmark = [pytest.mark.server, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def replicas(
    trained_state: ProjectState, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalServer, LocalServer]]:
    with ExitStack() as stack:
        started = tuple(
            stack.enter_context(
                bento_server(
                    trained_state,
                    tmp_path_factory.mktemp(f"replica-{name}"),
                    IRIS_RECORD_STORE_URL=postgres.url,
                    IRIS_RECORD_STORE_SHARED_REQUIRED="true",
                )
            )
            for name in ("a", "b")
        )
        yield started  # type: ignore[misc]


def _predict(server: LocalServer, flower: dict) -> requests.Response:
    answer = requests.post(f"{server.url}/predict", json=flower, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def _label(server: LocalServer, request_id: str, class_name: str) -> requests.Response:
    body = {"request_id": request_id, "class_name": class_name}
    return requests.post(f"{server.url}/feedback", json=body, timeout=15)


def _live(server: LocalServer) -> dict:
    answer = requests.get(f"{server.url}/live_quality", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["models"]


def test_the_store_keeps_its_contract_on_postgresql(postgres: PostgresServer) -> None:
    """The operations the SQLite unit tests check, on PostgreSQL."""
    store = RecordStore(postgres.url)
    store.migrate()
    store.add_predictions([prediction(900_001, "order-9", "alice"), prediction(900_002)])
    assert store.server_ids("order-9", "alice") == [f"{900_001:032x}"]
    assert store.server_ids("order-9", "bob") == []
    assert store.prediction(f"{900_002:032x}")["outputs"]["class_name"] == "setosa"
    store.add_labels([label("pg-a"), label("pg-b")])
    with pytest.raises(Exception) as again:
        store.add_labels([label("pg-c"), label("pg-a")])
    assert type(again.value).__name__ == "AlreadyLabelled" and again.value.keys == ["pg-a"]
    keys = [record["key"] for record in store.iter_labels()]
    assert "pg-a" in keys and "pg-c" not in keys
    store.close()


def test_a_prediction_of_one_replica_is_labelled_through_the_other(
    replicas: tuple[LocalServer, LocalServer],
) -> None:
    a, b = replicas
    answered = _predict(a, VERSICOLOR)
    server_id = answered.headers["x-server-request-id"]
    labelled = _label(b, server_id, "versicolor")
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["labels"][0]["model_tag"] == answered.json()["model_tag"]
    # A client's own X-Request-ID works through the other replica too (keys are off here).
    own = requests.post(
        f"{a.url}/predict", json=SETOSA, headers={"X-Request-ID": "replica-order-1"}, timeout=10
    )
    assert own.status_code == 200
    assert _label(b, "replica-order-1", "setosa").status_code == 200


def test_live_accuracy_is_the_same_on_both_replicas(
    replicas: tuple[LocalServer, LocalServer],
) -> None:
    a, b = replicas
    for server, flower, truth in ((a, SETOSA, "setosa"), (b, VERSICOLOR, "virginica")):
        server_id = _predict(server, flower).headers["x-server-request-id"]
        assert _label(server, server_id, truth).status_code == 200
    seen_a, seen_b = _live(a), _live(b)  # each reads the labels the other took
    assert seen_a == seen_b and seen_a
    for figures in seen_a.values():
        assert figures["labelled"] > 0 and 0 <= figures["accuracy"] <= 1
    deadline = time.monotonic() + 10  # the gauges follow within the follower's period
    while time.monotonic() < deadline:
        gauges = [
            dict(
                (labels["model_version"], value)
                for labels, value in take_snapshot(server.url).select("iris_live_accuracy")
            )
            for server in (a, b)
        ]
        if gauges[0] == gauges[1] and gauges[0]:
            break
        time.sleep(0.5)
    assert gauges[0] == gauges[1] and gauges[0], gauges
    for tag, figures in seen_a.items():
        assert gauges[0][tag] == pytest.approx(figures["accuracy"])


def test_the_same_label_sent_to_both_replicas_at_once_is_recorded_once(
    replicas: tuple[LocalServer, LocalServer], postgres: PostgresServer
) -> None:
    a, b = replicas
    server_ids = [_predict(a, SETOSA).headers["x-server-request-id"] for _ in range(20)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda job: _label(job[0], job[1], "setosa"),
                [(server, sid) for sid in server_ids for server in (a, b, a, b)],
            )
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 20 + [409] * 60, statuses
    store = RecordStore(postgres.url)
    keys = [record["key"] for record in store.iter_labels()]
    store.close()
    assert all(keys.count(sid) == 1 for sid in server_ids)


def _lost(server: LocalServer) -> float:
    samples = take_snapshot(server.url).select("iris_prediction_records_lost_total")
    return sum(value for _, value in samples)


def test_postgresql_down_costs_records_and_labels_never_answers(
    replicas: tuple[LocalServer, LocalServer], postgres: PostgresServer
) -> None:
    a, _ = replicas
    lost_before = _lost(a)

    async def traffic_while_postgres_stops() -> TrafficLog:
        """Answers before the stop, then traffic until the service counts records lost and
        100 more answers have come (bounded by the clock, not a fixed window)."""
        stop, log = asyncio.Event(), TrafficLog()
        load = asyncio.create_task(drive(f"{a.url}/predict", 8, 60.0, stop=stop, log=log))
        try:
            while len(log.outcomes) < 200:
                assert not load.done(), "the traffic ended before PostgreSQL stopped"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(postgres.stop)
            while await asyncio.to_thread(_lost, a) == lost_before:
                assert not load.done(), "no record was counted lost while PostgreSQL was down"
                await asyncio.sleep(0.2)
            count = len(log.outcomes)
            while len(log.outcomes) < count + 100 and not load.done():
                await asyncio.sleep(0.05)
        finally:
            stop.set()
        return await load

    traffic = asyncio.run(traffic_while_postgres_stops())
    assert set(traffic.statuses()) == {200}, traffic.statuses()
    server_id = _predict(a, SETOSA).headers["x-server-request-id"]
    refused = _label(a, server_id, "setosa")
    assert refused.status_code == 503 and refused.json()["error"] == "store_unavailable"
    assert "Retry-After" in refused.headers
    assert requests.get(f"{a.url}/readyz", timeout=10).status_code == 200
    deadline = time.monotonic() + 15
    while _lost(a) == lost_before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _lost(a) > lost_before

    postgres.start()
    deadline = time.monotonic() + 30  # the engine replaces its dropped connections
    while True:
        server_id = _predict(a, VERSICOLOR).headers["x-server-request-id"]
        answer = _label(a, server_id, "versicolor")
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert answer.status_code == 200, answer.text
