"""Every way the internal runner call can fail maps to 503 (retry) or 504 (no answer in time).

Each exception below is one the aiohttp client, BentoML's client wrapper or the
deserialization of the answer raises when the runner dies, hangs or restarts mid-request.
"""

from __future__ import annotations

import asyncio
import pickle
from http import HTTPStatus

import aiohttp
import numpy as np
import pytest
from aiohttp.client_reqrep import ConnectionKey
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from iris_service import runner_client
from iris_service.coalescing import RequestCoalescer

KEY = ConnectionKey("localhost", 80, False, True, None, None, None)


def _response_error() -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=400, message="Expected HTTP/")  # type: ignore[arg-type]


UNAVAILABLE = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
    aiohttp.ClientOSError(32, "Can not write request body"),
    aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    _response_error(),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    ServiceUnavailable("process is overloaded"),
    BentoMLException("bad gateway", error_code=HTTPStatus.BAD_GATEWAY),
    BentoMLException("too many", error_code=HTTPStatus.TOO_MANY_REQUESTS),
    BentoMLException("Internal Server Error", error_code=HTTPStatus.INTERNAL_SERVER_ERROR),
    pickle.UnpicklingError("pickle data was truncated"),
    EOFError("Ran out of input"),
    RuntimeError("the runner call was cancelled"),
]
TIMED_OUT = [
    TimeoutError(),
    TimeoutError(),
    aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    aiohttp.ConnectionTimeoutError("Connection timeout"),
    BentoMLException("gateway timeout", error_code=HTTPStatus.GATEWAY_TIMEOUT),
]


@pytest.mark.parametrize("exc", UNAVAILABLE, ids=lambda e: type(e).__name__)
def test_a_runner_that_cannot_answer_is_503_model_not_ready(exc: BaseException) -> None:
    failure = runner_client.classify(exc)
    assert (failure.status, failure.code) == (503, "model_not_ready")


@pytest.mark.parametrize("exc", TIMED_OUT, ids=lambda e: type(e).__name__)
def test_a_runner_that_answers_too_late_is_504(exc: BaseException) -> None:
    assert runner_client.classify(exc).status == 504


def test_the_log_line_names_the_exception_without_a_traceback() -> None:
    line = runner_client.describe(aiohttp.ClientPayloadError("Response payload\nis not completed"))
    assert line == "aiohttp.client_exceptions.ClientPayloadError: Response payload"


async def test_a_stale_connection_is_retried_once_and_only_once() -> None:
    calls: list[int] = []

    async def flaky(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 1:
            raise aiohttp.ServerDisconnectedError()
        return rows

    assert (await runner_client.call_with_retry(flaky, np.ones((2, 4)))).shape == (2, 4)
    assert calls == [2, 2]

    async def dead(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        raise aiohttp.ServerDisconnectedError()

    calls.clear()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await runner_client.call_with_retry(dead, np.ones((1, 4)))
    assert calls == [1, 1]


async def test_a_cancelled_runner_call_fails_its_requests_instead_of_hanging() -> None:
    started = asyncio.Event()

    async def never_answers(rows: np.ndarray) -> np.ndarray:
        started.set()
        await asyncio.sleep(3600)
        return rows

    coalescer = RequestCoalescer(never_answers, max_rows=10)
    request = asyncio.create_task(coalescer.predict(np.ones((1, 4))))
    await started.wait()
    [call] = coalescer._tasks  # the coalescer keeps a reference to its runner call
    call.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        await asyncio.wait_for(request, timeout=2)
    assert runner_client.classify(RuntimeError("cancelled")).status == 503


def test_our_answer_deadline_comes_before_bentomls_own_504() -> None:
    """BentoML's own 504 (its `traffic.timeout`) has another shape and no request id: the
    service's deadline for a runner answer must expire first, with the configured timeout."""
    import yaml

    from iris_pipeline.paths import PROJECT_ROOT
    from iris_service.settings import ANSWER_DEADLINE_SECONDS, API_TIMEOUT_SECONDS

    services = yaml.safe_load((PROJECT_ROOT / "configuration.yaml").read_text())["services"]
    assert services["IrisClassifier"]["traffic"]["timeout"] == API_TIMEOUT_SECONDS
    assert services["IrisModelRunner"]["traffic"]["timeout"] < ANSWER_DEADLINE_SECONDS
    assert 0 < ANSWER_DEADLINE_SECONDS <= API_TIMEOUT_SECONDS - 1


async def test_a_deadline_around_a_silent_coalesced_call_becomes_our_504() -> None:
    """What service.py does: the runner call never answers; asyncio.timeout ends the wait,
    classify() makes it our 504, and the coalescer still serves the next request."""
    release = asyncio.Event()

    async def hangs_then_answers(rows: np.ndarray) -> np.ndarray:
        await release.wait()
        return rows

    coalescer = RequestCoalescer(hangs_then_answers, max_rows=8, max_in_flight=1)
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await coalescer.predict(np.ones((1, 4)))
    assert runner_client.classify(caught.value) is runner_client.TIMED_OUT
    release.set()
    assert (await asyncio.wait_for(coalescer.predict(np.zeros((1, 4))), 5) == 0).all()
