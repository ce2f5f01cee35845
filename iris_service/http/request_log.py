"""The structured request log: one JSON line per prediction request on standard output.

It replaces BentoML's access log for prediction routes (disabled in configuration.yaml):
the line carries our request id and measurements. A preformatted line (not the logging
module, whose cost per record is a large share of the middleware's) is handed to a writer
thread that writes what has gathered every WRITE_INTERVAL_S in one `os.write`: no system
call on the event loop per request. At most MAX_WAITING lines wait; beyond, lines are
dropped (a log must not grow memory when standard output is slower than the traffic).
IRIS_REQUEST_LOG=off silences it.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import deque

from iris_service.http.log_filters import request_log_fd

REQUEST_LOGGER_NAME = "iris_service.requests"  # logger for the rare unexpected-error trace
WRITE_INTERVAL_S = 0.05
MAX_WAITING = 10_000


def request_log_enabled() -> bool:
    return os.environ.get("IRIS_REQUEST_LOG", "on").lower() not in {"off", "0", "false", "no"}


class RequestLog:
    """Writes `{"event": "request", ...}` lines; every value is a number or a safe token."""

    def __init__(self, fd: int | None = None, enabled: bool | None = None) -> None:
        self.fd = request_log_fd() if fd is None else fd  # stdout or IRIS_REQUEST_LOG_FILE
        self.enabled = request_log_enabled() if enabled is None else enabled
        self._waiting: deque[str] = deque()
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()

    def write(
        self,
        request_id: str,
        endpoint: str,
        status: int,
        latency_ms: float,
        cpu_ms: float,
        memory_delta_mb: float,
        server_request_id: str = "",
        protocol: str = "",
    ) -> None:
        """One line; `protocol` ("grpc") is written when given: a gRPC call's `status` is
        its gRPC status code (0 OK), an HTTP request's its HTTP status."""
        if not self.enabled:
            return
        # Both ids match [A-Za-z0-9._-], endpoint is one of our routes or gRPC methods and
        # protocol a constant: no escaping.
        extra = f', "protocol": "{protocol}"' if protocol else ""
        line = (
            f'{{"event": "request", "request_id": "{request_id}", '
            f'"server_request_id": "{server_request_id or request_id}", "endpoint": "{endpoint}", '
            f'"status": {status}, "latency_ms": {latency_ms:.3f}, "cpu_ms": {cpu_ms:.3f}, '
            f'"memory_delta_mb": {memory_delta_mb:.3f}{extra}}}\n'
        )
        if len(self._waiting) < MAX_WAITING:
            self._waiting.append(line)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="request-log", daemon=True)
            self._writer.start()
            atexit.register(self.close)

    def flush(self) -> None:
        """Write every waiting line now (in the calling thread)."""
        lines = []
        while self._waiting:
            lines.append(self._waiting.popleft())
        if not lines:
            return
        try:
            os.write(self.fd, "".join(lines).encode())
        except OSError:
            self.enabled = False  # a closed stdout must never fail requests

    def close(self) -> None:
        """Stop the writer thread and write what waits: every line is written on return."""
        self._stop.set()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=1.0)  # a write it started finishes before ours
        self.flush()

    def _write(self) -> None:
        while not self._stop.wait(WRITE_INTERVAL_S):
            self.flush()
