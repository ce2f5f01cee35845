"""Iris classifier served by BentoML 1.4.

request -> RequestMonitoringMiddleware (request id, latency/memory/CPU, error shape)
        -> IrisClassifier (this API service: validation, response shaping, champion or
           challenger: iris_service/challenger.py)
        -> IrisModelRunner (bentoml.depends: own process, adaptive batching; follows the
           serving aliases: iris_service/model_follower.py) -> estimator
A request alone in its API worker skips the runner hop: a copy of the runner's champion in
the API worker answers it (iris_service/local_champion.py); concurrent requests are batched
through the runner.

POST /feedback takes the true class of earlier predictions and joins it with the prediction
log (iris_service/feedback.py); GET /live_quality and the iris_live_* metrics show how right
each model version is (iris_service/live_quality.py, docs/feedback.md).
"""

from __future__ import annotations

import asyncio
import logging

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from iris_service import answers, log_filters, metrics, runner_client
from iris_service.admission import AdmissionControlMiddleware, InFlight
from iris_service.api_docs import SERVICE_DESCRIPTION, DescribedService
from iris_service.auth import ApiKeyMiddleware
from iris_service.challenger import ChallengerRouter
from iris_service.coalescing import RequestCoalescer
from iris_service.drift import DriftMonitor, drift_route, publish_to_prometheus
from iris_service.errors import error_response
from iris_service.feedback import FeedbackDesk, FeedbackRefused
from iris_service.feedback_log import FeedbackLog
from iris_service.live_quality import LiveQuality, live_quality_route
from iris_service.local_champion import LocalChampion
from iris_service.middleware import RequestMonitoringMiddleware
from iris_service.model_loading import load_stored_model, model_fingerprint
from iris_service.model_status import model_route
from iris_service.prediction_index import PredictionIndex
from iris_service.prediction_log import (
    PredictionLog,
    PredictionLogMiddleware,
    open_prediction_log,
)
from iris_service.protocols.routes import protocol_app
from iris_service.runner import RUNNER_MAX_BATCH_SIZE, IrisModelRunner
from iris_service.runner_health import RunnerHeartbeat, runner_ping
from iris_service.schemas import (
    BatchPrediction,
    FeedbackAnswer,
    FeedbackRequest,
    IrisBatch,
    IrisFeatures,
    IrisFlower,
    Prediction,
    flower_rows,
)
from iris_service.served_models import (
    ModelDirectory,
    ServedModel,
    UnknownModelError,
    stored_models,
)
from iris_service.settings import (
    ALIAS_POLL_SECONDS,
    ANSWER_DEADLINE_SECONDS,
    API_KEYS,
    API_TIMEOUT_SECONDS,
    CANARY_SEED,
    CANARY_SHARE,
    CHALLENGER_MODE,
    CLASS_NAMES,
    DRIFT_MIN_FLOWERS,
    DRIFT_WINDOW_FLOWERS,
    FEATURE_NAMES,
    FEEDBACK_INDEX_PREDICTIONS,
    FEEDBACK_LOG_PATH,
    FEEDBACK_WINDOW,
    LOCAL_CHAMPION_CHECK_SECONDS,
    LOCAL_MAX_IN_FLIGHT,
    LONE_REQUESTS_IN_API_WORKER,
    MODEL_TAG,
    PREDICTION_LOG_PATH,
    RUNNER_LIVENESS_GRACE_SECONDS,
    RUNNER_PING_PERIOD_SECONDS,
    RUNNER_PING_TIMEOUT_SECONDS,
    SHADOW_MAX_IN_FLIGHT,
)

logger = logging.getLogger("iris_service.api")


def _current() -> IrisClassifier:
    return bentoml.get_current_service()


# The prediction log (written by its middleware, below) is also what labels are joined with.
prediction_log = open_prediction_log(PREDICTION_LOG_PATH)
# Prediction requests in flight in this API worker (counted by the admission middleware): a
# lone one is answered by the worker's copy of the champion.
predictions_in_flight = InFlight()


def _feedback_desk(log: PredictionLog | None) -> tuple[FeedbackDesk | None, LiveQuality]:
    """The desk behind POST /feedback (None without a prediction log to join labels with)
    and the live quality it feeds (iris_service/feedback.py, live_quality.py)."""
    quality = LiveQuality(FEEDBACK_WINDOW, CLASS_NAMES)
    if log is None or FEEDBACK_LOG_PATH is None:
        return None, quality
    desk = FeedbackDesk(
        PredictionIndex(log.files, FEEDBACK_INDEX_PREDICTIONS),
        FeedbackLog(FEEDBACK_LOG_PATH, on_record=quality.add),
        flush_predictions=lambda: log.flush(timeout=0.5),
        publish=quality.publish,
    )
    return desk, quality


# GET /drift, GET /model and GET /live_quality, beside the API's own routes.
status_app = Starlette(
    routes=[
        drift_route(lambda: _current().drift),
        model_route(lambda: _current().runner.to_async.serving_models()),
        live_quality_route(lambda: _current().live_quality),
    ]
)


@bentoml.service(
    name="IrisClassifier",
    traffic={"timeout": API_TIMEOUT_SECONDS},
    description=SERVICE_DESCRIPTION,
    service_class=DescribedService,
)
@bentoml.asgi_app(status_app, path="/")
@bentoml.asgi_app(protocol_app(bentoml.get_current_service), path="/")
class IrisClassifier:
    """Classifies Iris flowers (setosa, versicolor, virginica) from four measurements in cm.

    POST /predict with one flower, or POST /predict_batch with up to the configured number of
    flowers. Every error answer is {"error", "detail", "request_id"}. The same inference also
    answers the Open Inference Protocol V2 (/v2/...) and MLflow scoring (/invocations), in
    their own shapes (iris_service/protocols, docs/protocols.md).
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
        # Lone requests: a copy of the runner's champion (None: every request to the runner).
        self.local_champion = (
            LocalChampion(
                load_stored_model,
                self._runner_champion,
                period_s=LOCAL_CHAMPION_CHECK_SECONDS,
                timeout_s=RUNNER_PING_TIMEOUT_SECONDS,
            )
            if LONE_REQUESTS_IN_API_WORKER
            else None
        )
        self.router = ChallengerRouter(
            CHALLENGER_MODE,
            self._champion,
            self.challenger_coalescer.predict,
            canary_share=CANARY_SHARE,
            seed=CANARY_SEED,
            max_shadow_in_flight=SHADOW_MAX_IN_FLIGHT,
            absent_backoff_s=ALIAS_POLL_SECONDS,
        )
        # Live inputs vs the training statistics of the model that answered; GET /drift.
        self._drift_monitors: dict[str, DriftMonitor] = {}
        # The model that answered last (first: the configured one): what V2 calls ready.
        self.serving = self.models.lookup(model_fingerprint(str(self.bento_model.tag)))
        self.drift = self._drift_monitor(self.serving)
        # /readyz and /livez answer from this heartbeat's record (iris_service/runner_health.py).
        self.heartbeat = RunnerHeartbeat(
            lambda: runner_ping(self.runner)(),
            period_s=RUNNER_PING_PERIOD_SECONDS,
            timeout_s=RUNNER_PING_TIMEOUT_SECONDS,
            grace_s=RUNNER_LIVENESS_GRACE_SECONDS,
        )
        self.feedback_desk, self.live_quality = _feedback_desk(prediction_log)

    @bentoml.on_startup
    async def start_runner_heartbeat(self) -> None:
        self.heartbeat.start()
        if self.local_champion is not None:
            self.local_champion.start()

    @bentoml.on_startup
    async def load_feedback(self) -> None:
        """The labels already in the feedback log (a restart counts them all again)."""
        if self.feedback_desk is not None:
            await asyncio.to_thread(self.feedback_desk.log.catch_up)
            self.live_quality.publish()

    @bentoml.on_shutdown
    async def stop_runner_heartbeat(self) -> None:
        self.heartbeat.stop()
        if self.local_champion is not None:
            self.local_champion.stop()

    async def __is_ready__(self) -> bool:
        """503 at once while the runner does not answer (never waits on it)."""
        return self.heartbeat.ready()

    async def __is_alive__(self) -> bool:
        """503 once the runner has been silent for longer than the grace period."""
        return self.heartbeat.alive()

    @bentoml.api(route="/predict", input_spec=IrisFeatures)
    async def predict(self, **measurements: float) -> Prediction:
        """Classify one flower."""
        rows = np.array([[measurements[name] for name in FEATURE_NAMES]], dtype=float)
        answer = await self._infer(rows)
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        model, probabilities = answer
        return Prediction(**answers.predictions(model, probabilities)[0])

    @bentoml.api(route="/predict_batch", input_spec=IrisBatch)
    async def predict_batch(self, flowers: list[IrisFlower]) -> BatchPrediction:
        """Classify several flowers in one call; answers keep the order of the flowers."""
        rows = flower_rows(flowers)
        answer = await self._infer(rows)
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        model, probabilities = answer
        return answers.batch_response(model, probabilities)  # type: ignore[return-value]

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest)
    async def feedback(self, **body: object) -> FeedbackAnswer:
        """The true class of predicted flowers: {"request_id": <the answer's X-Request-ID>,
        "class_name": ...}, or {"feedback": [...]}; a flower of a batch is <request id>/<index>.
        All labels of a request are recorded, or none (docs/feedback.md)."""
        if self.feedback_desk is None:
            return error_response(  # type: ignore[return-value]
                503, "feedback needs the prediction log (IRIS_PREDICTION_LOG is off)"
            )
        labels = FeedbackRequest.model_validate(body).labels()
        try:
            records = await asyncio.to_thread(self.feedback_desk.label, labels)
        except FeedbackRefused as refused:
            return error_response(refused.status, refused.detail, refused.code)  # type: ignore[return-value]
        return FeedbackAnswer(
            accepted=len(records),
            labels=[
                {
                    "request_id": r["request_id"],
                    "class_name": r["class_name"],
                    "predicted": r["predicted"],
                    "correct": r["correct"],
                    "model_tag": r["model_tag"],
                }
                for r in records
            ],
        )

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
        self._drift_monitor(model).observe_many(rows)
        self.serving = model
        return model, answer[:, :-1]

    async def _probabilities(self, rows: np.ndarray) -> np.ndarray | JSONResponse:
        """Ask the runner (the champion or the challenger: self.router decides); every
        failure of the call becomes a 503 or 504 answer. While the heartbeat finds the runner
        silent (hung), refuse at once instead of waiting for the call's timeout."""
        if self.heartbeat.silent():
            failure = runner_client.SILENT
            return error_response(failure.status, failure.detail, failure.code)
        try:
            async with asyncio.timeout(ANSWER_DEADLINE_SECONDS):
                return await self.router.predict(rows)
        except Exception as exc:  # noqa: BLE001 - classified, logged in one line, answered
            failure = runner_client.classify(exc)
            logger.warning(
                "runner call failed (%s): answered %d", runner_client.describe(exc), failure.status
            )
            return error_response(failure.status, failure.detail, failure.code)

    async def _champion(self, rows: np.ndarray) -> np.ndarray:
        """The champion's answer for `rows`: computed in this worker when the request is (about)
        alone in it and the runner is healthy (no batch to share, so the runner hop would only
        add latency), else through the coalescer and the runner's batching."""
        local = self.local_champion
        if local is not None:
            # Computed inline, a local answer never yields to the event loop: requests that
            # uvicorn has already read would only enter the app (and the count) after it.
            # One yield lets them enter first, so that under load the count sees them.
            await asyncio.sleep(0)
        lone = predictions_in_flight.count <= LOCAL_MAX_IN_FLIGHT
        if local is not None and lone and self.heartbeat.ready():
            answer = local.answer(rows)
            if answer is not None:
                metrics.INFERENCES_TOTAL.labels("api_worker").inc()
                return answer
        answer = await self.coalescer.predict(rows)
        metrics.INFERENCES_TOTAL.labels("runner").inc()
        if local is not None:
            local.observe(float(answer[0, -1]))
        return answer

    async def _runner_champion(self) -> str:
        return str((await self.runner.to_async.serving_models())["champion"])

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


# Outermost first: prediction log -> monitoring (request id, error shape) -> API key ->
# admission control -> the API. See docs in each module.
IrisClassifier.add_asgi_middleware(PredictionLogMiddleware, log=prediction_log)
IrisClassifier.add_asgi_middleware(RequestMonitoringMiddleware)
IrisClassifier.add_asgi_middleware(ApiKeyMiddleware, api_keys=API_KEYS)
IrisClassifier.add_asgi_middleware(AdmissionControlMiddleware, counter=predictions_in_flight)
log_filters.install()
