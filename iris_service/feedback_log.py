"""The feedback log: every accepted label, once, in one append-only JSON-lines file.

One record per labelled flower (iris_service/feedback.py writes them): {"ts", "key",
"request_id", "server_request_id", "index", "class_name", "predicted", "correct",
"model_tag", "predicted_at", "endpoint", "features"}. "key" (the server's request id, and
"/<index>" for a flower of a batch) is unique in the file: a label is never counted twice,
whichever id (the client's or the server's) it was sent with.

Shared by every API worker and kept across restarts. An append takes an exclusive `flock`
on a lock file beside the log, reads the lines other processes appended since its last look
(iris_service/jsonl_tail.py), refuses keys already in the file, then writes all the request's
lines in one `os.write` with O_APPEND and fsyncs before answering: a label the client saw
accepted is on disk, and two workers can never both accept the same key. Each process builds
its set of labelled keys (and, through `on_record`, the live quality window) from the file
itself, at start and after every append, so a restarted server counts exactly what was there.
The pipeline (`make retrain`) reads the same file.

The file is replayed at every start, so a line that is not one of our records (cut short by
a full disk, edited by hand, not JSON, nested past the parser's depth, missing a field) must
not stop the start: it is skipped and counted (`skipped`), and one warning per catch-up says
how many.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .jsonl_tail import JsonLinesTail

Record = dict[str, Any]

logger = logging.getLogger("iris_service.feedback")


class AlreadyLabelled(Exception):
    """Keys that already have a label (in the file, or twice in one request)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


class FeedbackLog:
    def __init__(
        self,
        path: str | Path,
        on_record: Callable[[Record], None] | None = None,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._on_record = on_record
        self._fsync = fsync
        self._lock_path = f"{self.path}.lock"
        self._tail = JsonLinesTail()
        self._labelled: set[str] = set()
        self.skipped = 0  # lines read that were not records: never fatal
        self._mutex = threading.Lock()  # one thread of this process at a time

    def __len__(self) -> int:
        return len(self._labelled)

    def is_labelled(self, key: str) -> bool:
        return key in self._labelled

    def catch_up(self) -> int:
        """Read the records appended since the last look (by any process); how many."""
        with self._mutex:
            return self._catch_up()

    def append(self, records: Iterable[Record]) -> None:
        """Append all `records` or none: AlreadyLabelled if any key has a label already."""
        records = list(records)
        lines = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        with self._mutex, self._exclusive_lock():
            self._catch_up()
            keys = Counter(record["key"] for record in records)
            repeated = sorted(k for k, n in keys.items() if n > 1 or k in self._labelled)
            if repeated:
                raise AlreadyLabelled(repeated)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = os.write(fd, lines)
                    while written < len(lines):  # a regular file takes it whole; be safe
                        written += os.write(fd, lines[written:])
                    if self._fsync:
                        os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # all or nothing: back to the last whole line
                    raise
            finally:
                os.close(fd)
            self._catch_up()

    def _catch_up(self) -> int:
        count = skipped = 0
        for _, _, line in self._tail.read([self.path]):
            record = _parsed(line)
            if record is None:
                skipped += 1
                continue
            if self._on_record is not None:
                try:
                    self._on_record(record)
                except (KeyError, TypeError, ValueError):  # a field missing or of a wrong type
                    skipped += 1
                    continue
            self._labelled.add(record["key"])
            count += 1
        if skipped:
            self.skipped += skipped
            logger.warning(
                "feedback log %s: skipped %d line(s) that are not feedback records (%d in all)",
                self.path.name,
                skipped,
                self.skipped,
            )
        return count

    def _exclusive_lock(self) -> _FileLock:
        return _FileLock(self._lock_path)


class _FileLock:
    """An exclusive flock on `path` for the duration of a with-block (all processes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _parsed(line: bytes) -> Record | None:
    """The record of one line, or None when the line is not one (skipped by the readers)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the limit
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return record


def read_records(path: str | Path) -> list[Record]:
    """Every record of a feedback log, oldest first (for the pipeline); [] without a file.
    Lines that are not records are skipped."""
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [record for line in content.splitlines() if (record := _parsed(line)) is not None]
