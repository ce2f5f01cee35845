"""The writer of prediction records: off the request path, in batches, bounded, and losing
records (counted) rather than answers when the store cannot take them."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from iris_service.records.store import RecordStore, sqlite_url
from iris_service.records.writer import RecordWriter
from tests.unit.test_record_store import prediction

pytestmark = pytest.mark.timeout(60)


def _lost(reason: str) -> float:
    labels = {"reason": reason}
    return REGISTRY.get_sample_value("iris_prediction_records_lost_total", labels) or 0


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_records_are_written_in_batches_and_flush_waits_for_them(tmp_path: Path) -> None:
    store = RecordStore(sqlite_url(tmp_path / "r.db"))
    store.migrate()
    writer = RecordWriter(store, interval_s=0.05)
    for number in range(500):
        writer.submit(prediction(number))
    assert writer.flush()
    assert store.count_predictions() == 500
    writer.close()


def test_a_full_disk_costs_records_never_a_torn_store(tiny_fs: Path) -> None:
    store = RecordStore(sqlite_url(tiny_fs / "r.db"))
    store.migrate()
    writer = RecordWriter(store, interval_s=0.01)
    before = _lost("store_unavailable")
    big = {**prediction(0), "inputs": {"padding": "z" * 2_000}}
    for number in range(400):  # about 1 MB of records into 256 KiB
        writer.submit({**big, "server_request_id": f"{number:032x}"})
        if number % 20 == 0:
            writer.flush()
    writer.flush()
    lost = _lost("store_unavailable") - before
    kept = store.count_predictions()
    assert lost > 0 and kept > 0
    assert kept + lost == 400
    connection = sqlite3.connect(tiny_fs / "r.db")
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    writer.close()


def test_submit_never_waits_for_a_locked_store_and_counts_what_does_not_fit(
    tmp_path: Path,
) -> None:
    """While another process holds the database's write lock, submitting returns at once;
    rows beyond the waiting bound are counted lost, the rest written once the lock goes."""
    path = tmp_path / "r.db"
    store = RecordStore(sqlite_url(path), busy_timeout_s=10)
    store.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    writer = RecordWriter(store, max_waiting=50, interval_s=0.01)
    writer.submit(prediction(10_000))  # the writer takes it and waits for the lock
    time.sleep(0.2)
    before = _lost("queue_full")
    started = time.perf_counter()
    for number in range(200):
        writer.submit(prediction(number))
    submitting_s = time.perf_counter() - started
    queued_lost = _lost("queue_full") - before
    holder.execute("COMMIT")
    holder.close()
    assert writer.flush(timeout=20)
    # Not a speed threshold: a submit that waited for the lock would wait out the busy
    # timeout (10 s); 200 that do not wait take milliseconds, even on a loaded machine.
    assert submitting_s < 5.0
    assert queued_lost == 150
    assert store.count_predictions() == 51
    writer.close()


def test_the_writer_applies_the_retention(tmp_path: Path) -> None:
    store = RecordStore(sqlite_url(tmp_path / "r.db"), max_predictions=100)
    store.migrate()
    writer = RecordWriter(store, interval_s=0.01, retention_every_s=0.05)
    for number in range(1_000):
        writer.submit({**prediction(number), "ts": time.time()})
    writer.flush()
    deadline = time.monotonic() + 10
    while store.count_predictions() > 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.count_predictions() == 100
    writer.close()


def _write_from_a_process(url: str, worker: int) -> None:
    store = RecordStore(url)
    store.migrate()
    writer = RecordWriter(store, interval_s=0.01)
    for number in range(300):
        writer.submit(prediction(worker * 1_000 + number))
    writer.close()


def test_api_workers_share_one_sqlite_store(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_from_a_process, args=(url, n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert RecordStore(url).count_predictions() == 1_200


def test_retention_keeps_the_store_bounded_while_100000_predictions_are_written(
    tmp_path: Path,
) -> None:
    """Rows stay within 1.1 x the limit plus a batch, and the file stops growing once the
    limit is reached (SQLite reuses the pages retention frees)."""
    path = tmp_path / "r.db"
    store = RecordStore(sqlite_url(path), max_predictions=10_000)
    store.migrate()
    writer = RecordWriter(store, interval_s=0.01, retention_every_s=3_600)
    most_rows, size_at_30k = 0, 0
    for chunk in range(50):
        for number in range(chunk * 2_000, (chunk + 1) * 2_000):
            writer.submit({**prediction(number), "ts": time.time()})
        assert writer.flush(timeout=30)
        most_rows = max(most_rows, store.count_predictions())
        if chunk == 14:
            size_at_30k = path.stat().st_size
    writer.close()
    assert 10_000 <= store.count_predictions() <= most_rows <= 11_000 + 2_000
    assert path.stat().st_size <= 1.5 * size_at_30k  # (the WAL beside it: SQLite checkpoints it)


def test_the_cost_tool_measures_the_writer_thread(tmp_path: Path) -> None:
    from tools.record_store_cost import measure

    url = sqlite_url(tmp_path / "cost.db")
    result = measure(url, rows=3_000)
    assert result["cpu_us_per_row"] > 0 and result["rows_per_s"] > 0
    assert RecordStore(url).count_predictions() == 3_001  # the rows and the starter
