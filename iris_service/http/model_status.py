"""GET /model: which models this API worker answers with, from the inference core's state.

BentoML's /readyz answers with its own body (`__is_ready__` can only say yes or no), so the
models in service are shown on this small route of the API service, next to /drift:

    {"champion": "iris-classifier:<version>", "challenger": "iris-classifier:<version>" | null,
     "mode": "none" | "shadow" | "canary", "canary_share": 0.2 | null,
     "aliases_updated_at": "..." | null, "last_refusal": "..." | null}

`last_refusal` says what was last refused and why (an aliases file ignored, a version that
could not be loaded) without file paths or exception text: those are in the log.

It costs no call to the runner: every process that holds a model follows the aliases file on
its own, and they agree within one poll interval. The same is in /metrics as
iris_model_info{model_tag, role} = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def model_route(status: Callable[[], dict[str, Any]]) -> Route:
    """GET /model, answered with `status()` (the inference core's models in service)."""

    async def model(_: Request) -> Response:
        return JSONResponse(status())

    return Route("/model", model, methods=["GET"])
