"""The custom runner: a BentoML service that owns the models and batches inference.

Under `bentoml serve` it runs in its own worker process(es); the API service reaches it
through `bentoml.depends`. Concurrent requests are merged by BentoML's adaptive batching
into one `predict_proba` call on the estimator. The models it serves follow the serving
aliases (iris_service/model_follower.py): the champion answers `predict_proba`, the
challenger (loaded only when IRIS_CHALLENGER_MODE uses it) `predict_proba_challenger`.
"""

from __future__ import annotations

import time
from typing import Any

import bentoml
import numpy as np

from .draining import postpone_sigterm_until_idle
from .limits import check_batch_limits
from .model_follower import ModelFollower, publish_model_info
from .model_loading import NO_MODEL, checked_model_reference, load_stored_model, model_answer
from .settings import (
    ALIAS_POLL_SECONDS,
    CANARY_SHARE,
    CHALLENGER_MODE,
    CHALLENGER_TAG,
    MODEL_TAG,
    RUNNER_MAX_BATCH_SIZE,
)

RUNNER_MAX_LATENCY_MS = 5000
# At import, which `bentoml serve` does before it starts any worker: contradicting limits
# stop the server with one line (iris_service/limits.py).
check_batch_limits()
# Both prediction methods: BentoML merges concurrent calls into one batch.
ADAPTIVE_BATCHING = {
    "batchable": True,
    "batch_dim": 0,
    "max_batch_size": RUNNER_MAX_BATCH_SIZE,
    "max_latency_ms": RUNNER_MAX_LATENCY_MS,
}


@bentoml.service(name="IrisModelRunner", workers=1, traffic={"timeout": 10})
class IrisModelRunner:
    """Holds the Iris estimators in service; follows the serving aliases while it runs."""

    # Packed into the Bento by `bentoml build`; served when no aliases file says otherwise.
    bento_model = checked_model_reference(MODEL_TAG)
    # Packed too when named (an image that serves a challenger pins it: tools/containers.py).
    challenger_model = checked_model_reference(CHALLENGER_TAG) if CHALLENGER_TAG else None

    def __init__(self) -> None:
        self.follower = ModelFollower(
            self.bento_model.tag.name,
            str(self.bento_model.tag),
            load_stored_model,
            with_challenger=CHALLENGER_MODE != "none",
            default_challenger=str(self.challenger_model.tag) if self.challenger_model else None,
            on_change=publish_model_info,
        )
        self.last_request = time.monotonic()

    @bentoml.on_startup
    async def keep_serving_while_the_api_drains(self) -> None:
        postpone_sigterm_until_idle(lambda: self.last_request)

    @bentoml.on_startup
    def follow_the_serving_aliases(self) -> None:
        self.follower.start(ALIAS_POLL_SECONDS)

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        self.follower.stop()

    def __is_ready__(self) -> bool:
        return self.follower.models is not None

    @bentoml.api(**ADAPTIVE_BATCHING)
    def predict_proba(self, measurements: np.ndarray) -> np.ndarray:
        """Class probabilities of the champion for rows of the four measurements, in
        FEATURE_NAMES order, and as last column the fingerprint of the model that computed
        them (one model per batch: the reference is read once), so that every answer names
        its model even when the model changes while serving."""
        self.last_request = time.monotonic()
        return model_answer(self.follower.models.champion, measurements)

    @bentoml.api(**ADAPTIVE_BATCHING)
    def predict_proba_challenger(self, measurements: np.ndarray) -> np.ndarray:
        """As `predict_proba`, by the challenger; without one, NaN probabilities and the
        fingerprint NO_MODEL (the API then answers with the champion or skips the shadow)."""
        self.last_request = time.monotonic()
        challenger = self.follower.models.challenger
        if challenger is None:
            answer = np.full(
                (len(measurements), len(self.follower.models.champion.class_names) + 1), np.nan
            )
            answer[:, -1] = NO_MODEL
            return answer
        return model_answer(challenger, measurements)

    @bentoml.api
    def serving_models(self) -> dict[str, Any]:
        """The models this runner worker serves, for GET /model."""
        models = self.follower.models
        aliases = self.follower.aliases
        return {
            "champion": models.champion.tag,
            "challenger": models.challenger.tag if models.challenger else None,
            "mode": CHALLENGER_MODE,
            "canary_share": CANARY_SHARE if CHALLENGER_MODE == "canary" else None,
            "aliases_updated_at": aliases.updated_at if aliases else None,
            "last_refusal": self.follower.refusal,  # no paths, no exception text
        }
