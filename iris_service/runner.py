"""The custom runner: a BentoML service that owns the model and batches inference.

Under `bentoml serve` it runs in its own worker process(es); the API service reaches it
through `bentoml.depends`. Concurrent requests are merged by BentoML's adaptive batching
into one `predict_proba` call on the estimator.
"""

from __future__ import annotations

import time

import bentoml
import numpy as np

from .draining import postpone_sigterm_until_idle
from .limits import check_batch_limits
from .model_loading import LoadedModel, checked_model_reference, load_model
from .settings import MODEL_TAG, RUNNER_MAX_BATCH_SIZE

RUNNER_MAX_LATENCY_MS = 5000
# At import, which `bentoml serve` does before it starts any worker: contradicting limits
# stop the server with one line (iris_service/limits.py).
check_batch_limits()


@bentoml.service(name="IrisModelRunner", workers=1, traffic={"timeout": 10})
class IrisModelRunner:
    """Holds the Iris estimator, loaded once when the worker starts."""

    bento_model = checked_model_reference(MODEL_TAG)

    def __init__(self) -> None:
        self.model: LoadedModel = load_model(self.bento_model)
        self.last_request = time.monotonic()

    @bentoml.on_startup
    async def keep_serving_while_the_api_drains(self) -> None:
        postpone_sigterm_until_idle(lambda: self.last_request)

    def __is_ready__(self) -> bool:
        return self.model is not None

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=RUNNER_MAX_BATCH_SIZE,
        max_latency_ms=RUNNER_MAX_LATENCY_MS,
    )
    def predict_proba(self, measurements: np.ndarray) -> np.ndarray:
        """Class probabilities for rows of the four measurements, in FEATURE_NAMES order, and
        as last column the fingerprint of the model that computed them (one model per batch),
        so that every answer names its model even when the model changes while serving."""
        self.last_request = time.monotonic()
        model = self.model
        probabilities = model.estimator.predict_proba(measurements)
        fingerprints = np.full((len(probabilities), 1), model.fingerprint)
        return np.hstack([probabilities, fingerprints])
