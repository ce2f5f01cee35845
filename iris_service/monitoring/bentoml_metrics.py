"""BentoML's own request metrics, kept to the routes the service has.

BentoML 1.4 measures every HTTP request in `RunnerTrafficMetricsMiddleware`, the outermost
middleware of each service, labelled with the request's raw URL path: a client that asks
for ten thousand made-up paths (no API key is checked that far out) makes ten thousand
`bentoml_service_request_total` and `_duration_seconds` series, each a bucket set in the
multiprocess metric files, on every scrape, for the life of the pod. A model name or version
in a V2 path does the same on a real route.

`bound_bentoml_request_metrics(paths)` makes BentoML use `RouteBoundTrafficMetrics`
instead (BentoML imports the class when it builds each server's app, so the module attribute
is replaced before that): it measures requests to the given fixed paths and to the
service's own API routes (`server_context.service_routes`, which also names the runner's
methods) as BentoML would, and hands every other request on unmeasured. Those are 404s or
routes with a path parameter; the service's own metrics (metrics.py) label the latter by
route pattern, never by path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bentoml._internal.context import server_context
from bentoml._internal.server.http import instruments

_BENTOML_MIDDLEWARE = instruments.RunnerTrafficMetricsMiddleware


class RouteBoundTrafficMetrics(_BENTOML_MIDDLEWARE):  # type: ignore[misc,valid-type]
    """BentoML's request metrics for the known routes only (see the module's docstring)."""

    fixed_paths: frozenset[str] = frozenset()

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self.measured_paths: frozenset[str] | None = None  # known once the worker has started

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.measured_paths is None:
            self.measured_paths = self.fixed_paths | frozenset(server_context.service_routes)
        if scope["type"] == "http" and scope["path"] not in self.measured_paths:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def bound_bentoml_request_metrics(paths: Iterable[str]) -> None:
    """Label BentoML's request metrics only with `paths` and the services' API routes."""
    RouteBoundTrafficMetrics.fixed_paths = frozenset(paths)
    instruments.RunnerTrafficMetricsMiddleware = RouteBoundTrafficMetrics  # type: ignore[misc]


def fixed_paths(openapi_paths: Iterable[str]) -> frozenset[str]:
    """The paths of an OpenAPI document that have no path parameter."""
    return frozenset(path for path in openapi_paths if "{" not in path)
