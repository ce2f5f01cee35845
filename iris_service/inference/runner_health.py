"""Readiness and liveness of the API service from a heartbeat to the model runner.

BentoML 1.4 answers /readyz by asking each dependency's /readyz with a 5 s timeout; a hung
runner (SIGSTOP, a deadlock) makes that call raise instead of return False, so /readyz
answers 500 after 5 s, and /livez never looks at the runner at all: the orchestrator takes
the pod out of the Service but never restarts it. Here one background task of each API
worker pings the runner every `period_s` with its own short timeout and records what it saw:

- ready: the last ping was answered 200 and no ping has been waiting longer than its timeout
  (so /readyz answers 503 at once from the recorded state, never waits on the runner);
- alive: unless the runner has been silent (pings timing out or outstanding) for longer than
  `grace_s` since its last good answer. A runner that refuses connections (killed, being
  respawned by the supervisor) or answers "not ready" is not silent: the process that
  answers is alive, and a restart of the container would not help it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from iris_service.background import BackgroundLoop

logger = logging.getLogger("iris_service.inference.runner_health")

Ping = Callable[[], Awaitable[bool]]


class PingOutcome(Enum):
    ANSWERED_READY = "ready"
    ANSWERED_NOT_READY = "not_ready"  # an answer other than 200, or a refused connection
    SILENT = "silent"  # no answer within the ping's timeout


class RunnerHeartbeat(BackgroundLoop):
    """The recorded state of periodic runner pings; `run()` is the pinging task."""

    def __init__(
        self,
        ping: Ping,
        period_s: float,
        timeout_s: float,
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < timeout_s <= grace_s or period_s <= 0:
            raise ValueError("need 0 < timeout_s <= grace_s and period_s > 0")
        self.ping, self.period_s, self.timeout_s, self.grace_s = ping, period_s, timeout_s, grace_s
        self.clock = clock
        # Until the first answer, the worker's start counts as the last sign of life.
        self.last_answer_at = clock()
        self.last_outcome: PingOutcome | None = None
        self.pinging_since: float | None = None

    def ready(self) -> bool:
        return self.last_outcome is PingOutcome.ANSWERED_READY and not self._overdue()

    def silent(self) -> bool:
        """The runner did not answer the last ping, or the current one, within the timeout."""
        return self.last_outcome is PingOutcome.SILENT or self._overdue()

    def alive(self) -> bool:
        return not self.silent() or self.clock() - self.last_answer_at <= self.grace_s

    def _overdue(self) -> bool:
        started = self.pinging_since
        return started is not None and self.clock() - started > self.timeout_s

    async def beat(self) -> PingOutcome:
        """One ping, bounded by `timeout_s`; its outcome is recorded."""
        self.pinging_since = self.clock()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that
            # arrives as the ping completes, and the heartbeat would outlive stop().
            async with asyncio.timeout(self.timeout_s):
                answered_ready = await self.ping()
        except TimeoutError:
            outcome = PingOutcome.SILENT
        except Exception as exc:  # noqa: BLE001 - a refused or broken connection is an answer
            logger.debug("runner ping failed: %s", type(exc).__name__)
            outcome = PingOutcome.ANSWERED_NOT_READY
        else:
            ready = PingOutcome.ANSWERED_READY
            outcome = ready if answered_ready else PingOutcome.ANSWERED_NOT_READY
        self.pinging_since = None
        if outcome is not PingOutcome.SILENT:
            self.last_answer_at = self.clock()
        if outcome is not self.last_outcome:
            log = logger.info if outcome is PingOutcome.ANSWERED_READY else logger.warning
            log("model runner heartbeat: %s", outcome.value)
        self.last_outcome = outcome
        return outcome

    async def run(self) -> None:
        """Ping forever, one ping at a time, a ping every `period_s` at most."""
        while True:
            started = self.clock()
            await self.beat()
            await asyncio.sleep(max(0.0, self.period_s - (self.clock() - started)))


def runner_ping(runner: Any) -> Ping:
    """A ping of `runner` as `bentoml.depends` gives it: under `bentoml serve` a remote proxy
    whose `is_ready()` asks the runner's /readyz over its socket; in process (tests that use
    `Service.to_asgi`) the runner instance itself."""
    is_ready = getattr(runner, "is_ready", None)
    if is_ready is not None:
        # No timeout of its own (it would turn silence into "not ready"): the heartbeat's
        # wait_for bounds it and tells silence apart.
        return lambda: is_ready(None)

    async def local() -> bool:
        return bool(runner.__is_ready__())

    return local
