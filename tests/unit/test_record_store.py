"""The prediction store on SQLite: the contract every engine keeps (PostgreSQL's tests run the
same operations against a real server in tests/integration/test_record_store_postgres.py)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from iris_service.records.store import (
    SCHEMA_VERSION,
    AlreadyLabelled,
    NewerSchema,
    RecordStore,
    StoreUnavailable,
    describe,
    engine_url,
    schema_version,
    sqlite_url,
)

pytestmark = pytest.mark.timeout(60)


def prediction(number: int, client_id: str | None = None, key_id: str | None = None) -> dict:
    return {
        "server_request_id": f"{number:032x}",
        "client_request_id": client_id,
        "api_key_id": key_id,
        "ts": 1_000.0 + number,
        "endpoint": "/predict",
        "protocol": "service",
        "model_tag": "iris-classifier:v1",
        "latency_ms": 0.5,
        "inputs": b'{"sepal_length": 5.1}',
        "outputs": {"class_name": "setosa", "model_tag": "iris-classifier:v1"},
    }


def label(key: str, ts: float = 2_000.0, correct: bool = True) -> dict:
    return {
        "key": key,
        "request_id": key,
        "server_request_id": key.split("/")[0],
        "index": None,
        "ts": ts,
        "class_name": "setosa",
        "predicted": "setosa" if correct else "virginica",
        "correct": correct,
        "model_tag": "iris-classifier:v1",
        "predicted_at": ts - 1,
        "endpoint": "/predict",
        "features": {"sepal_length": 5.1},
    }


def test_a_prediction_is_found_by_server_id_and_by_client_id_with_its_key(
    store: RecordStore,
) -> None:
    store.add_predictions(
        [prediction(1, "order-1", "alice"), prediction(2, "order-1", "bob"), prediction(3)]
    )
    found = store.prediction(f"{1:032x}")
    assert found is not None
    assert found["inputs"] == {"sepal_length": 5.1} and found["outputs"]["class_name"] == "setosa"
    assert store.server_ids("order-1", "alice") == [f"{1:032x}"]
    assert store.server_ids("order-1", "bob") == [f"{2:032x}"]
    assert store.server_ids("order-1", None) == []  # without a key: nobody's
    assert store.prediction("f" * 32) is None


def test_labels_are_all_or_none_and_once_per_flower(store: RecordStore) -> None:
    store.add_labels([label("a"), label("b/0"), label("b/1")])
    with pytest.raises(AlreadyLabelled) as again:
        store.add_labels([label("c"), label("b/1")])
    assert again.value.keys == ["b/1"]
    with pytest.raises(AlreadyLabelled) as twice:
        store.add_labels([label("d"), label("d")])
    assert twice.value.keys == ["d"]
    assert store.count_labels() == 3  # neither "c" nor "d" was kept
    assert [r["key"] for r in store.iter_labels(batch=2)] == ["a", "b/0", "b/1"]


def test_a_starting_reader_reads_the_newest_labels_only(store: RecordStore) -> None:
    store.add_labels([label(f"k{i}") for i in range(500)])
    cursor, recent = store.recent_labels(20)
    assert [r["key"] for r in recent] == [f"k{i}" for i in range(480, 500)]
    assert store.labels_after(cursor) == (cursor, [])
    store.add_labels([label("new")])
    assert [r["key"] for r in store.labels_after(cursor)[1]] == ["new"]


def test_retention_keeps_the_newest_rows_within_the_limits(tmp_path: Path) -> None:
    store = RecordStore(
        sqlite_url(tmp_path / "r.db"), retention_s=500, max_predictions=100, max_labels=10
    )
    store.migrate()
    store.add_predictions([prediction(i) for i in range(1_000)])
    store.add_labels([label(f"k{i}", ts=1_500.0 + i) for i in range(30)])
    store.enforce_retention(now=1_600.0)  # age: predictions before ts 1,100 go
    assert store.count_predictions() == 100
    assert store.prediction(f"{899:032x}") is None and store.prediction(f"{999:032x}")
    assert [r["key"] for r in store.iter_labels()] == [f"k{i}" for i in range(20, 30)]
    store.close()


def _write_labels(url: str, worker: int) -> int:
    store = RecordStore(url)
    store.migrate()
    accepted = 0
    for i in range(50):
        try:
            store.add_labels([label(f"shared-{i}")])
            accepted += 1
        except AlreadyLabelled:
            pass
    store.close()
    return accepted


def test_processes_racing_for_the_same_labels_record_each_once(tmp_path: Path) -> None:
    """Four processes (as API workers do) create the schema at once and send the same 50
    labels: the store keeps 50, and exactly 50 acceptances were answered."""
    url = sqlite_url(tmp_path / "shared.db")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        accepted = pool.starmap(_write_labels, [(url, worker) for worker in range(4)])
    store = RecordStore(url)
    assert store.count_labels() == 50
    assert sum(accepted) == 50
    store.close()


def test_a_store_written_by_a_newer_version_is_refused(store: RecordStore) -> None:
    with store.engine.begin() as connection:
        connection.execute(schema_version.insert(), {"version": SCHEMA_VERSION + 1})
    with pytest.raises(NewerSchema, match=f"schema version {SCHEMA_VERSION + 1}"):
        store.migrate()


def test_an_unreachable_database_is_store_unavailable_without_its_password() -> None:
    store = RecordStore("postgresql://iris:s3cret@127.0.0.1:9/records", busy_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as unavailable:
        store.add_predictions([prediction(1)])
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(unavailable.value) and "127.0.0.1" in str(unavailable.value)


def test_urls_name_the_shipped_driver_and_hide_passwords() -> None:
    assert engine_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "p@" not in describe("postgresql://u:p@h/db")
