"""Which model answers a request, and the challenger's shadow predictions (API side).

IRIS_CHALLENGER_MODE (settings.CHALLENGER_MODE) decides, per request:
- none: the champion answers (the runner's `predict_proba`).
- canary: a random share (settings.CANARY_SHARE, drawn from a generator seeded with
  settings.CANARY_SEED) is answered by the challenger (`predict_proba_challenger`); its
  answer names the challenger through the fingerprint column, like any answer.
- shadow: the champion answers; the same rows are then sent to the challenger in a
  background task, off the answer's path (the client does not wait for it). At most
  `max_shadow_in_flight` such tasks per API worker: when saturated, the shadow prediction is
  dropped (never queued) and counted. The classes of both are compared per flower:
  iris_shadow_predictions_total{agreement}, iris_shadow_confusion_total{champion_class,
  challenger_class}; flowers not shadowed are counted in iris_shadow_skipped_total{reason}.

When the runner holds no challenger (none named, or refused), it answers the challenger call
with the fingerprint NO_MODEL: a canary request is then answered by the champion, and the
challenger is not asked again for `absent_backoff_s` (the runner's alias poll interval).
Every answered request is counted in iris_routed_requests_total{role}.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import numpy as np

from . import metrics
from .model_loading import NO_MODEL
from .settings import CLASS_NAMES

logger = logging.getLogger("iris_service.challenger")

RunnerCall = Callable[[np.ndarray], Awaitable[np.ndarray]]


def answered_by_challenger(rng: random.Random, mode: str, canary_share: float) -> bool:
    """The routing decision of one request: True when the challenger should answer it."""
    return mode == "canary" and canary_share > 0 and rng.random() < canary_share


def shadow_outcomes(champion: np.ndarray, challenger: np.ndarray) -> list[tuple[str, str]]:
    """(champion class, challenger class) per flower, from two runner answers (probabilities
    and a last fingerprint column)."""
    champion_ids = np.argmax(champion[:, :-1], axis=1)
    challenger_ids = np.argmax(challenger[:, :-1], axis=1)
    return [
        (CLASS_NAMES[a], CLASS_NAMES[b])
        for a, b in zip(champion_ids.tolist(), challenger_ids.tolist(), strict=True)
    ]


def count_shadow(outcomes: list[tuple[str, str]]) -> None:
    for champion_class, challenger_class in outcomes:
        agreement = "agree" if champion_class == challenger_class else "disagree"
        metrics.SHADOW_PREDICTIONS_TOTAL.labels(agreement).inc()
        metrics.SHADOW_CONFUSION_TOTAL.labels(champion_class, challenger_class).inc()


class ChallengerRouter:
    """Sends each request's rows to the champion or the challenger, and shadows them."""

    def __init__(
        self,
        mode: str,
        champion: RunnerCall,
        challenger: RunnerCall,
        canary_share: float = 0.0,
        seed: int = 1,
        max_shadow_in_flight: int = 32,
        absent_backoff_s: float = 2.0,
    ) -> None:
        self.mode = mode
        self._champion = champion
        self._challenger = challenger
        self.canary_share = canary_share
        self._rng = random.Random(seed)
        self.max_shadow_in_flight = max_shadow_in_flight
        self._absent_backoff_s = absent_backoff_s
        self._absent_until = 0.0
        self.shadow_in_flight = 0
        # The event loop keeps only weak references to tasks: hold them until they finish.
        self._tasks: set[asyncio.Task[None]] = set()

    async def predict(self, rows: np.ndarray) -> np.ndarray:
        """The runner's answer for `rows` (probabilities and a fingerprint column), from the
        model this request is routed to. Failures of the runner call propagate."""
        if self._challenger_may_answer() and answered_by_challenger(
            self._rng, self.mode, self.canary_share
        ):
            answer = await self._challenger(rows)
            if answer[0, -1] != NO_MODEL:
                metrics.ROUTED_REQUESTS_TOTAL.labels("challenger").inc()
                return answer
            self._challenger_absent()
        answer = await self._champion(rows)
        metrics.ROUTED_REQUESTS_TOTAL.labels("champion").inc()
        if self.mode == "shadow":
            self._shadow(rows, answer)
        return answer

    async def drain(self) -> None:
        """Wait for the shadow predictions in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _challenger_may_answer(self) -> bool:
        return time.monotonic() >= self._absent_until

    def _challenger_absent(self) -> None:
        self._absent_until = time.monotonic() + self._absent_backoff_s

    def _shadow(self, rows: np.ndarray, champion_answer: np.ndarray) -> None:
        if not self._challenger_may_answer():
            metrics.SHADOW_SKIPPED_TOTAL.labels("no_challenger").inc(len(rows))
            return
        if self.shadow_in_flight >= self.max_shadow_in_flight:
            metrics.SHADOW_SKIPPED_TOTAL.labels("saturated").inc(len(rows))
            return
        self.shadow_in_flight += 1
        task = asyncio.get_running_loop().create_task(self._compare(rows, champion_answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, rows: np.ndarray, champion_answer: np.ndarray) -> None:
        try:
            answer = await self._challenger(rows)
        except Exception as exc:  # noqa: BLE001 - a shadow failure never reaches a client
            metrics.SHADOW_SKIPPED_TOTAL.labels("failed").inc(len(rows))
            logger.debug("shadow prediction failed: %s: %s", type(exc).__name__, exc)
            return
        finally:
            self.shadow_in_flight -= 1
        if answer[0, -1] == NO_MODEL:
            self._challenger_absent()
            metrics.SHADOW_SKIPPED_TOTAL.labels("no_challenger").inc(len(rows))
            return
        count_shadow(shadow_outcomes(champion_answer, answer))
