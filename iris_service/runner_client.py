"""The one place the API service calls the runner, retried once on a stale connection.

The runner is a separate process reached over HTTP (`bentoml.depends`). Whatever else makes
the call fail (the runner died, hangs, restarts, answers garbage) the inference core does not
pass on to the client: it computes the rows in the API worker instead
(iris_service/inference.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")
U = TypeVar("U")

# A pooled keep-alive connection the runner closed just as it was reused (uvicorn closes
# idle connections after 5 s, aiohttp keeps them 15 s): seen as a disconnect, a reset, or
# ClientOSError "Can not write request body". Inference is idempotent: retry once.
STALE_CONNECTION = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)


async def call_with_retry(call: Callable[[T], Awaitable[U]], argument: T) -> U:
    """`call(argument)`, retried once when a pooled connection turned out to be stale."""
    try:
        return await call(argument)
    except STALE_CONNECTION:
        return await call(argument)
