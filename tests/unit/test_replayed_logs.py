"""The logs the service replays at start are untrusted input: a line that is not one of our
records (cut short, edited by hand, not JSON, not UTF-8, nested past the parser's depth, a
field missing or of the wrong type) is skipped and counted, never fatal, and the records
around it still count."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from iris_service.feedback_log import FeedbackLog, read_records
from iris_service.live_quality import LiveQuality
from iris_service.prediction_index import PredictionIndex
from iris_service.settings import CLASS_NAMES

TAG = "iris-classifier:abc"
# Each is one line of a log: none is a record of ours.
BAD_LINES: tuple[bytes, ...] = (
    b"{not json",
    b'{"key": "cut short", "ts": 1',
    b"[" * 100_000,  # nested past the parser's recursion limit
    "é".encode("latin-1"),
    '{"key": "x"}'.encode("utf-16"),
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b'{"ts": 1.0}',  # no key
    b'{"key": 7}',  # a key that is not text
    b'{"key": "no-fields"}',  # fields the live quality window needs are missing
    b'{"key": "bad-ts", "ts": "soon", "predicted_at": 1, "predicted": "setosa", '
    b'"class_name": "setosa", "model_tag": "m"}',
    b'{"key": "list-tag", "ts": 2, "predicted_at": 1, "predicted": "setosa", '
    b'"class_name": "setosa", "model_tag": []}',
)


def _record(key: str) -> dict:
    return {
        "ts": 10.0,
        "key": key,
        "class_name": "setosa",
        "predicted": "setosa",
        "model_tag": TAG,
        "predicted_at": 4.0,
    }


def _line(record: dict) -> bytes:
    return json.dumps(record).encode()


def test_the_feedback_log_skips_and_counts_lines_that_are_not_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "feedback.jsonl"
    lines = [_line(_record("first")), *BAD_LINES, _line(_record("last"))]
    path.write_bytes(b"\n".join(lines) + b"\n")
    quality = LiveQuality(10, CLASS_NAMES)
    replayed = FeedbackLog(path, on_record=quality.add)
    caplog.set_level(logging.WARNING, logger="iris_service.feedback")
    assert replayed.catch_up() == 2  # the start goes on
    assert replayed.skipped == len(BAD_LINES)
    assert replayed.is_labelled("first") and replayed.is_labelled("last")
    assert not replayed.is_labelled("no-fields") and not replayed.is_labelled("bad-ts")
    summary = quality.summary(TAG)
    assert summary is not None and summary.labelled == 2
    (warning,) = [r.getMessage() for r in caplog.records]  # one line per catch-up
    assert f"skipped {len(BAD_LINES)} line(s)" in warning and str(tmp_path) not in warning
    # Appending after a replay still works, and the pipeline's reader skips the same lines.
    replayed.append([_record("new")])
    assert replayed.is_labelled("new") and replayed.skipped == len(BAD_LINES)
    keys = [record["key"] for record in read_records(path)]
    assert keys[0] == "first" and keys[-2:] == ["last", "new"] and 7 not in keys


def _prediction(server_id: str) -> bytes:
    return (
        b'{"ts":1.0,"request_id":"' + server_id.encode() + b'","client_request_id":null,'
        b'"endpoint":"/predict","model_tag":"' + TAG.encode() + b'","latency_ms":1.0,'
        b'"inputs":{},"outputs":{"class_name":"setosa"}}'
    )


def test_the_prediction_index_skips_and_counts_lines_that_are_not_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "predictions.jsonl"
    # A line that begins like a record but is cut short: indexed, yet unknown when read.
    broken = _prediction("bbbb")[:60]
    lines = [_prediction("aaaa"), *BAD_LINES, broken, _prediction("cccc")]
    path.write_bytes(b"\n".join(lines) + b"\n")
    index = PredictionIndex(lambda: [path], capacity=100)
    assert index.refresh() == 3
    assert index.skipped == len(BAD_LINES)
    assert index.record("aaaa")["request_id"] == "aaaa"
    assert index.record("cccc")["outputs"] == {"class_name": "setosa"}
    assert index.server_id("bbbb") == "bbbb" and index.record("bbbb") is None
