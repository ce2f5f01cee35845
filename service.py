"""Iris classifier served by BentoML 1.4.

request -> RequestMonitoringMiddleware (request id, latency/memory/CPU, error shape)
        -> IrisClassifier (this API service: validation, response shaping)
        -> IrisModelRunner (bentoml.depends: own process, adaptive batching) -> estimator
"""

from __future__ import annotations

import logging

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from iris_service import log_filters, metrics
from iris_service.admission import AdmissionControlMiddleware
from iris_service.api_docs import SERVICE_DESCRIPTION, DescribedService
from iris_service.auth import ApiKeyMiddleware
from iris_service.coalescing import RequestCoalescer
from iris_service.drift import DriftMonitor, drift_app, publish_to_prometheus
from iris_service.errors import error_response
from iris_service.middleware import RequestMonitoringMiddleware
from iris_service.prediction_log import PredictionLogMiddleware, open_prediction_log
from iris_service.runner import RUNNER_MAX_BATCH_SIZE, IrisModelRunner
from iris_service.schemas import BatchPrediction, IrisBatch, IrisFeatures, Prediction
from iris_service.settings import (
    API_KEY,
    DRIFT_MIN_FLOWERS,
    DRIFT_WINDOW_FLOWERS,
    FEATURE_NAMES,
    MODEL_TAG,
    PREDICTION_LOG_PATH,
)

logger = logging.getLogger("iris_service.api")

# Connection-level failures of the internal call: the runner is restarting or not up yet.
RUNNER_UNREACHABLE = (aiohttp.ClientConnectionError, ConnectionError)
# A pooled keep-alive connection the runner closed just as it was reused (uvicorn closes
# idle connections after 5 s, aiohttp keeps them 15 s): seen as a disconnect, a reset, or
# ClientOSError "Can not write request body". Inference is idempotent: retry once.
STALE_CONNECTION = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)


@bentoml.service(
    name="IrisClassifier",
    traffic={"timeout": 15},
    description=SERVICE_DESCRIPTION,
    service_class=DescribedService,
)
@bentoml.asgi_app(drift_app(lambda: bentoml.get_current_service().drift), path="/")
class IrisClassifier:
    """Classifies Iris flowers (setosa, versicolor, virginica) from four measurements in cm.

    POST /predict with one flower, or POST /predict_batch with up to the configured number of
    flowers. Every error answer is {"error", "detail", "request_id"}.
    """

    runner = bentoml.depends(IrisModelRunner)
    bento_model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model_tag = str(self.bento_model.tag)
        self.class_names: list[str] = list(self.bento_model.info.metadata.get("class_names", ()))
        self.coalescer = RequestCoalescer(self._call_runner, max_rows=RUNNER_MAX_BATCH_SIZE)
        # Live inputs vs the training statistics stored with the model; served on GET /drift.
        self.drift = DriftMonitor.from_model_metadata(
            self.bento_model.info.metadata,
            FEATURE_NAMES,
            window=DRIFT_WINDOW_FLOWERS,
            min_flowers=DRIFT_MIN_FLOWERS,
            publish=publish_to_prometheus,
        )

    @bentoml.api(route="/predict", input_spec=IrisFeatures)
    async def predict(self, **measurements: float) -> Prediction:
        """Classify one flower."""
        row = [measurements[name] for name in IrisFeatures.model_fields]
        self.drift.observe(row)
        probabilities = await self._probabilities(np.array([row], dtype=float))
        if isinstance(probabilities, JSONResponse):
            return probabilities  # type: ignore[return-value]
        return self._prediction(probabilities[0])

    @bentoml.api(route="/predict_batch", input_spec=IrisBatch)
    async def predict_batch(self, flowers: list[IrisFeatures]) -> BatchPrediction:
        """Classify several flowers in one call; answers keep the order of the flowers."""
        rows = np.array([flower.as_row() for flower in flowers], dtype=float)
        self.drift.observe_many(rows.tolist())
        probabilities = await self._probabilities(rows)
        if isinstance(probabilities, JSONResponse):
            return probabilities  # type: ignore[return-value]
        predictions = [self._prediction(row) for row in probabilities]
        return BatchPrediction(predictions=predictions, model_tag=self.model_tag)

    async def _probabilities(self, rows: np.ndarray) -> np.ndarray | JSONResponse:
        """Ask the runner; map its failures to 503/504/500 answers instead of exceptions."""
        try:
            return await self.coalescer.predict(rows)
        except RUNNER_UNREACHABLE:
            logger.warning("runner unreachable", exc_info=True)
            return error_response(
                503, "The model runner is not reachable; retry shortly.", "model_not_ready"
            )
        except TimeoutError:
            return error_response(504, "The model did not answer in time.")
        except BentoMLException as exc:
            if exc.error_code.value == 503:
                return error_response(
                    503, "The model runner is busy or starting; retry shortly.", "model_not_ready"
                )
            logger.exception("runner error")
            return error_response(500, "An internal error occurred.")

    async def _call_runner(self, rows: np.ndarray) -> np.ndarray:
        try:
            return await self.runner.to_async.predict_proba(rows)
        except STALE_CONNECTION:
            return await self.runner.to_async.predict_proba(rows)

    def _prediction(self, probabilities: np.ndarray) -> Prediction:
        class_id = int(np.argmax(probabilities))
        class_name = self.class_names[class_id]
        metrics.PREDICTIONS_TOTAL.labels(class_name).inc()
        return Prediction(
            class_id=class_id,
            class_name=class_name,
            probabilities=dict(zip(self.class_names, probabilities.round(6).tolist(), strict=True)),
            model_tag=self.model_tag,
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
