"""Keep hostile or sloppy clients from flooding the server log with tracebacks.

BentoML logs a full traceback at ERROR level (`log_exception` in its HTTP app) for every
request body that fails validation. Under hostile traffic that is megabytes of log and
CPU for nothing: the client already got a 400, and our middleware logs one JSON line per
request with its status and request id. This filter drops those records for client errors
(pydantic validation, BentoML 4xx, a body over the size limit, a client gone) and lets
every server-side error through unchanged.
"""

from __future__ import annotations

import logging

BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


def is_client_error(exc: BaseException | None) -> bool:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect

    from .middleware import RequestTooLarge

    if isinstance(exc, ValidationError | RequestTooLarge | ClientDisconnect):
        return True
    if isinstance(exc, BentoMLException):
        return 400 <= exc.error_code.value < 500
    return False


class ClientErrorTracebackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not is_client_error(exc)


def install() -> None:
    """Idempotent: attach the filter to BentoML's HTTP app logger once per process."""
    target = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorTracebackFilter) for f in target.filters):
        target.addFilter(ClientErrorTracebackFilter())
