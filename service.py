"""Iris classifier served by BentoML 1.4.

request -> middleware (prediction log; request id, measurements, error shape; API key;
           admission control: iris_service/*.py)
        -> IrisClassifier (this API service: validation, response shaping)
        -> InferenceCore (iris_service/inference/core.py: the models in service, followed from the
           serving aliases in this process; champion or challenger; drift)
             -> the compiled (ONNX) model, computed here in the API worker, or
             -> IrisModelRunner (bentoml.depends: own process, adaptive batching) for requests
                whose rows cost more than the hop to it.
Every transport (these routes, V2, MLflow scoring: iris_service/protocols) calls the core;
so does V2 over gRPC, a grpc.aio server the first API worker starts in its event loop
(port 8001, iris_service/protocols/grpc_server.py).

POST /feedback takes the true class of earlier predictions and joins it with the prediction
log (iris_service/records/feedback.py); GET /live_quality and the iris_live_* metrics show how right
each model version is (iris_service/monitoring/live_quality.py, docs/feedback.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import bentoml
import numpy as np
from bentoml._internal.context import server_context
from starlette.applications import Starlette
from starlette.responses import Response

from iris_service.errors import Unavailable
from iris_service.http import answers, log_filters
from iris_service.http.admission import AdmissionControlMiddleware, InFlight
from iris_service.http.api_docs import SERVICE_DESCRIPTION, DescribedService
from iris_service.http.auth import ApiKeyMiddleware
from iris_service.http.errors import refusals_answered
from iris_service.http.explanation_answers import (
    ExplainFeatures,
    ExplanationAnswer,
    explanation_response,
)
from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.http.model_status import model_route
from iris_service.http.prediction_records import PredictionRecordMiddleware
from iris_service.http.request_ids import api_key_id
from iris_service.http.schemas import (
    BatchPrediction,
    FeedbackAnswer,
    FeedbackRequest,
    IrisBatch,
    IrisFeatures,
    IrisFlower,
    Prediction,
    flower_rows,
)
from iris_service.inference import runner_address, runner_client
from iris_service.inference.core import InferenceCore
from iris_service.inference.model_follower import CHAMPION, ModelFollower, start_following
from iris_service.inference.model_loading import checked_model_reference
from iris_service.inference.runner import IrisModelRunner
from iris_service.inference.runner_health import RunnerHeartbeat, runner_ping
from iris_service.monitoring.bentoml_metrics import bound_bentoml_request_metrics, fixed_paths
from iris_service.monitoring.drift import drift_route
from iris_service.monitoring.live_quality import LiveQuality, live_quality_route
from iris_service.monitoring.metric_files import read_empty_metric_files_as_empty
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.protocols import grpc_server
from iris_service.protocols.routes import protocol_app
from iris_service.records.feedback import START_WINDOWS, FeedbackDesk, LabelFollower
from iris_service.records.store_errors import NewerSchema, StoreUnavailable
from iris_service.records.writer import RecordWriter
from iris_service.settings import API_TIMEOUT_SECONDS, RUNNER_PING_PERIOD_SECONDS, settings

if TYPE_CHECKING:
    from iris_service.records.store import RecordStore

logger = logging.getLogger("iris_service.api")
# Read once: the timeout of every runner call.
RUNNER_CALL_TIMEOUT_SECONDS = settings.runner_call_timeout_seconds


def _current() -> IrisClassifier:
    return bentoml.get_current_service()


def _core() -> InferenceCore:
    return _current().core


def _open_record_store() -> RecordStore:
    """The prediction store (iris_service/records/store.py), opened where it is first used:
    in an API worker. The `bentoml serve` supervisor and the runner import this module too,
    and never import the database layer (SQLAlchemy)."""
    from iris_service.records.store import open_record_store

    return open_record_store(str(settings.record_store_url))


# Predictions (written by their middleware, below, through the writer) and labels; no writer
# with IRIS_RECORD_STORE_URL=off.
record_writer = RecordWriter(_open_record_store) if settings.record_store_url is not None else None
# Prediction requests in flight in this worker, HTTP and gRPC together: one admission limit.
in_flight = InFlight()
# `bentoml serve` stops at once, in one line, when the gRPC port is taken (no silent sharing).
if (serve_host := grpc_server.serve_command_host()) is not None:
    grpc_server.check_port_free(serve_host, settings.grpc_port)
    grpc_server.forget_published_port(settings.grpc_port_file)  # a stale file must not name a port


def _one_flower(measurements: dict[str, float]) -> np.ndarray:
    """The rows [1, features] of one validated flower's measurements."""
    return np.array([[measurements[name] for name in FEATURE_NAMES]], dtype=float)


# GET /drift, GET /model and GET /live_quality, beside the API's own routes.
status_app = Starlette(
    routes=[
        drift_route(lambda: _core().drift),
        model_route(lambda: _core().status()),
        live_quality_route(lambda: _current().live_quality, lambda: _current().follow_feedback()),
    ]
)


@bentoml.service(
    name="IrisClassifier",
    traffic={"timeout": API_TIMEOUT_SECONDS},
    description=SERVICE_DESCRIPTION,
    service_class=DescribedService,
)
@bentoml.asgi_app(status_app, path="/")
@bentoml.asgi_app(protocol_app(_core), path="/")
class IrisClassifier:
    """Classifies Iris flowers (setosa, versicolor, virginica) from four measurements in cm.

    POST /predict with one flower, or POST /predict_batch with up to the configured number of
    flowers. Every error answer is {"error", "detail", "request_id"}. The same inference also
    answers the Open Inference Protocol V2 (/v2/...) and MLflow scoring (/invocations), in
    their own shapes (iris_service/protocols, docs/protocols.md).
    """

    runner = bentoml.depends(IrisModelRunner)
    # Packed into the Bento by `bentoml build` (the runner declares the same versions).
    bento_model = checked_model_reference(settings.model_tag)
    challenger_model = (
        checked_model_reference(settings.challenger_tag) if settings.challenger_tag else None
    )

    def __init__(self) -> None:
        # Tiers (docs/deployment.md): the runner is another Deployment; runner-bound work is
        # refused with 503 while it does not answer, and its state never fails this pod's
        # /livez or /readyz (iris_service/inference/runner_address.py).
        self.runner_tier = runner_address.runner_is_remote()
        # /livez answers from this heartbeat's record (iris_service/inference/runner_health.py); the
        # core sends no work to a runner it finds silent.
        self.heartbeat = RunnerHeartbeat(
            lambda: runner_ping(self.runner)(),
            period_s=RUNNER_PING_PERIOD_SECONDS,
            timeout_s=settings.runner_ping_timeout_seconds,
            grace_s=settings.runner_liveness_grace_seconds,
        )
        self.core = InferenceCore(
            ModelFollower.for_service(
                self.bento_model, self.challenger_model, settings.challenger_mode
            ),
            mode=settings.challenger_mode,
            canary_share=settings.canary_share,
            seed=settings.canary_seed,
            runner=self._call_runner,
            runner_usable=(
                (lambda: not self.heartbeat.silent()) if self.runner_tier else self.heartbeat.ready
            ),
            runner_required=self.runner_tier,
            runner_hop_seconds=settings.runner_hop_seconds,
            runner_rows=settings.runner_min_rows,
            largest_request_rows=settings.max_batch_flowers,
            shadow_max_rows=settings.shadow_max_rows,
        )
        self.live_quality = LiveQuality(settings.feedback_window, CLASS_NAMES)
        self.grpc: grpc_server.GrpcServer | None = None
        self.feedback_desk: FeedbackDesk | None = None
        # Labels any worker or replica recorded reach this worker's live quality within a
        # second (iris_service/records/feedback.py).
        self.label_follower: LabelFollower | None = None
        self.record_store: RecordStore | None = None
        if record_writer is None:
            logger.info("prediction records and feedback disabled (IRIS_RECORD_STORE_URL=off)")
        else:
            self.record_store = record_writer.store
            self.feedback_desk = FeedbackDesk(
                self.record_store,
                flush_predictions=lambda: record_writer.flush(timeout=0.5),
                settle_s=5 * record_writer.interval_s,
            )
            self.label_follower = LabelFollower(
                self.record_store,
                self.live_quality,
                start_rows=settings.feedback_window * START_WINDOWS,
            )

    @bentoml.on_startup
    async def start_following(self) -> None:
        self.heartbeat.start()
        start_following(self.core.follower)

    @bentoml.on_startup
    async def open_records(self) -> None:
        """Create or check the store's schema, then follow its labels. A store written by a
        newer version stops the start; an unreachable one does not (records are counted lost
        and /feedback answers 503 until it is back)."""
        if self.record_store is None or self.label_follower is None:
            return
        try:
            await asyncio.to_thread(self.record_store.migrate)
        except NewerSchema:
            raise
        except StoreUnavailable as exc:
            logger.error("the prediction store is unavailable at start: %s", exc)
        await self.label_follower.catch_up()  # the live windows, before the first answer
        self.label_follower.start()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """The Open Inference Protocol V2 over gRPC in this event loop, behind the same core,
        on IRIS_GRPC_PORT, from the first API worker (iris_service/protocols/grpc_server.py);
        a taken port stops the worker's start (GrpcPortBusy)."""
        self.grpc = await grpc_server.start_configured(
            lambda: self.core, in_flight, record_writer, server_context.worker_index
        )

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace_s=5)

    async def follow_feedback(self) -> None:
        """Read the labels recorded since the last look (GET /live_quality asks first)."""
        if self.label_follower is not None:
            await self.label_follower.catch_up()

    @bentoml.on_shutdown
    async def stop_following(self) -> None:
        self.heartbeat.stop()
        self.core.follower.stop()
        if self.label_follower is not None:
            self.label_follower.stop()

    async def __is_ready__(self) -> bool:
        """Ready while this worker holds a model: it answers without the runner."""
        return self.core.ready()

    async def __is_alive__(self) -> bool:
        """503 once the runner has been silent for longer than the grace period (in tiers,
        never for the runner: restarting API pods would not help the runner tier)."""
        return self.runner_tier or self.heartbeat.alive()

    # The answers are JSON encoded once (iris_service/http/answers.py); `output_spec` names the
    # documented response model (/docs.json), which the return annotation would otherwise.
    @bentoml.api(route="/predict", input_spec=IrisFeatures, output_spec=Prediction)
    @refusals_answered
    async def predict(self, **measurements: float) -> Response:
        """Classify one flower."""
        answer = await self.core.infer(_one_flower(measurements))
        return answers.prediction_response(answer.model, answer.probabilities)

    @bentoml.api(route="/explain", input_spec=ExplainFeatures, output_spec=ExplanationAnswer)
    @refusals_answered
    async def explain(self, ctx: bentoml.Context, **measurements: float) -> Response:
        """Classify one flower and explain it: per class, each feature's exact Shapley value
        of the probability over the model's background sample (docs/explanations.md)."""
        explained = await self.core.explain(_one_flower(measurements))
        return explanation_response(explained)

    @bentoml.api(route="/predict_batch", input_spec=IrisBatch, output_spec=BatchPrediction)
    @refusals_answered
    async def predict_batch(self, flowers: list[IrisFlower]) -> Response:
        """Classify several flowers in one call; answers keep the order of the flowers."""
        answer = await self.core.infer(flower_rows(flowers))
        return answers.batch_response(answer.model, answer.probabilities)

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest)
    @refusals_answered
    async def feedback(self, ctx: bentoml.Context, **body: object) -> FeedbackAnswer:
        """The true class of predicted flowers: {"request_id": <the answer's
        X-Server-Request-Id, or your X-Request-ID>, "class_name": ...}, or {"feedback": [...]};
        a flower of a batch is <request id>/<index>. Your own X-Request-ID names your
        predictions only with the API key that made them. All labels of a request are
        recorded, or none (docs/feedback.md)."""
        if self.feedback_desk is None:
            raise Unavailable("feedback needs the prediction store (IRIS_RECORD_STORE_URL is off)")
        labels = FeedbackRequest.model_validate(body).labels()
        records = await asyncio.to_thread(
            self.feedback_desk.label, labels, api_key_id(ctx.request.scope)
        )
        await self.follow_feedback()  # this worker's live quality counts them at once
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

    async def _call_runner(self, role: str, rows: np.ndarray) -> dict:
        """The runner's answer for one request's rows (`{"tag", "probabilities"}`)."""
        method = (
            self.runner.to_async.predict_champion
            if role == CHAMPION
            else self.runner.to_async.predict_challenger
        )
        async with asyncio.timeout(RUNNER_CALL_TIMEOUT_SECONDS):
            (answer,) = await runner_client.call_with_retry(method, [rows])
        return answer


# Under `start-http-server`: a missing, misspelt, malformed or unresolvable --depends stops
# the start with one line, before any worker (never a runner built in the API process).
runner_address.check_start_command(
    dep.on.name for dep in IrisClassifier.dependencies.values() if dep.on is not None
)

# Outermost first: prediction log -> monitoring (request id, error shape) -> API key ->
# admission control -> the API. See docs in each module.
IrisClassifier.add_asgi_middleware(PredictionRecordMiddleware, writer=record_writer)
IrisClassifier.add_asgi_middleware(RequestMonitoringMiddleware)
IrisClassifier.add_asgi_middleware(ApiKeyMiddleware, api_keys=settings.api_keys)
IrisClassifier.add_asgi_middleware(AdmissionControlMiddleware, counter=in_flight)
log_filters.install()
# BentoML's own request metrics name only the routes above, never a path a client made up.
bound_bentoml_request_metrics(fixed_paths([*IrisClassifier.openapi_spec.paths, "/", "/docs.json"]))
# A scrape while a worker is creating its metric file answers, not 500 (metric_files.py).
read_empty_metric_files_as_empty()
