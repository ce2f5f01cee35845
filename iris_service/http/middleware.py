"""ASGI middleware that measures every prediction request and owns the error shape.

For each request to a monitored path (names.PREDICTION_PATHS: /predict, /predict_batch,
the V2 and MLflow inference routes) it:
- assigns a request id (a valid incoming X-Request-ID is kept, else the server's own) and
  the server's own id (X-Server-Request-Id; iris_service/http/request_ids.py);
- refuses bodies over the size limit with 413 before reading them whole, and bodies not
  declared as application/json with 415. The 413 is sent at once, but the connection stays
  open while the rest of the body (up to DRAIN_LIMIT_BYTES and DRAIN_SECONDS) is read and
  dropped: ordinary clients (`requests`, `urllib`) write the whole body before they read, and
  a server that closes on unread data makes the kernel answer their writes with a reset,
  so they would see "connection reset" instead of the 413;
- measures wall time (ms), the worker's resident-memory change (MB) and the process CPU
  time while the request was in flight (ms; with concurrent requests it includes their
  share), once, when the response starts;
- records them as Prometheus histograms and writes one JSON log line with the request id;
- returns X-Latency-Ms on every prediction (the server's share of the client's wait: it
  tells a client network delay from server delay and reveals nothing the client cannot
  time itself), and X-Cpu-Time-Ms and X-Memory-Delta-Mb only with
  IRIS_EXPOSE_MEASUREMENT_HEADERS=true: they describe the worker process (its CPU use and
  memory growth, which show load and allocation behaviour to anyone who asks), so by
  default they stay in the metrics and the request log.
Every other path (health, metrics, docs, unknown paths) is not measured, but its error
answers get the same treatment as all others: the {"error", "detail", "request_id"} shape.
The routes of other protocols (errors.protocol_of: V2, MLflow scoring) check their own
content types (a Triton client sends none) and keep their protocol's error shape.

Its own cost is measured by `python -m tools.middleware_overhead`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import psutil

from iris_service.errors import Refusal, TooLarge
from iris_service.http import errors
from iris_service.http.request_ids import client_request_id, server_request_id
from iris_service.http.request_log import REQUEST_LOGGER_NAME, RequestLog
from iris_service.monitoring import metrics
from iris_service.names import PREDICTION_PATHS, RoutePatterns
from iris_service.settings import settings

Scope = dict[str, Any]
Message = dict[str, Any]

logger = logging.getLogger(REQUEST_LOGGER_NAME)
_BYTES_PER_MB = 1024 * 1024
# After a 413, the rest of the body is read and dropped up to these bounds (then the
# connection is closed): enough for a client that sends a few tens of MB by mistake, not a
# way to keep a worker busy for long.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


class ResidentMemory:
    """Resident memory of this process in bytes, cheap enough to read twice per request.

    psutil.Process().memory_info() reads /proc/self/statm too, but opens and closes the file
    on every call, a visible share of a busy worker's CPU. Here the file stays open and is
    re-read with pread; psutil remains the fallback where /proc does not exist
    (docs/performance.md, "Figures moved from the code").
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


class RequestTooLarge(TooLarge):
    """The body grew past the limit while it was being read."""


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value
    return None


def _declares_json(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _content_length(scope: Scope) -> int | None:
    declared = _header(scope, b"content-length")
    try:
        return int(declared) if declared is not None else None
    except ValueError:
        return None


class RequestMonitoringMiddleware:
    def __init__(
        self,
        app: Any,
        monitored_paths: tuple[str, ...] = PREDICTION_PATHS,
        max_body_bytes: int = settings.max_body_bytes,
        request_log: RequestLog | None = None,
        expose_measurements: bool = settings.expose_measurement_headers,
    ) -> None:
        self.app = app
        self.expose_measurements = expose_measurements
        self.monitored_paths = RoutePatterns(monitored_paths)
        self.max_body_bytes = max_body_bytes
        self.memory = ResidentMemory()
        self.request_log = request_log or RequestLog()
        self._series: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        # Series of successful answers exist (at zero) from the start, so a scrape before the
        # first request gives `increase()`/`rate()` a starting point: traffic that fits
        # between two scrapes is not lost to a series that was born with its final count.
        for route in (*self.monitored_paths.exact, *self.monitored_paths.wildcards):
            self.series(route, 200)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        measured = scope["path"] in self.monitored_paths
        await _MonitoredRequest(self, scope, receive, send, measured).run()

    def series(self, endpoint: str, status: int) -> tuple[Any, Any, Any]:
        """Latency, CPU and memory histograms of one (endpoint, status), looked up once."""
        key = (endpoint, status)
        found = self._series.get(key)
        if found is None:
            found = (
                metrics.REQUEST_LATENCY_MS.labels(endpoint, str(status)),
                metrics.REQUEST_CPU_MS.labels(endpoint),
                metrics.REQUEST_MEMORY_DELTA_MB.labels(endpoint),
            )
            self._series[key] = found
        return found


class _MonitoredRequest:
    """State of one request (a small object instead of a web of closures)."""

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
        self.server_request_id = server_request_id(scope)
        self.request_id = client_request_id(scope) or self.server_request_id
        self.path: str = scope["path"]
        self.protocol = errors.protocol_of(self.path)
        # The route, not the path: path parameters must not create metric series.
        self.endpoint: str = owner.monitored_paths.label(self.path) or self.path
        self.status = 500
        self.response_started = False
        self.error_start: Message | None = None
        self.error_chunks: list[bytes] = []
        self.error_code: str | None = None
        self.body_bytes_read = 0
        self.body_too_large = False
        self.measurement: tuple[float, float, float, int] | None = None
        if measured:
            self.rss_before = owner.memory.bytes()
            self.cpu_before = time.process_time()
            self.started = time.perf_counter()

    async def run(self) -> None:
        refusal = self._refusal() if self.measured else None
        if refusal is not None:
            await self._send_error(*refusal)
        else:
            try:
                await self.owner.app(self.scope, self._receive, self._send)
            except Refusal as refusal:  # the request's body too large, or an inner middleware's
                if not self.response_started:
                    await self._send_error(refusal.status, refusal.detail, refusal.code)
            except Exception:
                logger.exception("unhandled error in request %s", self.request_id)
                if not self.response_started:
                    await self._send_error(500, errors.GENERIC_DETAIL[500])
        if self.measured:
            self._record()

    def _refusal(self) -> tuple[int, str] | None:
        """Requests answered without reaching the API: too large, or not JSON."""
        declared_length = _content_length(self.scope)
        if declared_length is not None and declared_length > self.owner.max_body_bytes:
            return 413, self._too_large_detail()
        if (
            self.protocol is None
            and self.scope["method"] == "POST"
            and not _declares_json(self.scope)
        ):
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
                raise RequestTooLarge(self._too_large_detail())
        return message

    def _measure(self) -> tuple[float, float, float, int]:
        """(latency ms, CPU ms, memory delta MB, RSS bytes), taken once per request."""
        if self.measurement is None:
            rss_after = self.owner.memory.bytes()
            self.measurement = (
                (time.perf_counter() - self.started) * 1000,
                (time.process_time() - self.cpu_before) * 1000,
                (rss_after - self.rss_before) / _BYTES_PER_MB,
                rss_after,
            )
        return self.measurement

    def _measurement_headers(self) -> list[tuple[bytes, bytes]]:
        latency_ms, cpu_ms, memory_delta_mb, _ = self._measure()
        headers = [
            (b"x-request-id", self.request_id.encode()),
            (b"x-server-request-id", self.server_request_id.encode()),
            (b"x-latency-ms", f"{latency_ms:.3f}".encode()),
        ]
        if self.owner.expose_measurements:
            headers.append((b"x-cpu-time-ms", f"{cpu_ms:.3f}".encode()))
            headers.append((b"x-memory-delta-mb", f"{memory_delta_mb:.3f}".encode()))
        return headers

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
                    if name not in (b"x-request-id", b"x-server-request-id")
                ]
                message = {**message, "headers": headers + self._measurement_headers()}
        elif message["type"] == "http.response.body" and self.error_start is not None:
            self.error_chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._send_error(self.status, b"".join(self.error_chunks))
            return
        await self.send_downstream(message)

    async def _send_error(
        self, status: int, detail_or_body: str | bytes, code: str | None = None
    ) -> None:
        if self.body_too_large:  # whatever the app made of the aborted read, the cause is size
            status, detail_or_body, code = 413, self._too_large_detail(), None
        if isinstance(detail_or_body, bytes):
            code, body = errors.normalise(status, detail_or_body, self.request_id, self.protocol)
        elif self.protocol is not None:
            code = errors.error_code(status)
            body = errors.protocol_error_body(self.protocol, status, detail_or_body)
        else:
            code = code or errors.error_code(status)
            body = errors.error_body(status, detail_or_body, self.request_id, code)
        self.status, self.error_code, self.response_started = status, code, True
        headers = errors.error_headers(status, body, self.request_id)
        headers.append((b"x-server-request-id", self.server_request_id.encode()))
        await self.send_downstream(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        if status != 413:
            await self.send_downstream({"type": "http.response.body", "body": body})
            return
        # The whole answer goes out now; the response stays open (so the server keeps the
        # connection) until the rest of the body has been read and dropped.
        await self.send_downstream({"type": "http.response.body", "body": body, "more_body": True})
        await self._drain_request_body()
        await self.send_downstream({"type": "http.response.body", "body": b""})

    async def _drain_request_body(self) -> None:
        """Read and drop what is left of the request body, within the drain bounds."""
        declared = _content_length(self.scope)
        if declared is not None and declared > DRAIN_LIMIT_BYTES:
            return  # too much to be worth reading: the connection is closed
        drained = self.body_bytes_read
        deadline = time.monotonic() + DRAIN_SECONDS
        while drained <= DRAIN_LIMIT_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):  # passes cancellation on, unlike wait_for
                    message = await self.receive_downstream()
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return  # the client went away
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _record(self) -> None:
        latency_ms, cpu_ms, memory_delta_mb, rss_after = self._measure()
        latency, cpu, memory = self.owner.series(self.endpoint, self.status)
        latency.observe(latency_ms)
        cpu.observe(cpu_ms)
        memory.observe(memory_delta_mb)
        metrics.PROCESS_RESIDENT_MEMORY_MB.set(rss_after / _BYTES_PER_MB)
        if self.error_code is not None:
            metrics.ERRORS_TOTAL.labels(self.endpoint, self.error_code).inc()
        self.owner.request_log.write(
            self.request_id,
            self.path,
            self.status,
            latency_ms,
            cpu_ms,
            memory_delta_mb,
            self.server_request_id,
        )
