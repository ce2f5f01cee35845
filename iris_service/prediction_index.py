"""Where each logged prediction is in the prediction log, to join a label with it.

The prediction log (iris_service/prediction_log.py) is the record of what was answered:
inputs, outputs, model tag, time, under the server's request id and, when the client sent
one, its own X-Request-ID. Each API worker keeps an index, built by reading the log's new
lines (iris_service/jsonl_tail.py), from the server id to the record's place (file inode,
offset, length) and from a client id, with the API key it came with, to the server ids
logged with it. A label names either id (a client's only with the same key); a client id
logged for more than one prediction is ambiguous (clients may reuse ids).
Only the newest `capacity` predictions are kept (about 200 bytes each), and a record rotated
out of the log is gone: both are refused as unknown.

The ids are read from the record's first bytes (the prediction log writes "ts",
"request_id" and "client_request_id" first) without parsing whole lines: a batch record of
1,000 flowers is read in full only when one of its flowers is labelled. The log is replayed
at start, so a line that does not begin like a record is skipped and counted (`skipped`),
and one that does but is not a JSON object is unknown to `record`: neither stops anything.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonl_tail import JsonLinesTail

_IDS = re.compile(
    rb'^\{"ts":[^,]+,"request_id":"([0-9a-f]+)","client_request_id":(?:null|"([A-Za-z0-9._-]+)")'
    rb'(?:,"api_key_id":(?:null|"([0-9a-f]{16})"))?'  # absent in records of older versions
)


@dataclass(frozen=True)
class LogPosition:
    inode: int
    offset: int
    length: int
    client_id: str | None
    key_id: str | None  # the API key the prediction came with (None with keys off)

    @property
    def client_key(self) -> tuple[str, str | None] | None:
        """Where a client's id is looked up: under the key it was sent with."""
        return None if self.client_id is None else (self.client_id, self.key_id)


class AmbiguousRequestId(LookupError):
    """A client's X-Request-ID that names several logged predictions."""

    def __init__(self, request_id: str, count: int) -> None:
        super().__init__(request_id, count)
        self.request_id, self.count = request_id, count


class PredictionIndex:
    def __init__(self, log_files: Callable[[], list[Path]], capacity: int) -> None:
        self._log_files = log_files
        self.capacity = capacity
        self._tail = JsonLinesTail()
        self._by_server: OrderedDict[str, LogPosition] = OrderedDict()
        # (client id, key id) -> server ids, oldest first: eviction pops the left.
        self._by_client: dict[tuple[str, str | None], deque[str]] = {}
        self.skipped = 0  # lines read that do not begin like a record

    def __len__(self) -> int:
        return len(self._by_server)

    def refresh(self) -> int:
        """Index the records logged since the last refresh; returns how many."""
        added = 0
        for inode, offset, line in self._tail.read(self._log_files()):
            match = _IDS.match(line)
            if match is None:
                self.skipped += 1
                continue
            server_id = match.group(1).decode()
            client_id = match.group(2).decode() if match.group(2) else None
            key_id = match.group(3).decode() if match.group(3) else None
            self._add(server_id, LogPosition(inode, offset, len(line), client_id, key_id))
            added += 1
        return added

    def _add(self, server_id: str, position: LogPosition) -> None:
        self._by_server[server_id] = position
        if position.client_key is not None:
            self._by_client.setdefault(position.client_key, deque()).append(server_id)
        while len(self._by_server) > self.capacity:
            _, oldest = self._by_server.popitem(last=False)
            if oldest.client_key is not None:
                ids = self._by_client[oldest.client_key]
                ids.popleft()
                if not ids:
                    del self._by_client[oldest.client_key]

    def server_id(self, request_id: str, key_id: str | None = None) -> str | None:
        """The server id that `request_id` names, or None: a server id, or a client's id
        logged with the API key `key_id` (None: keys off); AmbiguousRequestId when that
        client id was logged for several predictions."""
        if request_id in self._by_server:
            return request_id
        found = self._by_client.get((request_id, key_id), ())
        if len(found) > 1:
            raise AmbiguousRequestId(request_id, len(found))
        return found[0] if found else None

    def record(self, server_id: str) -> dict[str, Any] | None:
        """The logged record of `server_id`, or None when its file has been rotated away."""
        position = self._by_server.get(server_id)
        if position is None:
            return None
        for path in self._log_files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if os.fstat(fd).st_ino == position.inode:
                    line = os.pread(fd, position.length, position.offset)
                    # the inode of a deleted file is reused: check that the line is ours
                    match = _IDS.match(line)
                    if match is None or match.group(1).decode() != server_id:
                        return None
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):  # begins like a record, is not one
                        return None
                    return record if isinstance(record, dict) else None
            finally:
                os.close(fd)
        return None
