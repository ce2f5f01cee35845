"""The prediction store (SQLite) on a real full file system: answers stay whole, the store
stays whole, lost records are counted (iris_service/records/writer.py)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.log_support import prediction_records, records_url
from tests.integration.reliability_support import drive, healthy
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server

TMPFS_BYTES = 256 * 1024
REQUESTS = 2_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs for the store, unmounted when the test ends."""
    mount_point = tmp_path / "log-disk"
    mount_point.mkdir()
    size = f"size={TMPFS_BYTES // 1024}k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _lost_records(server: LocalServer) -> dict[str, float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "iris_prediction_records_lost_total"
    }


@pytest.mark.timeout(420)  # includes training the session's model when this runs first
def test_a_full_store_disk_costs_records_never_answers(
    trained_state: ProjectState, tmp_path: Path, small_disk: Path
) -> None:
    with bento_server(
        trained_state,
        tmp_path / "server",
        IRIS_RECORD_STORE_URL=records_url(small_disk),
    ) as server:
        started = time.monotonic()
        traffic = asyncio.run(drive(f"{server.url}/predict", 8, 60.0, max_requests=REQUESTS))
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 15  # the writer thread runs behind the answers
        while time.monotonic() < deadline:
            lost = _lost_records(server)
            records = prediction_records(records_url(small_disk))
            if len(records) + sum(lost.values()) >= len(traffic.outcomes):
                break
            time.sleep(0.2)
        still_healthy = healthy(server.url)
        server_log = server.log()

    statuses = traffic.statuses()
    free = shutil.disk_usage(small_disk).free
    print(
        f"\nfull disk: {len(traffic.outcomes)} requests in {elapsed:.1f} s, statuses "
        f"{dict(statuses)}; {len(records)} records kept, lost {lost}; "
        f"{free} bytes free on the {TMPFS_BYTES // 1024} KiB store disk"
    )
    # Every answer complete and well formed (drive parses each body; a cut answer or a
    # connection error would show as a non-200 outcome).
    assert statuses == {200: len(traffic.outcomes)}, statuses
    assert len(traffic.outcomes) >= REQUESTS * 0.9
    assert all(o.body["class_name"] == "versicolor" for o in traffic.outcomes)
    assert still_healthy
    # The disk really filled, and what could not be written was counted; the store is whole.
    assert free < 64 * 1024
    assert lost.get("store_unavailable", 0) > 0
    connection = sqlite3.connect(small_disk / "records.db")
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    assert len(records) + sum(lost.values()) == len(traffic.outcomes)
    answered = {o.server_request_id for o in traffic.outcomes}
    kept = [record["server_request_id"] for record in records]
    assert len(kept) == len(set(kept)) and set(kept) <= answered
    assert "Traceback" not in server_log
