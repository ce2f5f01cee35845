"""Scrapes of the multiprocess metric files while a process is creating one (metric_files.py)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from iris_service.monitoring import metric_files


@pytest.fixture
def metric_dir(tmp_path: Path) -> Path:
    """One worker's counter file as prometheus_client writes it, and a second worker's file
    as it is for a moment after its creation (or for ever, if that worker was killed then)."""
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("iris_demo_total", "iris_demo_total", ["route"], ["/predict"], "A demo.")
    written.write_value(key, 7.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()
    return tmp_path


@pytest.fixture
def reader_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever the test installs on MmapedDict is undone after it."""
    original = MmapedDict.__dict__["read_all_values_from_file"]
    monkeypatch.setattr(MmapedDict, "read_all_values_from_file", original)
    yield


def _scrape(path: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry).decode()


def test_prometheus_client_still_fails_a_scrape_on_an_empty_metric_file(metric_dir: Path) -> None:
    """Why metric_files.py exists: when this fails, prometheus_client reads an empty file by
    itself (its issue 1199 fixed) and the module can go."""
    with pytest.raises(struct.error):
        list(metric_files._read_all_values_from_file(str(metric_dir / "counter_102.db")))


def test_a_scrape_reads_every_other_file_beside_an_empty_one(
    metric_dir: Path, reader_restored: None
) -> None:
    metric_files.read_empty_metric_files_as_empty()
    text = _scrape(metric_dir)
    assert 'iris_demo_total{route="/predict"} 7.0' in text


def test_only_an_empty_file_is_read_differently(tmp_path: Path, reader_restored: None) -> None:
    """A file that is not empty goes to prometheus_client's reader: a damaged one still fails
    the scrape, as it did (an empty file is a state of creation; a damaged one is not)."""
    metric_files.read_empty_metric_files_as_empty()
    (tmp_path / "counter_103.db").write_bytes(struct.pack("i", 9999) + b"\0" * 60)
    with pytest.raises(ValueError):  # its key is not the JSON prometheus_client writes
        _scrape(tmp_path)
