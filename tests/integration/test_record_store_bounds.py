"""The prediction store stays bounded: a starting server reads the labels its live windows
need and no more, the same number whether the store holds a thousand or a million (counted
in iris_records_read_at_start, not timed); with a single label, that one."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from iris_service.records.feedback import START_WINDOWS
from iris_service.records.store import RecordStore, sqlite_url
from tools.local_server import ProjectState, bento_server
from tools.report import take_snapshot

pytestmark = [pytest.mark.server, pytest.mark.timeout(420)]

WINDOW = 50


def _store_with_labels(path: Path, count: int) -> str:
    """An SQLite store holding `count` labels (written by SQL, a million in seconds)."""
    url = sqlite_url(path)
    RecordStore(url).migrate()
    connection = sqlite3.connect(path)
    connection.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO labels (key, server_request_id, request_id, ts, class_name, predicted,
                            correct, model_tag, predicted_at, endpoint)
        SELECT printf('%032x', i), printf('%032x', i), printf('%032x', i), 1000.0 + i,
               'setosa', 'setosa', 1, 'iris-classifier:old', 999.0 + i, '/predict'
        FROM n
        """,
        (count,),
    )
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as a live store's writers keep it
    connection.close()
    return url


@pytest.mark.parametrize("stored", [1, 1_000, 1_000_000])
def test_a_starting_server_reads_the_same_labels_whatever_the_history(
    trained_state: ProjectState, tmp_path: Path, stored: int
) -> None:
    url = _store_with_labels(tmp_path / "records.db", stored)
    with bento_server(
        trained_state, tmp_path, IRIS_RECORD_STORE_URL=url, IRIS_FEEDBACK_WINDOW=str(WINDOW)
    ) as server:
        api_workers = len(server.worker_pids("IrisClassifier"))
        deadline = time.monotonic() + 30  # a worker may finish starting after the first is ready
        while True:
            read = take_snapshot(server.url).select("iris_records_read_at_start")
            # One series per process (the runner, which reads no labels, shows 0).
            by_pid = {labels["pid"]: value for labels, value in read}
            readers = [value for value in by_pid.values() if value > 0]
            if len(readers) >= api_workers or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    # Every API worker read its windows, no more.
    assert readers == [min(stored, WINDOW * START_WINDOWS)] * api_workers, by_pid
    assert WINDOW * START_WINDOWS < 1_000
