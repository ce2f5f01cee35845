"""The prediction log: rotation with a bounded total, whole lines on a full file system,
writes off the request path, lost records counted."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from iris_service.prediction_log import PredictionLog


def _lost(reason: str) -> float:
    return REGISTRY.get_sample_value("iris_prediction_log_lost_total", {"reason": reason}) or 0


def _lines(log: PredictionLog) -> list[dict]:
    return [json.loads(line) for path in log.files() for line in path.read_bytes().splitlines()]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_rotation_keeps_the_total_bounded_and_every_line_whole(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.jsonl", max_bytes=10_000, backups=2)
    for i in range(2_000):  # about 120 KB of records into a log bounded at 30 KB
        log.append({"i": i, "pad": "x" * 40})
    files = log.files()
    assert [p.name for p in files] == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all(p.stat().st_size <= 10_000 for p in files)
    records = _lines(log)
    numbers = sorted(r["i"] for r in records)
    assert numbers == list(range(numbers[0], 2_000))  # the newest kept, nothing in between lost
    assert numbers[0] > 1_000  # the oldest were dropped with the oldest file


def _in_processes(target: Callable[[str, int], None], path: str, processes: int) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=target, args=(path, n)) for n in range(processes)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)


def _append_long_lines(path: str, worker: int) -> None:
    log = PredictionLog(path)
    for i in range(300):  # lines far above PIPE_BUF (4096 bytes)
        log.append({"worker": worker, "i": i, "pad": "x" * 20_000})


def _append_rotating(path: str, worker: int) -> None:
    log = PredictionLog(path, max_bytes=50_000, backups=50)
    for i in range(400):
        log.append({"worker": worker, "i": i, "pad": "y" * 300})


def test_prediction_log_lines_never_interleave_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "p.jsonl")
    _in_processes(_append_long_lines, path, 4)
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert len(records) == 1200
    assert len({(r["worker"], r["i"]) for r in records}) == 1200


def test_processes_rotating_the_same_log_lose_nothing_and_never_interleave(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "p.jsonl")
    _in_processes(_append_rotating, path, 3)
    log = PredictionLog(path, max_bytes=50_000, backups=50)
    records = _lines(log)
    assert len(log.files()) >= 7  # about 400 KB in 50 KB files: it really rotated, often
    assert len(records) == 1_200 == len({(r["worker"], r["i"]) for r in records})


def test_a_full_file_system_refuses_whole_records_never_part_of_one(tiny_fs: Path) -> None:
    log = PredictionLog(tiny_fs / "p.jsonl", max_bytes=1_000_000, backups=1)
    before = _lost("write_error")
    for i in range(400):  # 400 x ~330 bytes into 64 KiB
        log.submit((json.dumps({"i": i, "pad": "z" * 300}) + "\n").encode())
    assert log.flush()
    raw = (tiny_fs / "p.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]  # a torn line fails here
    lost = _lost("write_error") - before
    assert lost > 0 and records
    assert len(records) + lost == 400
    assert [r["i"] for r in records] == list(range(len(records)))
    log.close()


def test_submit_never_waits_for_the_disk_and_counts_what_does_not_fit(tmp_path: Path) -> None:
    """While another process holds the log's lock (a slow disk, a long fsync), submitting
    returns at once; records beyond the queue are counted lost, the rest written later."""
    log = PredictionLog(tmp_path / "p.jsonl", queue_records=50)
    holder = os.open(f"{tmp_path / 'p.jsonl'}.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    before = _lost("queue_full")
    started = time.perf_counter()
    for i in range(200):
        log.submit(f'{{"i":{i}}}\n'.encode())
    submitting_s = time.perf_counter() - started
    queued_lost = _lost("queue_full") - before
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    assert log.flush()
    assert submitting_s < 0.5
    written = _lines(log)
    assert 140 <= queued_lost <= 150  # 50 queued, one maybe taken by the blocked writer
    assert len(written) + queued_lost == 200
    log.close()
