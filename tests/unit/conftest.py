"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iris_pipeline import training
from iris_service.records.store import RecordStore, sqlite_url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    """A migrated prediction store in a fresh SQLite file, closed after the test."""
    opened = RecordStore(sqlite_url(tmp_path / "records.db"))
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def data() -> training.Dataset:
    """The Iris data split as the pipeline splits it (seed 0), loaded once."""
    return training.load_dataset(seed=0)
