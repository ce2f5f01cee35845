"""Reading the service's prediction log from a test: every whole record, rotated files too.

The log is written by a thread behind the answers (iris_service/prediction_log.py), so a
test that wants the record of an answer it just had waits for it, within a bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def prediction_records(log: Path) -> list[dict]:
    """Every record of the log at `log` and of its rotated files, oldest first.

    A torn line (a record cut short) fails the calling test: the log writes whole lines.
    """
    rotated = sorted(log.parent.glob(f"{log.name}.*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    records: list[dict] = []
    for file in [*rotated, log]:
        if not file.exists():
            continue
        raw = file.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), f"a torn last record in {file.name}"
        records += [json.loads(line) for line in raw.splitlines()]  # a torn line fails here
    return records


def wait_for_records(
    log: Path, done: Callable[[list[dict]], bool], timeout_s: float = 10.0
) -> list[dict]:
    """The log's records once `done(records)` holds, or as they are after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    records = prediction_records(log)
    while not done(records) and time.monotonic() < deadline:
        time.sleep(0.1)
        records = prediction_records(log)
    return records


def records_by_request_id(log: Path, *request_ids: str, timeout_s: float = 10.0) -> dict:
    """The records of the answers with these server request ids, keyed by id (each waited for)."""
    wanted = set(request_ids)
    records = wait_for_records(
        log, lambda found: wanted <= {r["request_id"] for r in found}, timeout_s
    )
    return {r["request_id"]: r for r in records if r["request_id"] in wanted}
