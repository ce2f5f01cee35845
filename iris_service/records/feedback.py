"""POST /feedback: the true class of a prediction, joined with what the service answered.

A label names a prediction by the request id of its answer: the server's id (the answer's
X-Server-Request-Id, random, so only who saw the answer knows it), or the client's own
X-Request-ID when the label is sent with the API key that made the prediction (or keys are
off, as under `make serve`): a client's id, which anyone may choose, never reaches another
key's predictions. A flower of a /predict_batch answer is `<request id>/<index>` (0-based).
The desk finds the prediction in the prediction store (iris_service/records/store.py), joins
the label with its inputs, answer and model, and inserts the labels of one request in one
transaction: all or none, and the store's unique key makes a flower's label count once,
whichever worker or replica takes it.

Refusals (FeedbackRefused, answered in the service's one error shape):
- 400 `validation_error`: malformed body, unknown class, bad address (by schemas and here);
- 404 `unknown_request_id`: no stored prediction has that id (never made, failed, made with
  another API key when the id is the client's, removed by the store's retention), or a
  batch index beyond the batch;
- 409 `already_labelled`: the flower has a label (in the store, or twice in the request);
- 409 `ambiguous_request_id`: a client's X-Request-ID used for several predictions: send the
  answer's X-Server-Request-Id instead;
- 422 `not_labellable`: a prediction of a route whose flowers we do not keep as features
  (the V2 and MLflow protocol routes);
- 503 `store_unavailable` (with Retry-After): the store cannot be reached now.
A prediction's record reaches the store a few milliseconds after its answer (a background
writer in each API worker, iris_service/records/writer.py): a label that comes sooner is
looked up again for up to `wait_s`. A client's id is settled the same way: an id found once is
looked up again `settle_s` (a few writer intervals) after the label arrived, so that a second
prediction with that id, answered before the label by another worker whose writer has not
written it yet, still makes the label 409 `ambiguous_request_id` rather than name the first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iris_service.background import BackgroundLoop
from iris_service.errors import Refusal
from iris_service.monitoring import metrics
from iris_service.monitoring.live_quality import LiveQuality
from iris_service.names import FEATURE_NAMES
from iris_service.records.store_errors import AlreadyLabelled, Record, StoreUnavailable

if TYPE_CHECKING:
    from iris_service.records.store import RecordStore

logger = logging.getLogger("iris_service.records.feedback")

LABELLABLE_ENDPOINTS = ("/predict", "/predict_batch")
_ADDRESS = re.compile(r"^([A-Za-z0-9._-]{1,64})(?:/(\d{1,6}))?$")
RETRY_STEP_S = 0.05
# A starting worker reads the newest FEEDBACK_WINDOW x START_WINDOWS labels: the live windows
# of the champion, a challenger and the versions just before them, never the whole history.
START_WINDOWS = 4
WARN_EVERY_S = 60.0
# How far behind the newest label id a follower looks for labels committed late (PostgreSQL).
LOOKBACK_IDS = 2_000


class FeedbackRefused(Refusal):
    """Labels refused, with the answer's status, error code and detail."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, status=status, code=code)


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
    """Takes labels (blocking: database calls; run it off the event loop)."""

    def __init__(
        self,
        store: RecordStore,
        flush_predictions: Callable[[], object] = lambda: None,
        wait_s: float = 0.25,
        settle_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._flush_predictions = flush_predictions
        self.wait_s = wait_s
        self.settle_s = settle_s
        self._clock = clock
        self._last_warning = -WARN_EVERY_S

    def label(self, labels: Sequence[tuple[str, str]], key_id: str | None = None) -> list[Record]:
        """Record every (request id, true class) of `labels`, sent with the API key `key_id`
        (None: keys off), or none (FeedbackRefused)."""
        try:
            records = self._label(labels, key_id)
        except StoreUnavailable as exc:
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:  # one line a minute, not per request
                self._last_warning = now
                logger.warning("feedback refused: the prediction store is unavailable: %s", exc)
            metrics.FEEDBACK_TOTAL.labels("store_unavailable").inc(len(labels))
            raise FeedbackRefused(
                503, "store_unavailable", "the prediction store cannot be reached; retry later"
            ) from None
        except FeedbackRefused as refused:
            metrics.FEEDBACK_TOTAL.labels(refused.code).inc(len(labels))
            raise
        metrics.FEEDBACK_TOTAL.labels("accepted").inc(len(records))
        for record in records:
            metrics.FEEDBACK_DELAY_SECONDS.observe(max(record["ts"] - record["predicted_at"], 0))
        return records

    def _label(self, labels: Sequence[tuple[str, str]], key_id: str | None) -> list[Record]:
        now = self._clock()
        addresses = [parse_address(request_id) for request_id, _ in labels]
        self._flush_predictions()  # this worker's answers already sent, not yet written
        arrived = time.monotonic()
        deadline = arrived + self.wait_s  # for the whole request, not per label
        settled = arrived + self.settle_s  # every answer sent before now is stored by then
        records = []
        for address, (_, class_name) in zip(addresses, labels, strict=True):
            server_id, prediction = self._prediction(address, key_id, deadline, settled)
            records.append(join(address, server_id, class_name, prediction, now))
        try:
            self.store.add_labels(records)
        except AlreadyLabelled as exc:
            shown = ", ".join(exc.keys[:5]) + (" ..." if len(exc.keys) > 5 else "")
            raise FeedbackRefused(
                409, "already_labelled", f"already labelled (server ids): {shown}"
            ) from None
        return records

    def _prediction(
        self, address: Address, key_id: str | None, deadline: float, settled: float
    ) -> tuple[str, dict[str, Any]]:
        """The server id and the stored prediction `address` names (waiting, within the
        deadline, for a record another worker has not written yet; and, for a client's id,
        until `settled`, for a second prediction with that id another worker is writing)."""
        while True:
            found = self._find(address.request_id, key_id)
            by_client_id = found is not None and found[0] != address.request_id
            if by_client_id and (wait := settled - time.monotonic()) > 0:
                time.sleep(wait)
                found = self._find(address.request_id, key_id)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise FeedbackRefused(
                    404,
                    "unknown_request_id",
                    f"no stored prediction has the request id {address.request_id!r}",
                )
            self._flush_predictions()  # this worker's records still waiting for the writer
            time.sleep(RETRY_STEP_S)

    def _find(self, request_id: str, key_id: str | None) -> tuple[str, dict[str, Any]] | None:
        prediction = self.store.prediction(request_id)  # a server id
        if prediction is not None:
            return request_id, prediction
        server_ids = self.store.server_ids(request_id, key_id, limit=2)
        if len(server_ids) > 1:
            raise FeedbackRefused(
                409,
                "ambiguous_request_id",
                f"X-Request-ID {request_id!r} was sent with several predictions; label with "
                "the answer's X-Server-Request-Id instead",
            )
        if not server_ids:
            return None
        prediction = self.store.prediction(server_ids[0])
        return None if prediction is None else (server_ids[0], prediction)


class LabelFollower(BackgroundLoop):
    """Keeps this API worker's live quality in line with every label in the store, whichever
    worker or replica took it. At start it reads the newest labels a live window needs (a
    fixed number, never the history: `start_rows`); then every `period_s` (and before GET
    /live_quality answers) the labels added since, and publishes the figures."""

    def __init__(
        self,
        store: RecordStore,
        quality: LiveQuality,
        start_rows: int,
        period_s: float = 1.0,
    ) -> None:
        self.store, self.quality = store, quality
        self.start_rows = start_rows
        self.period_s = period_s
        self.cursor: int | None = None
        self._seen: set[int] = set()  # label ids read, those within LOOKBACK_IDS of the cursor
        self._start_cursor = 0
        self._lock = threading.Lock()
        self._last_warning = -WARN_EVERY_S

    def catch_up_now(self) -> int:
        """Read what is new (blocking); the number of labels read.

        Label ids are given at insert, not at commit: on PostgreSQL a transaction that took a
        lower id can commit after a higher one was read. So each look reads the ids of the
        last LOOKBACK_IDS labels before the cursor too (an index-only read) and fetches the
        labels it has not seen."""
        with self._lock:
            if self.cursor is None:
                self.cursor, found = self.store.recent_labels(self.start_rows)
                metrics.RECORDS_READ_AT_START.set(len(found))
                self._start_cursor = self.cursor  # the history before it is never read
            else:
                since = max(self._start_cursor, self.cursor - LOOKBACK_IDS)
                ids = self.store.label_ids_after(since)
                found = self.store.labels_by_id([i for i in ids if i not in self._seen])
                self._seen.update(ids)
                self.cursor = max([self.cursor, *ids])
            floor = self.cursor - LOOKBACK_IDS
            self._seen = {i for i in self._seen if i > floor}
            for record in found:
                self.quality.add(record)
        if found:
            self.quality.publish()
        return len(found)

    async def catch_up(self) -> None:
        try:
            await asyncio.to_thread(self.catch_up_now)
        except StoreUnavailable as exc:  # read next time; the figures stay as they were
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_S:  # not one line per period
                self._last_warning = now
                logger.warning("live quality not updated: %s", exc)

    async def run(self) -> None:
        while True:
            await self.catch_up()
            await asyncio.sleep(self.period_s)
