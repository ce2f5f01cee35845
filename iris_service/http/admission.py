"""Admission control: a fixed number of prediction requests in flight per API worker.

BentoML's own `traffic.max_concurrency` answers excess requests outside our middleware
(429 `{"error": "Too many requests"}`, no Retry-After). This middleware sits inside the
request-monitoring middleware instead, so a refused request gets the one error shape, a
request id, `Retry-After` and a place in the metrics. A refusal costs no body read and no
model call; nothing waits in a queue, so memory stays bounded however many clients connect.

A request takes as many places as the work it is (`costs`, by path; one unless named): a
POST /explain computes 800 model rows for one flower and takes EXPLAIN_ADMISSION_COST places,
so a burst of explanations cannot crowd out more predictions than it displaces in CPU. (A V2
request with `parameters.explain` is known only once its body is read: it takes one place,
and its rows are bounded by MAX_EXPLAIN_FLOWERS instead.)
"""

from __future__ import annotations

from typing import Any

from iris_service.errors import Overloaded
from iris_service.names import PREDICTION_PATHS, RoutePatterns
from iris_service.settings import settings

# Places a request takes, by exact path (others: one).
COSTS: dict[str, int] = {"/explain": settings.explain_admission_cost}


class InFlight:
    """The places taken by prediction requests in flight in this API worker (HTTP, and the
    gRPC ModelInfer calls of iris_service/protocols/grpc_guard.py, which count in the same
    object: one limit per worker whatever the transport): admitted, and not yet
    answered (counted until the last byte of the answer is sent, not until the app returns,
    so that work after the answer never holds a place another client could take)."""

    def __init__(self) -> None:
        self.count = 0


class AdmissionControlMiddleware:
    """Refuses prediction requests with 429 while `limit` of them are in flight."""

    def __init__(
        self,
        app: Any,
        limit: int = settings.max_concurrent_requests,
        paths: tuple[str, ...] = PREDICTION_PATHS,
        counter: InFlight | None = None,
        costs: dict[str, int] | None = None,
    ) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.app = app
        self.limit = limit
        # A request never costs more than the whole limit (it could never be admitted).
        self.costs = {path: min(cost, limit) for path, cost in (costs or COSTS).items()}
        self.paths = RoutePatterns(paths)
        self.counter = counter if counter is not None else InFlight()

    @property
    def in_flight(self) -> int:
        return self.counter.count

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        cost = self.costs.get(scope["path"], 1)
        if self.in_flight + cost > self.limit:
            # The monitoring middleware answers it in the error shape with Retry-After.
            detail = f"more than {self.limit} prediction requests in flight; retry shortly"
            if cost > 1:
                detail = (
                    f"no room for a request that takes {cost} of the {self.limit} places for "
                    "prediction requests in flight; retry shortly"
                )
            raise Overloaded(detail)
        counter = self.counter
        counter.count += cost
        answered = False

        async def send_counted(message: dict[str, Any]) -> None:
            nonlocal answered
            if (
                not answered
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                answered = True
                counter.count -= cost
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if not answered:
                counter.count -= cost
