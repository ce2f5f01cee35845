"""GET /model: which models the service answers with, as the runner reports them.

BentoML's /readyz answers with its own body (`__is_ready__` can only say yes or no), so the
models in service are shown on this small route of the API service, next to /drift:

    {"champion": "iris-classifier:<version>", "challenger": "iris-classifier:<version>" | null,
     "mode": "none" | "shadow" | "canary", "canary_share": 0.2 | null,
     "aliases_updated_at": "..." | null, "last_refusal": "..." | null}

`last_refusal` says what the runner last refused and why (an aliases file it ignored, a
version it could not load) without file paths or exception text: those are in its log.

It is the answer of the runner worker that took the call (with several runner workers, each
follows the aliases file on its own and they agree within one poll interval). The same is in
/metrics as iris_model_info{model_tag, role} = 1.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import runner_client
from .errors import error_response

logger = logging.getLogger("iris_service.api")


def model_route(serving_models: Callable[[], Awaitable[dict[str, Any]]]) -> Route:
    """GET /model, answered with `await serving_models()` (the runner's `serving_models`);
    a failed runner call is a 503/504 in the service's error shape."""

    async def model(_: Request) -> Response:
        try:
            return JSONResponse(await serving_models())
        except Exception as exc:  # noqa: BLE001 - classified, logged in one line, answered
            failure = runner_client.classify(exc)
            logger.warning("GET /model: runner call failed (%s)", runner_client.describe(exc))
            return error_response(failure.status, failure.detail, failure.code)

    return Route("/model", model, methods=["GET"])
