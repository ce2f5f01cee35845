"""The lone request: answered in the API worker by a copy of the runner's champion.

Going through the runner costs a second HTTP request (serialisation, the runner's whole
BentoML stack, its batching dispatcher, a thread hop) that only pays off when it carries the
rows of many concurrent requests. A request that is alone in its API worker gains nothing from
it: it is answered here, in the worker, by the same model version, so an idle service answers
about as fast as a plain web app, and a busy one still batches through the runner
(docs/performance.md, "The lone request").

The runner stays the authority on which model serves. This copy follows it, never the aliases
file: a background task asks the runner which champion it serves (`serving_models`) every
`period_s`, and every champion answer of the runner names its model (the fingerprint column).
As soon as either shows a model other than the copy's, the copy stops answering (requests go
to the runner) until the runner's champion is loaded here, in a thread, with the same checks as
in the runner (checksum, schema, a test prediction). So after a promotion or a rollback no
answer of the old model follows the first answer of the new one. Answers computed here carry
the same fingerprint column as the runner's, so every answer still names its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from .background import BackgroundLoop
from .model_loading import LoadedModel, model_answer, model_fingerprint

logger = logging.getLogger("iris_service.local_champion")

ChampionTag = Callable[[], Awaitable[str]]


class LocalChampion(BackgroundLoop):
    """A copy of the model the runner serves as champion, in this API worker."""

    def __init__(
        self,
        load: Callable[[str], LoadedModel],
        runner_champion: ChampionTag,
        period_s: float,
        timeout_s: float,
        keep: int = 2,
    ) -> None:
        self._load = load
        self._runner_champion = runner_champion
        self.period_s = period_s
        self.timeout_s = timeout_s
        self._keep = keep
        # Loaded copies by fingerprint, the newest last (a rollback finds the previous one).
        self._loaded: dict[float, LoadedModel] = {}
        self._refused: set[str] = set()
        self.model: LoadedModel | None = None  # answers only while it is the runner's champion
        # The fingerprint of the runner's latest champion answer, and how often it changed.
        self._seen: float | None = None
        self._changes = 0
        self._stale = asyncio.Event()

    def answer(self, rows: np.ndarray) -> np.ndarray | None:
        """Probabilities and the fingerprint column for `rows`, as the runner would answer
        them; None while there is no copy of the runner's current champion."""
        model = self.model
        if model is None:
            return None
        return model_answer(model, rows)

    def observe(self, fingerprint: float) -> None:
        """A champion answer of the runner named `fingerprint`: when it is not the copy's,
        stop answering here and ask the runner at once which champion it serves."""
        if fingerprint == self._seen:
            return
        self._seen = fingerprint
        self._changes += 1
        model = self.model
        if model is not None and model.fingerprint != fingerprint:
            self.model = None
            self._stale.set()

    def start(self) -> None:
        """Import scikit-learn here, on the event loop's thread, before any copy is loaded in a
        thread: BentoML validates model metadata (`bentoml.models.list`, which the API worker
        calls on its event loop) with a check on `scipy.sparse.spmatrix` that fails with an
        AttributeError while another thread is half-way through importing `scipy.sparse`
        (seen as a 500 on GET /v2/models/iris-classifier right after start)."""
        import sklearn  # noqa: F401 - imports scipy.sparse whole, once

        super().start()

    async def run(self) -> None:
        """Ask the runner every `period_s` (at once after `observe` saw another model)."""
        while True:
            self._stale.clear()
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - following must outlive any surprise
                logger.debug("could not follow the runner's champion: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stale.wait(), self.period_s)

    async def sync(self) -> None:
        """Make the copy the runner's champion now (loading it when needed). When the runner
        answered with another model while it was asked, the reply may be stale: it is asked
        again instead."""
        changes = self._changes
        # A runner that does not say (busy, restarting) keeps the copy: the service answers
        # lone requests only while the heartbeat finds the runner ready, and a restarted
        # runner's first answer by another model stops the copy (`observe`).
        tag = await asyncio.wait_for(self._runner_champion(), self.timeout_s)
        fingerprint = model_fingerprint(tag)
        model = self._loaded.get(fingerprint)
        if model is None:
            self.model = None
            model = await self._load_copy(tag)
            if model is None:
                return
        if self._changes != changes:
            self.model = None
            self._stale.set()
            return
        self.model = model

    async def _load_copy(self, tag: str) -> LoadedModel | None:
        if tag in self._refused:
            return None
        try:
            model = await asyncio.to_thread(self._load, tag)
        except Exception as exc:  # noqa: BLE001 - the runner keeps answering every request
            self._refused.add(tag)
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            logger.error(
                "could not load %s in the API worker (%s); the runner answers every request",
                tag,
                first_line,
            )
            return None
        self._loaded[model.fingerprint] = model
        while len(self._loaded) > self._keep:
            del self._loaded[next(iter(self._loaded))]
        logger.info("lone requests are answered in the API worker by %s", tag)
        return model
