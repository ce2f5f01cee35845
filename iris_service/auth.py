"""Optional API key for the prediction endpoints.

With IRIS_API_KEY set, /predict and /predict_batch require `Authorization: Bearer <key>`;
the comparison is constant-time (hmac.compare_digest). Health, metrics and docs stay open
for probes and scrapers. Refusals are 401 with `WWW-Authenticate: Bearer`, rewritten into
the one error shape by the monitoring middleware. The key is never logged or echoed.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import JSONResponse

from .settings import PREDICTION_PATHS, RoutePatterns

_BEARER = b"bearer "


def _bearer_token(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[: len(_BEARER)].lower() == _BEARER:
                return value[len(_BEARER) :].strip()
            return None
    return None


class ApiKeyMiddleware:
    """401 for prediction requests without the right bearer token; a no-op without a key."""

    def __init__(
        self, app: Any, api_key: str | None, paths: tuple[str, ...] = PREDICTION_PATHS
    ) -> None:
        self.app = app
        self.expected = api_key.encode() if api_key else None
        self.paths = RoutePatterns(paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        if token is not None and hmac.compare_digest(token, self.expected):
            await self.app(scope, receive, send)
            return
        detail = "missing API key" if token is None else "invalid API key"
        refusal = JSONResponse(
            {"detail": f"{detail}: send Authorization: Bearer <key>"}, status_code=401
        )
        await refusal(scope, receive, send)
