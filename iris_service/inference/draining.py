"""Let the runner outlive the API service's drain on shutdown.

On SIGTERM, `bentoml serve` (circus) stops the API and the runner processes at the same time.
The API then finishes its in-flight requests, but those need the runner, which would
already have closed its socket: they would end as 503. So the runner postpones its own
shutdown until it has been idle for a moment (the API has drained) or a maximum has passed,
then hands the signal to uvicorn's normal graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("iris_service.inference.draining")


def postpone_sigterm_until_idle(
    last_activity: Callable[[], float], idle_seconds: float = 0.5, max_seconds: float = 5.0
) -> None:
    """Wrap the running server's SIGTERM handler; call from inside the event loop."""
    loop = asyncio.get_running_loop()
    original: Any = signal.getsignal(signal.SIGTERM)
    if not callable(original):
        return
    deadline: list[float] = []

    def check(sig: int, frame: FrameType | None) -> None:
        idle = time.monotonic() - last_activity()
        if idle >= idle_seconds or time.monotonic() >= deadline[0]:
            logger.info("runner drained (idle %.2f s); shutting down", idle)
            original(sig, frame)
        else:
            loop.call_later(0.05, check, sig, frame)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if deadline:  # a second SIGTERM: stop now
            original(sig, frame)
            return
        deadline.append(time.monotonic() + max_seconds)
        loop.call_soon_threadsafe(check, sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
