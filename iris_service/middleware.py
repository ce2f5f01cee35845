"""ASGI middleware that measures every prediction request and owns the error shape.

For each request to a monitored path it:
- assigns a request id (a valid incoming X-Request-ID is kept, else a new one);
- refuses bodies over the size limit with 413 before reading them whole;
- measures wall time (ms), the worker's resident-memory change (MB, psutil) and the
  process CPU time while the request was in flight (ms; includes concurrent requests);
- returns them as X-Latency-Ms, X-Memory-Delta-Mb and X-Cpu-Time-Ms headers (measured up
  to the start of the response), records them as Prometheus histograms and writes one
  JSON log line with the request id;
- refuses bodies that are not declared as application/json with 415.
Every other path (health, metrics, docs, unknown paths) is not measured, but its error
answers are rewritten into the same {"error", "detail", "request_id"} shape.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from typing import Any

import psutil

from . import errors, metrics
from .request_log import REQUEST_LOGGER_NAME
from .settings import MAX_BODY_BYTES

Scope = dict[str, Any]
Message = dict[str, Any]

logger = logging.getLogger(REQUEST_LOGGER_NAME)
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
_BYTES_PER_MB = 1024 * 1024


class ResidentMemory:
    """Resident memory of this process in bytes, cheap enough to read twice per request.

    psutil.Process().memory_info() reads /proc/self/statm too, but opens and closes the file
    on every call: about 7% of an API worker's CPU in a py-spy profile at saturation. Here the
    file stays open and is re-read with pread; psutil remains the fallback off Linux.
    """

    def __init__(self) -> None:
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._statm: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._statm = None
            self._process = psutil.Process()

    def bytes(self) -> int:
        if self._statm is None:
            return int(self._process.memory_info().rss)
        return int(os.pread(self._statm, 128, 0).split()[1]) * self._page_size


class RequestTooLarge(Exception):
    """The body grew past the limit while it was being read."""


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _VALID_REQUEST_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


def _declares_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json"
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestMonitoringMiddleware:
    def __init__(
        self,
        app: Any,
        monitored_paths: tuple[str, ...] = ("/predict", "/predict_batch"),
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.monitored_paths = frozenset(monitored_paths)
        self.max_body_bytes = max_body_bytes
        self.memory = ResidentMemory()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        measured = scope["path"] in self.monitored_paths
        await _MonitoredRequest(self, scope, receive, send, measured).run()


class _MonitoredRequest:
    """State of one monitored request (a small object instead of a web of closures)."""

    def __init__(
        self,
        owner: RequestMonitoringMiddleware,
        scope: Scope,
        receive: Any,
        send: Any,
        measured: bool,
    ) -> None:
        self.owner = owner
        self.measured = measured
        self.scope = scope
        self.receive_downstream = receive
        self.send_downstream = send
        self.request_id = _request_id(scope)
        self.endpoint = scope["path"]
        self.status = 500
        self.response_started = False
        self.error_start: Message | None = None
        self.error_chunks: list[bytes] = []
        self.body_bytes_read = 0
        self.error_code: str | None = None
        self.body_too_large = False
        self.rss_before = owner.memory.bytes() if measured else 0
        self.cpu_before = time.process_time()
        self.started = time.perf_counter()

    async def run(self) -> None:
        refusal = self._refusal() if self.measured else None
        if refusal is not None:
            await self._send_error(*refusal)
        else:
            try:
                await self.owner.app(self.scope, self._receive, self._send)
            except RequestTooLarge:
                if not self.response_started:
                    await self._send_error(413, self._too_large_detail())
            except Exception:
                logger.exception("unhandled error", extra={"request_id": self.request_id})
                if not self.response_started:
                    await self._send_error(500, errors.GENERIC_DETAIL[500])
        if self.measured:
            self._record()

    def _refusal(self) -> tuple[int, str] | None:
        """Requests answered without reaching the API: too large, or not JSON."""
        declared_length = _content_length(self.scope)
        if declared_length is not None and declared_length > self.owner.max_body_bytes:
            return 413, self._too_large_detail()
        if self.scope["method"] == "POST" and not _declares_json(self.scope):
            return 415, "send the body as JSON with Content-Type: application/json"
        return None

    def _too_large_detail(self) -> str:
        return f"request body is larger than {self.owner.max_body_bytes} bytes"

    async def _receive(self) -> Message:
        message = await self.receive_downstream()
        if message["type"] == "http.request":
            self.body_bytes_read += len(message.get("body", b""))
            if self.body_bytes_read > self.owner.max_body_bytes:
                self.body_too_large = True
                raise RequestTooLarge
        return message

    def _measurement_headers(self) -> list[tuple[bytes, bytes]]:
        latency_ms = (time.perf_counter() - self.started) * 1000
        cpu_ms = (time.process_time() - self.cpu_before) * 1000
        memory_delta_mb = (self.owner.memory.bytes() - self.rss_before) / _BYTES_PER_MB
        return [
            (b"x-request-id", self.request_id.encode()),
            (b"x-latency-ms", f"{latency_ms:.3f}".encode()),
            (b"x-cpu-time-ms", f"{cpu_ms:.3f}".encode()),
            (b"x-memory-delta-mb", f"{memory_delta_mb:.3f}".encode()),
        ]

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status >= 400:
                self.error_start = message  # held back until the body is complete
                return
            self.response_started = True
            if self.measured:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name != b"x-request-id"
                ]
                message = {**message, "headers": headers + self._measurement_headers()}
        elif message["type"] == "http.response.body" and self.error_start is not None:
            self.error_chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._send_error(self.status, b"".join(self.error_chunks))
            return
        await self.send_downstream(message)

    async def _send_error(self, status: int, detail_or_body: str | bytes) -> None:
        if self.body_too_large:  # whatever the app made of the aborted read, the cause is size
            status, detail_or_body = 413, self._too_large_detail()
        if isinstance(detail_or_body, bytes):
            body = errors.normalise(status, detail_or_body, self.request_id)
        else:
            body = errors.error_body(status, detail_or_body, self.request_id)
        self.status = status
        self.response_started = True
        headers = errors.error_headers(status, body, self.request_id)
        await self.send_downstream(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await self.send_downstream({"type": "http.response.body", "body": body})
        self.error_code = json.loads(body)["error"]

    def _record(self) -> None:
        latency_ms = (time.perf_counter() - self.started) * 1000
        cpu_ms = (time.process_time() - self.cpu_before) * 1000
        rss_after = self.owner.memory.bytes()
        memory_delta_mb = (rss_after - self.rss_before) / _BYTES_PER_MB
        status = str(self.status)
        metrics.REQUEST_LATENCY_MS.labels(self.endpoint, status).observe(latency_ms)
        metrics.REQUEST_CPU_MS.labels(self.endpoint).observe(cpu_ms)
        metrics.REQUEST_MEMORY_DELTA_MB.labels(self.endpoint).observe(memory_delta_mb)
        metrics.PROCESS_RESIDENT_MEMORY_MB.set(rss_after / _BYTES_PER_MB)
        if self.status >= 400:
            metrics.ERRORS_TOTAL.labels(self.endpoint, self.error_code or status).inc()
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                json.dumps(
                    {
                        "event": "request",
                        "request_id": self.request_id,
                        "endpoint": self.endpoint,
                        "status": self.status,
                        "latency_ms": round(latency_ms, 3),
                        "cpu_ms": round(cpu_ms, 3),
                        "memory_delta_mb": round(memory_delta_mb, 3),
                    }
                )
            )
