"""The one place the API service calls the runner, and what every failure of that call means.

The runner is a separate process reached over HTTP (`bentoml.depends`). When it dies, hangs
or restarts, the internal call fails in many ways: the aiohttp client cannot connect or loses
the connection (ClientConnectionError, ServerDisconnectedError, ClientOSError), loses it in
the middle of the answer's body (ClientPayloadError: "Response payload is not completed",
which is not a connection error), gives up waiting (TimeoutError), or BentoML's client wrapper
turns the runner's own error status into a BentoMLException. None of these is the client's
fault, and none is an internal error of the API: each becomes a 503 with Retry-After (the
runner is unreachable, restarting or busy: retry shortly) or a 504 (no answer in time).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
from bentoml.exceptions import BentoMLException

logger = logging.getLogger("iris_service.api")

# A pooled keep-alive connection the runner closed just as it was reused (uvicorn closes
# idle connections after 5 s, aiohttp keeps them 15 s): seen as a disconnect, a reset, or
# ClientOSError "Can not write request body". Inference is idempotent: retry once.
STALE_CONNECTION = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)

NOT_READY = "model_not_ready"


@dataclass(frozen=True)
class RunnerFailure:
    """What the client is told about a failed runner call."""

    status: int  # 503 or 504
    detail: str
    code: str | None  # the error code of the answer; None: the status's default


UNREACHABLE = RunnerFailure(503, "The model runner is not reachable; retry shortly.", NOT_READY)
BUSY = RunnerFailure(503, "The model runner is busy or starting; retry shortly.", NOT_READY)
FAILED = RunnerFailure(503, "The model runner failed to answer; retry shortly.", NOT_READY)
SILENT = RunnerFailure(503, "The model runner is not answering; retry shortly.", NOT_READY)
TIMED_OUT = RunnerFailure(504, "The model did not answer in time.", None)


def classify(exc: BaseException) -> RunnerFailure:
    """The answer for a failure of the runner call (every exception maps to 503 or 504)."""
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return TIMED_OUT
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return UNREACHABLE
    if isinstance(exc, BentoMLException):
        status = exc.error_code.value
        if status == 504:
            return TIMED_OUT
        if status in (429, 502, 503):
            return BUSY
        return FAILED
    # ClientPayloadError (answer cut off), ClientResponseError (garbled answer), an answer
    # that cannot be deserialized, or anything else the call raised.
    return FAILED


def describe(exc: BaseException) -> str:
    """One log line's worth: the exception's type and first line, no traceback."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {text}"


async def call_with_retry(
    call: Callable[[np.ndarray], Awaitable[np.ndarray]], rows: np.ndarray
) -> np.ndarray:
    """`call(rows)`, retried once when a pooled connection turned out to be stale."""
    try:
        return await call(rows)
    except STALE_CONNECTION:
        return await call(rows)
