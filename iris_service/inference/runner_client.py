"""The one place the API service calls the runner, retried once on a stale connection.

The runner is a separate process reached over HTTP (`bentoml.depends`). Whatever else makes
the call fail (the runner died, hangs, restarts, answers garbage) the inference core does not
pass on to the client: it computes the rows in the API worker instead, or, when the runner is
another tier, answers 503 with Retry-After (iris_service/inference/core.py, docs/deployment.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")
U = TypeVar("U")

# A pooled keep-alive connection the runner closed just as it was reused (uvicorn closes
# idle connections after 5 s, aiohttp keeps them 15 s): seen as a disconnect, a reset, or
# ClientOSError "Can not write request body"; or a runner replica (tiers) that died with the
# request, before or while answering (an answer cut short is a ClientPayloadError).
# Inference is idempotent: retry once.
STALE_CONNECTION = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)
# Before the retry: when a runner replica dies, every pooled connection to it is closed at
# once (by the replica's kernel, or the Service's proxy), but the client learns it only when
# its event loop reads each close. A short pause lets it read them, so that the retry takes
# a connection that is still open or a new one (to a replica that is alive), not another
# connection to the dead replica.
RETRY_PAUSE_S = 0.01


async def call_with_retry(call: Callable[[T], Awaitable[U]], argument: T) -> U:
    """`call(argument)`, retried once when a pooled connection turned out to be stale."""
    try:
        return await call(argument)
    except STALE_CONNECTION:
        await asyncio.sleep(RETRY_PAUSE_S)
        return await call(argument)
