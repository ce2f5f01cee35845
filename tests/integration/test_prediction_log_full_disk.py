"""The prediction log on a real full file system: answers stay whole, records stay whole,
lost records are counted (iris_service/prediction_log.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.log_support import prediction_records
from tests.integration.reliability_support import drive, healthy
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server

TMPFS_BYTES = 256 * 1024
MAX_BYTES = 200 * 1024  # one rotation, then the disk is full long before a second one
REQUESTS = 2_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs for the log, unmounted when the test ends."""
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
        if sample.name == "iris_prediction_log_lost_total"
    }


@pytest.mark.timeout(420)  # includes training the session's model when this runs first
def test_a_full_log_disk_costs_records_never_answers(
    trained_state: ProjectState, tmp_path: Path, small_disk: Path
) -> None:
    with bento_server(
        trained_state,
        tmp_path / "server",
        IRIS_PREDICTION_LOG=str(small_disk / "predictions.jsonl"),
        IRIS_PREDICTION_LOG_MAX_BYTES=str(MAX_BYTES),
        IRIS_PREDICTION_LOG_BACKUPS="1",
    ) as server:
        started = time.monotonic()
        traffic = asyncio.run(drive(f"{server.url}/predict", 8, 60.0, max_requests=REQUESTS))
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 15  # the writer thread runs behind the answers
        while time.monotonic() < deadline:
            lost = _lost_records(server)
            records = prediction_records(small_disk / "predictions.jsonl")
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
        f"{free} bytes free on the {TMPFS_BYTES // 1024} KiB log disk"
    )
    # Every answer complete and well formed (drive parses each body; a cut answer or a
    # connection error would show as a non-200 outcome).
    assert statuses == {200: len(traffic.outcomes)}, statuses
    assert len(traffic.outcomes) >= REQUESTS * 0.9
    assert all(o.body["class_name"] == "versicolor" for o in traffic.outcomes)
    assert still_healthy
    # The disk really filled, and what could not be written was counted, not torn.
    assert free < 4096
    assert lost.get("write_error", 0) > 0
    assert len(records) + sum(lost.values()) == len(traffic.outcomes)
    answered = {o.server_request_id for o in traffic.outcomes}
    kept = [record["request_id"] for record in records]
    assert len(kept) == len(set(kept)) and set(kept) <= answered
    assert "Traceback" not in server_log
