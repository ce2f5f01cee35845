"""A bounded life for each connection to the runner, so that new runner replicas get load.

A Kubernetes Service (kube-proxy) balances *connections*, not requests, and the API's runner
client (aiohttp, through `bentoml.depends`) keeps its connections open for as long as they are
used. Replicas the HPA adds would get no traffic. BentoML's own knob (`runner_connection:
max_requests/max_age` in configuration.yaml) closes the client's whole session while other
requests are still in flight on it, which fails them (bentoml issue #4971). Instead the
runner ends each connection itself, between two requests: the answer that completes the
connection's `max_requests`-th request, or the first after `max_age_s`, carries
`Connection: close` (uvicorn then closes it after that answer; aiohttp does not reuse it). No
request is ever cut; the client's next request opens a new connection, which the Service may
send to another replica.

Connections are told apart by the peer's (address, port), which is unique while a connection
is open; a connection that ended otherwise (idle timeout) is forgotten after `max_age_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[..., Any]


class ConnectionLifetimeMiddleware:
    """ASGI middleware: `Connection: close` once a connection reaches its count or age."""

    def __init__(
        self,
        app: ASGIApp,
        max_requests: int,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_requests < 1 or max_age_s <= 0:
            raise ValueError("need max_requests >= 1 and max_age_s > 0")
        self.app, self.clock = app, clock
        self.max_requests, self.max_age_s = max_requests, max_age_s
        self._connections: dict[tuple[str, int], list[float]] = {}  # peer -> [opened, count]
        self._swept_at = clock()

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        peer = scope.get("client")
        if scope["type"] != "http" or not peer:
            await self.app(scope, receive, send)
            return
        close = self._count(tuple(peer))

        async def send_closing(message: Message) -> None:
            if close and message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing if close else send)

    def _count(self, peer: tuple[str, int]) -> bool:
        """Count one request of `peer`'s connection; True when its answer ends it."""
        now = self.clock()
        self._sweep(now)
        entry = self._connections.setdefault(peer, [now, 0])
        entry[1] += 1
        if entry[1] >= self.max_requests or now - entry[0] >= self.max_age_s:
            del self._connections[peer]
            return True
        return False

    def _sweep(self, now: float) -> None:
        """Forget connections older than twice `max_age_s` (closed by other means)."""
        if now - self._swept_at < self.max_age_s:
            return
        self._swept_at = now
        limit = 2 * self.max_age_s
        for peer in [p for p, (opened, _) in self._connections.items() if now - opened > limit]:
            del self._connections[peer]
