"""The structured request log: one JSON line per prediction request on standard output.

BentoML configures only its own loggers, so ours would be dropped at the root logger's
WARNING level. This replaces BentoML's access log for prediction routes (disabled in
configuration.yaml): the line carries our request id and measurements, which BentoML's
does not. IRIS_REQUEST_LOG=off silences it.
"""

from __future__ import annotations

import logging
import os
import sys

REQUEST_LOGGER_NAME = "iris_service.requests"


def configure_request_log() -> logging.Logger:
    logger = logging.getLogger(REQUEST_LOGGER_NAME)
    if os.environ.get("IRIS_REQUEST_LOG", "on").lower() in {"off", "0", "false", "no"}:
        logger.setLevel(logging.WARNING)
        return logger
    if not any(getattr(h, "is_request_log", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.is_request_log = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
