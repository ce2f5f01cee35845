"""Where the service's lines go (iris_service/log_filters.configure_output)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from iris_service.http import log_filters
from iris_service.http.request_log import RequestLog


@pytest.fixture(autouse=True)
def _fresh_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_filters, "_request_log_fd", None)


def test_without_a_file_the_request_log_writes_to_standard_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(log_filters.REQUEST_LOG_FILE_ENV, raising=False)
    assert log_filters.request_log_fd() == 1
    assert RequestLog(enabled=True).fd == 1


def test_iris_request_log_file_moves_the_request_lines_to_that_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "logs" / "requests.jsonl"
    monkeypatch.setenv(log_filters.REQUEST_LOG_FILE_ENV, str(path))
    log = RequestLog(enabled=True)
    try:
        assert log.fd != 1 and log_filters.request_log_fd() == log.fd  # opened once
        log.write("abc", "/predict", 200, 1.5, 0.5, 0.0)
        log.write("def", "/predict", 400, 0.5, 0.1, 0.0)
        log.flush()  # written by its writer thread in batches; now, in this one
        lines = path.read_text().splitlines()
        assert len(lines) == 2 and '"request_id": "abc"' in lines[0]
    finally:
        log.close()
        os.close(log.fd)


def test_model_switches_are_logged_at_info() -> None:
    log_filters.configure_output()
    for name in log_filters.INFO_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.INFO)
