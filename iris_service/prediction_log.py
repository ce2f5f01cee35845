"""A JSON-lines log of every successful prediction, rotated by size, written off the event loop.

One record per 200 answer of a prediction route (settings.PREDICTION_PATHS):
{"ts", "request_id", "client_request_id", "api_key_id", "endpoint", "model_tag", "latency_ms",
"inputs", "outputs"}. "request_id" is the server's own id (iris_service/request_ids.py, also
in the answer's X-Server-Request-Id): a client's X-Request-ID is kept as "client_request_id"
but cannot make two records collide; "api_key_id" names the API key the request came with
(null with keys off). "inputs" (the request body) is left out with
IRIS_PREDICTION_LOG_INPUTS=false; "outputs" is the answer body. Bodies are embedded as JSON;
a body that is not JSON (MLflow's CSV, a V2 binary tensor) as a JSON string: the text, or
base64 of the bytes.

What a write failure does: the answer goes out, the lost record is counted. The record is
handed to a writer thread through a bounded queue before the answer's last byte is sent, and
that hand-over never blocks and never fails the request. A record the thread cannot write
(the file system is full or failing) or cannot take (the queue is full because the disk is
slower than the traffic) is counted in `iris_prediction_log_lost_total{reason}`, and the
IrisPredictionLogLosingRecords alert (deploy/monitoring/alerts.yaml) calls an operator. We
chose this over refusing with 503 because the log is an audit trail of answers, not a
precondition of them: the prediction is right whether or not its record is kept, and a full
log volume would otherwise take every replica out of service at once (each pod's volume fills
at the same rate), turning a storage problem into a full outage. A deployment for which an
unlogged prediction is worse than no prediction should alert on the counter with paging
severity, or keep the log on storage that cannot fill. Either way an answer is never cut
short: the old design wrote on the event loop after the 200 headers had gone out, so a full
disk truncated answers.

No torn or interleaved record: each record is one `os.write` of one line with O_APPEND,
under an exclusive `flock` on a lock file beside the log, shared by every worker process. A
write that fails part-way (ENOSPC) is cut back to the last whole line with `ftruncate` under
the same lock. Rotation, under that lock too: before a line would take the file past
IRIS_PREDICTION_LOG_MAX_BYTES, `predictions.jsonl` becomes `.1`, `.1` becomes `.2`, and so on
up to IRIS_PREDICTION_LOG_BACKUPS; the oldest is dropped. The log therefore never takes more
than (BACKUPS + 1) x MAX_BYTES. A process that finds the file rotated by another reopens it.
`flock`, `write` and the optional fsync (IRIS_PREDICTION_LOG_FSYNC=true) all run in the
writer thread; the queue is flushed when the worker exits (graceful shutdown loses nothing).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any

from . import metrics
from .request_ids import api_key_id, client_request_id, server_request_id
from .settings import (
    PREDICTION_LOG_BACKUPS,
    PREDICTION_LOG_FSYNC,
    PREDICTION_LOG_INPUTS,
    PREDICTION_LOG_MAX_BYTES,
    PREDICTION_PATHS,
    RoutePatterns,
)

logger = logging.getLogger("iris_service.prediction_log")
QUEUE_RECORDS = 10_000  # records waiting for the writer; beyond, new ones are counted lost
WARN_EVERY_S = 60.0  # one warning per minute while records are being lost, not one per record


class PredictionLog:
    """A size-rotated JSON-lines file shared safely by every process that writes to it."""

    def __init__(
        self,
        path: str | Path,
        max_bytes: int = PREDICTION_LOG_MAX_BYTES,
        backups: int = PREDICTION_LOG_BACKUPS,
        fsync: bool = PREDICTION_LOG_FSYNC,
        queue_records: int = QUEUE_RECORDS,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups, self.fsync = max_bytes, backups, fsync
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o640)
        self._fd: int | None = self._open()
        self._queue: queue.Queue[bytes | None] = queue.Queue(queue_records)  # None: stop
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_warning = 0.0
        self._closed = False

    def files(self) -> list[Path]:
        """The log and its rotated files, newest first."""
        rotated = [Path(f"{self.path}.{n}") for n in range(1, self.backups + 1)]
        return [p for p in (self.path, *rotated) if p.exists()]

    # ---------------------------------------------------------------- request path (no I/O)

    def submit(self, line: bytes) -> None:
        """Queue one complete JSON line for the writer; never blocks, never raises."""
        self._ensure_writer()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._lost("queue_full")

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written or counted lost; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer, close the files."""
        if self._closed:
            return
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
        self._closed = True
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = None

    # ---------------------------------------------------------------- writer thread

    def append(self, record: dict[str, Any]) -> None:
        """Write one record now, in the calling thread."""
        self.append_line(
            (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        )

    def append_line(self, line: bytes) -> None:
        """One complete JSON line, written whole or not at all, rotating first if needed."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            fd = self._current_fd()
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_bytes:
                self._rotate()
                fd, size = self._current_fd(), 0
            try:
                written = os.write(fd, line)
                while written < len(line):  # a regular file takes it whole; be safe anyway
                    written += os.write(fd, line[written:])
            except OSError:
                os.ftruncate(fd, size)  # no torn record: back to the last whole line
                raise
            if self.fsync:
                os.fsync(fd)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _ensure_writer(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_queued, name="prediction-log", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def _write_queued(self) -> None:
        while True:
            line = self._queue.get()
            try:
                if line is None:
                    return
                self.append_line(line)
            except OSError as exc:
                self._lost("write_error", exc)
            finally:
                self._queue.task_done()

    def _lost(self, reason: str, exc: OSError | None = None) -> None:
        metrics.PREDICTION_LOG_LOST.labels(reason).inc()
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            cause = f"{type(exc).__name__}: {exc.strerror}" if exc else "writer behind"
            logger.warning(
                "prediction log %s: records are being lost (%s); counted in "
                "iris_prediction_log_lost_total{reason=%r}",
                self.path,
                cause,
                reason,
            )

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _current_fd(self) -> int:
        """Our descriptor of the current file, reopened when another process rotated it."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == os.fstat(self._fd).st_ino:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fd = self._open()
        return self._fd

    def _rotate(self) -> None:
        for number in range(self.backups, 0, -1):
            source = self.path if number == 1 else Path(f"{self.path}.{number - 1}")
            if source.exists():
                os.replace(source, f"{self.path}.{number}")


class PredictionLogMiddleware:
    """Records each successful prediction in a PredictionLog; no-op without a log."""

    def __init__(
        self,
        app: Any,
        log: PredictionLog | None,
        paths: tuple[str, ...] = PREDICTION_PATHS,
        log_inputs: bool = PREDICTION_LOG_INPUTS,
    ) -> None:
        self.app = app
        self.log = log
        self.paths = RoutePatterns(paths)
        self.log_inputs = log_inputs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            self.log is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        log = self.log
        started = time.perf_counter()
        request_chunks: list[bytes] = []
        response_chunks: list[bytes] = []
        response_headers: list[tuple[bytes, bytes]] = []
        status = 0

        async def receive_and_keep() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                request_chunks.append(message.get("body", b""))
            return message

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body" and status == 200:
                response_chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    inputs = b"".join(request_chunks) if self.log_inputs else None
                    log.submit(_record(scope, inputs, response_chunks, response_headers, started))
            await send(message)

        await self.app(scope, receive_and_keep if self.log_inputs else receive, send_and_record)


def _record(
    scope: dict[str, Any],
    inputs: bytes | None,
    response_chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    started: float,
) -> bytes:
    """Assemble the record from the raw bodies instead of parsing and re-dumping them.

    Both bodies are already valid JSON (the request passed validation, the answer is ours),
    so they are embedded as they are, raw line breaks turned into spaces (legal between JSON
    tokens, impossible inside JSON strings). That costs about a tenth of a json.loads +
    json.dumps round trip on the request path.
    """
    response = _as_json(b"".join(response_chunks), _header(headers, b"content-type"))
    in_body = _MODEL_TAG.search(response)
    # Answers whose protocol has no room for it (MLflow scoring) name it in a header.
    tag = in_body.group(1) if in_body else _as_json_text(_header(headers, b"x-model-tag"))
    latency = _header(headers, b"x-latency-ms")
    latency_ms = float(latency) if latency else (time.perf_counter() - started) * 1000
    parts = [
        b'{"ts":',
        repr(time.time()).encode(),
        b',"request_id":',
        json.dumps(server_request_id(scope)).encode(),
        b',"client_request_id":',
        json.dumps(client_request_id(scope)).encode(),
        b',"api_key_id":',
        json.dumps(api_key_id(scope)).encode(),
        b',"endpoint":',
        json.dumps(scope["path"]).encode(),
        b',"model_tag":',
        tag,
        b',"latency_ms":',
        f"{latency_ms:.3f}".encode(),
    ]
    if inputs is not None:
        # A V2 body with binary tensor data after its JSON header is not JSON, whatever its
        # content type says: kept as base64, so that every line of the log is JSON.
        binary = _header(scope["headers"], b"inference-header-content-length") is not None
        content_type = None if binary else _header(scope["headers"], b"content-type")
        parts += [b',"inputs":', _as_json(inputs, content_type)]
    parts += [b',"outputs":', response, b"}\n"]
    return b"".join(parts)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


_MODEL_TAG = re.compile(rb'"model_tag":("[^"\\]*")')


def _one_line(raw_json: bytes) -> bytes:
    return raw_json.replace(b"\n", b" ").replace(b"\r", b" ")


def _as_json_text(text: str | None) -> bytes:
    return json.dumps(text).encode()


def _as_json(raw: bytes, content_type: str | None) -> bytes:
    """A body as one line of JSON: a JSON body as it is, any other as a JSON string."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return _one_line(raw)
    if kind.startswith("text/"):
        return _as_json_text(raw.decode("utf-8", "replace"))
    return _as_json_text(base64.b64encode(raw).decode())


def open_prediction_log(path: str | None) -> PredictionLog | None:
    """The log at `path`, or None when disabled; a path that cannot be opened is fatal."""
    if path is None:
        logger.info("prediction log disabled (IRIS_PREDICTION_LOG=off)")
        return None
    return PredictionLog(path)
