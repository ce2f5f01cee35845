"""Keep hostile or sloppy clients from flooding the server log with tracebacks.

BentoML logs a full traceback at ERROR level (`log_exception` in its HTTP app) for every
request body that fails validation. Under hostile traffic that is megabytes of log and
CPU for nothing: the client already got a 400, and our middleware logs one JSON line per
request with its status and request id. This filter drops those records for client errors
(pydantic validation, BentoML 4xx, a body over the size limit, a client gone) and lets
every server-side error through unchanged.

`configure_output` decides where the service's own lines go (called from `install`):
IRIS_REQUEST_LOG_FILE moves the per-request JSON lines to a file (`make serve` sets it, so
the terminal keeps start-up, model switches, warnings and errors); unset, they stay on
standard output (the container, for the log shipper). Model switches (logger
iris_service.models) are logged at INFO, which BentoML's root level (WARNING) would drop.
"""

from __future__ import annotations

import logging
import os

BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
REQUEST_LOG_FILE_ENV = "IRIS_REQUEST_LOG_FILE"
# Loggers whose INFO lines an operator needs: which model serves, and every switch.
INFO_LOGGERS = ("iris_service.models", "iris_service.inference.core")

_request_log_fd: int | None = None


def is_client_error(exc: BaseException | None) -> bool:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect

    from iris_service.errors import Refusal

    if isinstance(exc, ValidationError | ClientDisconnect):
        return True
    if isinstance(exc, Refusal):
        return exc.status < 500
    if isinstance(exc, BentoMLException):
        return 400 <= exc.error_code.value < 500
    return False


class ClientErrorTracebackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not is_client_error(exc)


def request_log_fd() -> int:
    """Where the request log (iris_service/http/request_log.py) writes: the file named by
    IRIS_REQUEST_LOG_FILE, opened once per process for appending (every worker appends whole
    lines with one write each), else standard output."""
    global _request_log_fd
    path = os.environ.get(REQUEST_LOG_FILE_ENV)
    if not path:
        return 1
    if _request_log_fd is None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _request_log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _request_log_fd


def configure_output() -> None:
    """Model switches reach the log at INFO; the request log's file is opened early, so that
    a path that cannot be written fails the start, not the first request."""
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    request_log_fd()


def install() -> None:
    """Idempotent: attach the filter to BentoML's HTTP app logger once per process, and
    configure where the service's lines go (configure_output)."""
    target = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorTracebackFilter) for f in target.filters):
        target.addFilter(ClientErrorTracebackFilter())
    configure_output()
