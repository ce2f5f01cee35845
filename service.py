"""Iris classifier served by BentoML 1.4.

request -> RequestMonitoringMiddleware (request id, latency/memory/CPU, error shape)
        -> IrisClassifier (this API service: validation, response shaping, champion or
           challenger: iris_service/challenger.py)
        -> IrisModelRunner (bentoml.depends: own process, adaptive batching; follows the
           serving aliases: iris_service/model_follower.py) -> estimator
"""

from __future__ import annotations

import logging

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from iris_service import log_filters, metrics, runner_client
from iris_service.admission import AdmissionControlMiddleware
from iris_service.api_docs import SERVICE_DESCRIPTION, DescribedService
from iris_service.auth import ApiKeyMiddleware
from iris_service.challenger import ChallengerRouter
from iris_service.coalescing import RequestCoalescer
from iris_service.drift import DriftMonitor, drift_route, publish_to_prometheus
from iris_service.errors import error_response
from iris_service.middleware import RequestMonitoringMiddleware
from iris_service.model_loading import model_fingerprint
from iris_service.model_status import model_route
from iris_service.prediction_log import PredictionLogMiddleware, open_prediction_log
from iris_service.runner import RUNNER_MAX_BATCH_SIZE, IrisModelRunner
from iris_service.schemas import BatchPrediction, IrisBatch, IrisFeatures, Prediction
from iris_service.served_models import (
    ModelDirectory,
    ServedModel,
    UnknownModelError,
    stored_models,
)
from iris_service.settings import (
    ALIAS_POLL_SECONDS,
    API_KEY,
    CANARY_SEED,
    CANARY_SHARE,
    CHALLENGER_MODE,
    DRIFT_MIN_FLOWERS,
    DRIFT_WINDOW_FLOWERS,
    FEATURE_NAMES,
    MODEL_TAG,
    PREDICTION_LOG_PATH,
    SHADOW_MAX_IN_FLIGHT,
)

logger = logging.getLogger("iris_service.api")


def _current() -> IrisClassifier:
    return bentoml.get_current_service()


# GET /drift and GET /model, beside the API's own routes.
status_app = Starlette(
    routes=[
        drift_route(lambda: _current().drift),
        model_route(lambda: _current().runner.to_async.serving_models()),
    ]
)


@bentoml.service(
    name="IrisClassifier",
    traffic={"timeout": 15},
    description=SERVICE_DESCRIPTION,
    service_class=DescribedService,
)
@bentoml.asgi_app(status_app, path="/")
class IrisClassifier:
    """Classifies Iris flowers (setosa, versicolor, virginica) from four measurements in cm.

    POST /predict with one flower, or POST /predict_batch with up to the configured number of
    flowers. Every error answer is {"error", "detail", "request_id"}.
    """

    runner = bentoml.depends(IrisModelRunner)
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        # Answers name the model that computed them: the runner returns its fingerprint.
        self.models = ModelDirectory(stored_models(self.bento_model.tag.name))
        self.coalescer = RequestCoalescer(self._call_runner, max_rows=RUNNER_MAX_BATCH_SIZE)
        self.challenger_coalescer = RequestCoalescer(
            self._call_challenger, max_rows=RUNNER_MAX_BATCH_SIZE
        )
        self.router = ChallengerRouter(
            CHALLENGER_MODE,
            self.coalescer.predict,
            self.challenger_coalescer.predict,
            canary_share=CANARY_SHARE,
            seed=CANARY_SEED,
            max_shadow_in_flight=SHADOW_MAX_IN_FLIGHT,
            absent_backoff_s=ALIAS_POLL_SECONDS,
        )
        # Live inputs vs the training statistics of the model that answered; GET /drift.
        self._drift_monitors: dict[str, DriftMonitor] = {}
        self.drift = self._drift_monitor(
            self.models.lookup(model_fingerprint(str(self.bento_model.tag)))
        )

    @bentoml.api(route="/predict", input_spec=IrisFeatures)
    async def predict(self, **measurements: float) -> Prediction:
        """Classify one flower."""
        rows = np.array([[measurements[name] for name in FEATURE_NAMES]], dtype=float)
        answer = await self._infer(rows)
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        model, probabilities = answer
        return self._prediction(model, probabilities[0])

    @bentoml.api(route="/predict_batch", input_spec=IrisBatch)
    async def predict_batch(self, flowers: list[IrisFeatures]) -> BatchPrediction:
        """Classify several flowers in one call; answers keep the order of the flowers."""
        rows = np.array([flower.as_row() for flower in flowers], dtype=float)
        answer = await self._infer(rows)
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        model, probabilities = answer
        predictions = [self._prediction(model, row) for row in probabilities]
        return BatchPrediction(predictions=predictions, model_tag=model.tag)

    async def _infer(self, rows: np.ndarray) -> tuple[ServedModel, np.ndarray] | JSONResponse:
        """The model that answered and its class probabilities for `rows` (all rows of one
        request travel in one runner call, so one model computes them all)."""
        answer = await self._probabilities(rows)
        if isinstance(answer, JSONResponse):
            return answer
        try:
            model = self.models.lookup(float(answer[0, -1]))
        except UnknownModelError:
            logger.error("the runner answered with a model missing from the store", exc_info=True)
            return error_response(500, "An internal error occurred.")
        self._drift_monitor(model).observe_many(rows.tolist())
        return model, answer[:, :-1]

    async def _probabilities(self, rows: np.ndarray) -> np.ndarray | JSONResponse:
        """Ask the runner (the champion or the challenger: self.router decides); every
        failure of the call becomes a 503 or 504 answer."""
        try:
            return await self.router.predict(rows)
        except Exception as exc:  # noqa: BLE001 - classified, logged in one line, answered
            failure = runner_client.classify(exc)
            logger.warning(
                "runner call failed (%s): answered %d", runner_client.describe(exc), failure.status
            )
            return error_response(failure.status, failure.detail, failure.code)

    async def _call_runner(self, rows: np.ndarray) -> np.ndarray:
        return await runner_client.call_with_retry(self.runner.to_async.predict_proba, rows)

    async def _call_challenger(self, rows: np.ndarray) -> np.ndarray:
        call = self.runner.to_async.predict_proba_challenger
        return await runner_client.call_with_retry(call, rows)

    def _drift_monitor(self, model: ServedModel) -> DriftMonitor:
        """The drift monitor against `model`'s training statistics; it also becomes the one
        that GET /drift reports."""
        monitor = self._drift_monitors.get(model.tag)
        if monitor is None:
            monitor = DriftMonitor.from_model_metadata(
                model.metadata,
                FEATURE_NAMES,
                window=DRIFT_WINDOW_FLOWERS,
                min_flowers=DRIFT_MIN_FLOWERS,
                publish=publish_to_prometheus,
            )
            self._drift_monitors[model.tag] = monitor
        self.drift = monitor
        return monitor

    def _prediction(self, model: ServedModel, probabilities: np.ndarray) -> Prediction:
        class_id = int(np.argmax(probabilities))
        class_name = model.class_names[class_id]
        metrics.PREDICTIONS_TOTAL.labels(class_name).inc()
        return Prediction(
            class_id=class_id,
            class_name=class_name,
            probabilities=dict(
                zip(model.class_names, probabilities.round(6).tolist(), strict=True)
            ),
            model_tag=model.tag,
        )


# Outermost first: prediction log -> monitoring (request id, error shape) -> API key ->
# admission control -> the API. See docs in each module.
IrisClassifier.add_asgi_middleware(
    PredictionLogMiddleware, log=open_prediction_log(PREDICTION_LOG_PATH)
)
IrisClassifier.add_asgi_middleware(RequestMonitoringMiddleware)
IrisClassifier.add_asgi_middleware(ApiKeyMiddleware, api_key=API_KEY)
IrisClassifier.add_asgi_middleware(AdmissionControlMiddleware)
log_filters.install()
