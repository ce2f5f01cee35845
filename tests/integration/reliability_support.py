"""Bounded async traffic for the reliability tests: every loop stops on a count or a clock."""

from __future__ import annotations

import asyncio
import errno
import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import requests

from tests.support import VERSICOLOR

ERROR_KEYS = {"error", "detail", "request_id"}


# The failure of a request that never reached the server: the connection was refused, so
# nothing was sent. Every other connection-level failure may have lost an answer.
REFUSED = "ConnectionRefused"
# The connection was reset: the answer was dropped, or the request was never read (a
# connection still in the listener's queue when the server closed it); only the server's
# own logs tell which.
RESET = "ConnectionReset"


@dataclass
class Outcome:
    """What one request got: a status, or a connection-level failure (REFUSED, or the name of
    the exception that ended it after the connection was made)."""

    status: int | None
    request_id: str
    latency_s: float
    error: str | None = None
    retry_after: str | None = None
    body: dict | None = None
    server_request_id: str | None = None
    started_at: float = 0.0  # time.monotonic() when the request was sent
    finished_at: float = 0.0  # ... and when its answer (or failure) was complete


def failure_name(exc: BaseException) -> str:
    """REFUSED when the connection was refused before anything was sent, RESET when it was
    reset by the server, else the exception's type."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return REFUSED
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET:
        return RESET
    return type(exc).__name__


@dataclass
class TrafficLog:
    outcomes: list[Outcome] = field(default_factory=list)

    def statuses(self) -> Counter:
        return Counter(o.status if o.status is not None else o.error for o in self.outcomes)

    def with_status(self, status: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]


def assert_error_shape(status: int, body: dict, request_id_header: str | None) -> None:
    assert set(body) == ERROR_KEYS, (status, body)
    assert body["request_id"] == request_id_header, (status, body)


async def one_request(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: str = ""
) -> Outcome:
    request_id = uuid.uuid4().hex
    started = time.monotonic()
    try:
        async with session.post(
            url,
            data=body or json.dumps(VERSICOLOR),
            headers={"content-type": "application/json", "x-request-id": request_id, **headers},
        ) as response:
            raw = await response.read()
            parsed = json.loads(raw) if raw else None
            if response.status >= 400:
                assert_error_shape(response.status, parsed, response.headers.get("x-request-id"))
            finished = time.monotonic()
            return Outcome(
                response.status,
                request_id,
                finished - started,
                retry_after=response.headers.get("retry-after"),
                body=parsed,
                server_request_id=response.headers.get("x-server-request-id"),
                started_at=started,
                finished_at=finished,
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        finished = time.monotonic()
        return Outcome(
            None,
            request_id,
            finished - started,
            error=failure_name(exc),
            started_at=started,
            finished_at=finished,
        )


async def drive(
    url: str,
    concurrency: int,
    duration_s: float,
    headers: dict[str, str] | None = None,
    max_requests: int = 1_000_000,
    pause_after_failure_s: float = 0.05,
    pause_after_refusal_s: float = 0.0,
    fresh_connections: bool = False,
    bodies: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    log: TrafficLog | None = None,
) -> TrafficLog:
    """`concurrency` clients, each sending back to back until the clock or the count runs out.

    With `fresh_connections`, every request opens its own connection (no keep-alive), so a
    server that stops listening refuses new requests at the connection instead of racing
    them against the close of an idle kept-alive connection. With `bodies`, each of them is
    sent once (the clients share the list) and the count is their number; without, every
    request is one VERSICOLOR. Setting `stop` ends it early (the clock still bounds it). A
    `log` given by the caller fills while it runs (to wait on what the answers show)."""
    log = log if log is not None else TrafficLog()
    pending = iter(bodies) if bodies is not None else None
    if bodies is not None:
        max_requests = min(max_requests, len(bodies))
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=fresh_connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while time.monotonic() < deadline and len(log.outcomes) < max_requests:
                if stop is not None and stop.is_set():
                    return
                body = next(pending, None) if pending is not None else ""
                if body is None:
                    return
                outcome = await one_request(session, url, headers or {}, body)
                log.outcomes.append(outcome)
                if outcome.status is None:
                    await asyncio.sleep(pause_after_failure_s)
                elif outcome.status in (429, 503) and pause_after_refusal_s:
                    await asyncio.sleep(pause_after_refusal_s)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return log


def healthy(base_url: str, headers: dict[str, str] | None = None) -> bool:
    ready = requests.get(f"{base_url}/readyz", timeout=5).status_code == 200
    answer = requests.post(f"{base_url}/predict", json=VERSICOLOR, headers=headers, timeout=10)
    return ready and answer.status_code == 200 and answer.json()["class_name"] == "versicolor"
