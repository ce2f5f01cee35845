"""The custom runner: a BentoML service in its own process that batches large requests.

Under `bentoml serve` it runs in its own worker process(es); the API service reaches it
through `bentoml.depends`. One-flower and small requests never come here: the API workers
compute them in-process (iris_service/inference/core.py). The inference core sends a request here
when its rows cost more to compute than the hop (large batches, costly models), and BentoML's
adaptive batching merges concurrent such requests into one ONNX Runtime call.

Each call carries whole requests (a list of row matrices) and each answer names the model
version that computed it as data (`{"tag", "probabilities"}`): a batch reads the models in
service once, so one model computes all of it, even while the aliases switch. The runner
follows the serving aliases itself (model_follower.py), like every process that holds a
model.
"""

from __future__ import annotations

import time
from typing import Any

import bentoml
import numpy as np

from iris_service.inference.connection_lifetime import ConnectionLifetimeMiddleware
from iris_service.inference.draining import postpone_sigterm_until_idle
from iris_service.inference.model_follower import ModelFollower, publish_model_info, start_following
from iris_service.inference.model_loading import CompiledModel, checked_model_reference
from iris_service.settings import settings

RUNNER_MAX_LATENCY_MS = 5000
# Requests (not rows) merged into one call at most: each is a batch of its own.
RUNNER_MAX_REQUESTS_PER_CALL = 64
ADAPTIVE_BATCHING = {
    "batchable": True,
    "batch_dim": 0,
    "max_batch_size": RUNNER_MAX_REQUESTS_PER_CALL,
    "max_latency_ms": RUNNER_MAX_LATENCY_MS,
}


def answer_requests(model: CompiledModel | None, requests: list[np.ndarray]) -> list[dict]:
    """One `{"tag", "probabilities"}` per request, computed by one call of `model` over the
    concatenated rows (without a model: `{"tag": None}` for each)."""
    if model is None:
        return [{"tag": None, "probabilities": None} for _ in requests]
    sizes = [len(rows) for rows in requests]
    probabilities = model.predict_proba(
        np.concatenate(requests) if len(requests) > 1 else requests[0]
    )
    bounds = np.cumsum(sizes)[:-1]
    return [{"tag": model.tag, "probabilities": part} for part in np.split(probabilities, bounds)]


@bentoml.service(name="IrisModelRunner", workers=1, traffic={"timeout": 10})
class IrisModelRunner:
    """Holds the Iris models in service; follows the serving aliases while it runs."""

    # Packed into the Bento by `bentoml build`; served when no aliases file says otherwise.
    bento_model = checked_model_reference(settings.model_tag)
    # Packed too when named (an image that serves a challenger pins it: tools/containers.py).
    challenger_model = (
        checked_model_reference(settings.challenger_tag) if settings.challenger_tag else None
    )

    def __init__(self) -> None:
        self.follower = ModelFollower.for_service(
            self.bento_model,
            self.challenger_model,
            settings.challenger_mode,
            on_change=publish_model_info,
        )
        self.last_request = time.monotonic()

    @bentoml.on_startup
    async def keep_serving_while_the_api_drains(self) -> None:
        postpone_sigterm_until_idle(lambda: self.last_request)

    @bentoml.on_startup
    def follow_the_serving_aliases(self) -> None:
        start_following(self.follower)

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        self.follower.stop()

    def __is_ready__(self) -> bool:
        return self.follower.models is not None

    @bentoml.api(**ADAPTIVE_BATCHING)
    def predict_champion(self, requests: list[np.ndarray]) -> list[dict[str, Any]]:
        """Class probabilities of the champion for each request's rows, with its tag."""
        self.last_request = time.monotonic()
        return answer_requests(self.follower.models.champion, requests)

    @bentoml.api(**ADAPTIVE_BATCHING)
    def predict_challenger(self, requests: list[np.ndarray]) -> list[dict[str, Any]]:
        """As `predict_champion`, by the challenger (`{"tag": None}` when none is served)."""
        self.last_request = time.monotonic()
        return answer_requests(self.follower.models.challenger, requests)


# Connections from the API end after a bounded count or age, so that new replicas get load.
IrisModelRunner.add_asgi_middleware(
    ConnectionLifetimeMiddleware,
    max_requests=settings.runner_connection_max_requests,
    max_age_s=settings.runner_connection_max_age_seconds,
)
