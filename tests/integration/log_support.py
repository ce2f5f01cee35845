"""Reading the service's prediction store from a test.

Records reach the store from a writer thread behind the answers
(iris_service/records/writer.py), so a test that wants the record of an answer it just had
waits for it, within a bound. The store is the server's own SQLite file (`records_url`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from iris_service.records.store import RecordStore, sqlite_url


def records_url(folder: Path) -> str:
    """The SQLite store a test server keeps under `folder` (pass it as IRIS_RECORD_STORE_URL)."""
    return sqlite_url(folder / "records.db")


def prediction_records(url: str) -> list[dict]:
    """Every prediction record of the store at `url`, oldest first."""
    store = RecordStore(url)
    try:
        return list(store.iter_predictions())
    finally:
        store.close()


def wait_for_records(
    url: str, done: Callable[[list[dict]], bool], timeout_s: float = 10.0
) -> list[dict]:
    """The store's prediction records once `done(records)` holds, or as they are after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    records = prediction_records(url)
    while not done(records) and time.monotonic() < deadline:
        time.sleep(0.1)
        records = prediction_records(url)
    return records


def records_by_request_id(url: str, *request_ids: str, timeout_s: float = 10.0) -> dict:
    """The records of the answers with these server request ids, keyed by id (each waited for)."""
    wanted = set(request_ids)
    records = wait_for_records(
        url, lambda found: wanted <= {r["server_request_id"] for r in found}, timeout_s
    )
    return {r["server_request_id"]: r for r in records if r["server_request_id"] in wanted}
