"""POST /feedback: the true class of a prediction, joined with what the service answered.

A label names a prediction by the request id of its answer: the server's id (the answer's
X-Server-Request-Id, random, so only who saw the answer knows it), or the client's own
X-Request-ID when the label is sent with the API key that made the prediction (or keys are
off, as under `make serve`): a client's id, which anyone may choose, never reaches another
key's predictions. A flower of a /predict_batch answer is `<request id>/<index>` (0-based).
The desk finds the prediction in the prediction log (iris_service/prediction_index.py),
joins the label with its inputs, answer and model, and appends the result to the feedback
log (iris_service/feedback_log.py) all-or-nothing: one bad label refuses the whole request.

Refusals (FeedbackRefused, answered in the service's one error shape):
- 400 `validation_error`: malformed body, unknown class, bad address (by schemas and here);
- 404 `unknown_request_id`: no logged prediction has that id (never made, failed, made with
  another API key when the id is the client's, older than the log or the index keeps), or a
  batch index beyond the batch;
- 409 `already_labelled`: the flower has a label (in the log, or twice in the request);
- 409 `ambiguous_request_id`: a client's X-Request-ID used for several predictions: send the
  answer's X-Server-Request-Id instead;
- 422 `not_labellable`: a prediction of a route whose flowers we do not keep as features
  (the V2 and MLflow protocol routes).
A prediction's record reaches the log a few milliseconds after its answer (a background
writer): a label that comes sooner is looked up again for up to `wait_s`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import metrics
from .background import BackgroundLoop
from .feedback_log import AlreadyLabelled, FeedbackLog, Record
from .prediction_index import AmbiguousRequestId, PredictionIndex
from .settings import FEATURE_NAMES

logger = logging.getLogger("iris_service.feedback")

LABELLABLE_ENDPOINTS = ("/predict", "/predict_batch")
_ADDRESS = re.compile(r"^([A-Za-z0-9._-]{1,64})(?:/(\d{1,6}))?$")
RETRY_STEP_S = 0.05


class FeedbackRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class Address:
    request_id: str
    index: int | None  # the flower of a batch answer

    def __str__(self) -> str:
        return self.request_id if self.index is None else f"{self.request_id}/{self.index}"


def parse_address(text: str) -> Address:
    match = _ADDRESS.match(text)
    if match is None:
        raise FeedbackRefused(
            400,
            "validation_error",
            f"request_id {text[:80]!r} is not a request id (letters, digits, . _ -; at most "
            "64), optionally followed by /<index> for a flower of a batch",
        )
    index = match.group(2)
    return Address(match.group(1), int(index) if index is not None else None)


def join(
    address: Address, server_id: str, class_name: str, prediction: dict[str, Any], now: float
) -> Record:
    """The feedback record of one label and the logged prediction it names."""
    endpoint = prediction.get("endpoint")
    if endpoint not in LABELLABLE_ENDPOINTS:
        raise FeedbackRefused(
            422,
            "not_labellable",
            f"{address} is a prediction of {endpoint}; labels are taken for "
            f"{' and '.join(LABELLABLE_ENDPOINTS)} predictions",
        )
    outputs = prediction["outputs"]
    inputs = prediction.get("inputs")
    if endpoint == "/predict_batch":
        answers = outputs["predictions"]
        if address.index is None:
            raise FeedbackRefused(
                400,
                "validation_error",
                f"{address} is a batch of {len(answers)} flowers: label each one as "
                f"{address}/<index> (0 to {len(answers) - 1})",
            )
        if address.index >= len(answers):
            raise FeedbackRefused(
                404,
                "unknown_request_id",
                f"{address}: the batch had {len(answers)} flowers (indexes 0 to "
                f"{len(answers) - 1})",
            )
        answer = answers[address.index]
        flower = inputs["flowers"][address.index] if isinstance(inputs, dict) else None
        key = f"{server_id}/{address.index}"
    else:
        if address.index not in (None, 0):
            raise FeedbackRefused(
                404, "unknown_request_id", f"{address}: that prediction was of one flower"
            )
        answer, flower, key = outputs, inputs, server_id
    features = (
        {name: float(flower[name]) for name in FEATURE_NAMES} if isinstance(flower, dict) else None
    )
    return {
        "ts": now,
        "key": key,
        "request_id": str(address),
        "server_request_id": server_id,
        "index": address.index,
        "class_name": class_name,
        "predicted": answer["class_name"],
        "correct": answer["class_name"] == class_name,
        "model_tag": answer.get("model_tag") or outputs.get("model_tag"),
        "predicted_at": float(prediction["ts"]),
        "endpoint": endpoint,
        "features": features,
    }


class FeedbackDesk:
    """Takes labels (blocking: file reads and an fsync; run it off the event loop)."""

    def __init__(
        self,
        index: PredictionIndex,
        log: FeedbackLog,
        flush_predictions: Callable[[], object] = lambda: None,
        publish: Callable[[], None] = lambda: None,
        wait_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index, self.log = index, log
        self._flush_predictions = flush_predictions
        self.publish = publish
        self.wait_s = wait_s
        self._clock = clock
        self._mutex = threading.Lock()

    def label(self, labels: Sequence[tuple[str, str]], key_id: str | None = None) -> list[Record]:
        """Record every (request id, true class) of `labels`, sent with the API key `key_id`
        (None: keys off), or none (FeedbackRefused)."""
        with self._mutex:
            try:
                records = self._label(labels, key_id)
            except FeedbackRefused as refused:
                metrics.FEEDBACK_TOTAL.labels(refused.code).inc(len(labels))
                raise
        metrics.FEEDBACK_TOTAL.labels("accepted").inc(len(records))
        for record in records:
            metrics.FEEDBACK_DELAY_SECONDS.observe(max(record["ts"] - record["predicted_at"], 0))
        self.publish()
        return records

    def _label(self, labels: Sequence[tuple[str, str]], key_id: str | None) -> list[Record]:
        now = self._clock()
        addresses = [parse_address(request_id) for request_id, _ in labels]
        self._flush_predictions()  # this worker's answers already sent, not yet written
        self.index.refresh()
        deadline = time.monotonic() + self.wait_s  # for the whole request, not per label
        records = []
        for address, (_, class_name) in zip(addresses, labels, strict=True):
            server_id = self._server_id(address, key_id, deadline)
            prediction = self.index.record(server_id)
            if prediction is None:
                raise FeedbackRefused(
                    404,
                    "unknown_request_id",
                    f"{address}: its record has left the prediction log (rotated away)",
                )
            records.append(join(address, server_id, class_name, prediction, now))
        try:
            self.log.append(records)
        except AlreadyLabelled as exc:
            shown = ", ".join(exc.keys[:5]) + (" ..." if len(exc.keys) > 5 else "")
            raise FeedbackRefused(
                409, "already_labelled", f"already labelled (server ids): {shown}"
            ) from None
        return records

    def _server_id(self, address: Address, key_id: str | None, deadline: float) -> str:
        while True:
            try:
                found = self.index.server_id(address.request_id, key_id)
            except AmbiguousRequestId as exc:
                raise FeedbackRefused(
                    409,
                    "ambiguous_request_id",
                    f"X-Request-ID {exc.request_id!r} was sent with {exc.count} predictions; "
                    "label with the answer's X-Server-Request-Id instead",
                ) from None
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise FeedbackRefused(
                    404,
                    "unknown_request_id",
                    f"no logged prediction has the request id {address.request_id!r}",
                )
            self._flush_predictions()  # this worker's records still queued for the writer
            time.sleep(RETRY_STEP_S)
            self.index.refresh()


class FeedbackFollower(BackgroundLoop):
    """Keeps this API worker's live quality in line with the labels every worker of the pod
    recorded: the feedback log is shared, but each worker reads it only when it appends (and
    at start), so a worker that took no label for a while would publish and answer with an
    old window. Every `period_s` (and before GET /live_quality answers) it reads what the
    others appended and publishes."""

    def __init__(self, desk: FeedbackDesk, period_s: float = 1.0) -> None:
        self.desk = desk
        self.period_s = period_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.catch_up()
            except OSError as exc:  # a log that cannot be read now is read next time
                logger.warning("could not read the feedback log: %s", exc.strerror)

    async def catch_up(self) -> None:
        if await asyncio.to_thread(self.desk.log.catch_up):
            self.desk.publish()
