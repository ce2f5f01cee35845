"""The runner ends each connection after a bounded count or age, between requests: the
answer that completes it carries `Connection: close` and nothing else changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iris_service.inference.connection_lifetime import ConnectionLifetimeMiddleware


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def app(scope: dict, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"keep-alive")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def request(middleware: ConnectionLifetimeMiddleware, peer: tuple[str, int]) -> bool:
    """One request from `peer`; whether its answer closes the connection."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    asyncio.run(middleware({"type": "http", "client": peer}, receive, send))
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert sent[1]["body"] == b"{}"
    return headers.get(b"connection") == b"close"


def test_the_nth_request_of_a_connection_closes_it() -> None:
    middleware = ConnectionLifetimeMiddleware(app, max_requests=3, max_age_s=60, clock=Clock())
    peer = ("10.0.0.1", 40000)
    assert [request(middleware, peer) for _ in range(7)] == [
        False, False, True, False, False, True, False,
    ]  # fmt: skip
    assert request(middleware, ("10.0.0.1", 40001)) is False  # counted per connection


def test_the_first_answer_after_max_age_closes_it() -> None:
    clock = Clock()
    middleware = ConnectionLifetimeMiddleware(app, max_requests=1000, max_age_s=5, clock=clock)
    peer = ("10.0.0.2", 40000)
    assert request(middleware, peer) is False
    clock.now = 4.9
    assert request(middleware, peer) is False
    clock.now = 5.0
    assert request(middleware, peer) is True
    assert request(middleware, peer) is False  # a new connection from the same port


def test_connections_that_ended_otherwise_are_forgotten() -> None:
    clock = Clock()
    middleware = ConnectionLifetimeMiddleware(app, max_requests=1000, max_age_s=1, clock=clock)
    for port in range(100):
        request(middleware, ("10.0.0.3", port))
    clock.now = 3.0
    request(middleware, ("10.0.0.4", 1))
    assert len(middleware._connections) == 1


def test_other_scopes_pass_untouched() -> None:
    seen = []

    async def lifespan_app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = ConnectionLifetimeMiddleware(lifespan_app, max_requests=1, max_age_s=1)
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConnectionLifetimeMiddleware(app, max_requests=0, max_age_s=1)
