"""Prediction records go to the store from one thread per API worker, in batches.

The request path only appends a row to a bounded deque (no lock, no system call, no wait):
the writer thread wakes every `interval_s`, takes everything waiting and inserts it in one
transaction. What it costs when the store cannot keep up or cannot be reached:

- more than `max_waiting` rows waiting (the store slower than the traffic): new rows are
  dropped and counted, `iris_prediction_records_lost_total{reason="queue_full"}`;
- a batch the store refuses (database down, disk full, locked past the busy timeout): the
  batch is dropped and counted, `{reason="store_unavailable"}`. Rows are never queued without
  limit waiting for a database to come back; the next batch simply tries again (the engine
  reconnects).

Either way the answer has gone out: a record is an audit trail of an answer, not its
precondition. One warning a minute while records are being lost; the
IrisPredictionRecordsLost alert (deploy/monitoring/alerts.yaml) calls an operator.

The same thread applies the store's retention every `retention_every_s`, and as soon as it
has written a tenth of the store's prediction limit since the last time: with W writers
(API workers, of every replica sharing the store) the store never holds more than
IRIS_RECORD_MAX_PREDICTIONS x (1 + W / 10) rows plus W batches, however fast the traffic.
`flush()` writes what waits now (the feedback desk calls it so that a label for an answer
this worker just sent finds its prediction); `close()` at exit writes the rest.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iris_service.monitoring import metrics
from iris_service.records.store_errors import StoreUnavailable

if TYPE_CHECKING:
    from iris_service.records.store import RecordStore

logger = logging.getLogger("iris_service.records.writer")
WARN_EVERY_S = 60.0


class RecordWriter:
    def __init__(
        self,
        store: RecordStore | Callable[[], RecordStore],
        max_waiting: int = 10_000,
        interval_s: float = 0.05,
        retention_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store if not callable(store) else None
        self._open_store = store if callable(store) else None
        self._opening = threading.Lock()
        self.max_waiting = max_waiting
        self.interval_s = interval_s
        self.retention_every_s = retention_every_s
        self._clock = clock
        self._waiting: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._generation = 0  # batches taken; flush() waits for the one after its call
        self._stop = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_warning = -WARN_EVERY_S
        self._last_retention = clock()
        self._written_since_retention = 0

    @property
    def store(self) -> RecordStore:
        """The store; a writer given what opens it opens it here, on first use (in its thread,
        unless flush or a test asks first), so that a process that records nothing never
        imports the database layer."""
        if self._store is None:
            with self._opening:
                if self._store is None and self._open_store is not None:
                    self._store = self._open_store()
        return self._store  # type: ignore[return-value]  # one of the two is always set

    @property
    def _retention_rows(self) -> int:
        return max(1, self.store.max_predictions // 10)

    # ------------------------------------------------------------ request path (no I/O)

    def submit(self, row: dict[str, Any]) -> None:
        """Hand one prediction row to the writer; never blocks, never raises."""
        if self._thread is None:
            self._start()
        if len(self._waiting) >= self.max_waiting:
            self._lost("queue_full", 1)
            return
        self._waiting.append(row)

    # ------------------------------------------------------------ other threads

    def flush(self, timeout: float = 5.0) -> bool:
        """Write every row submitted before this call; False if that took over `timeout`."""
        if self._thread is None:
            self._write_batch()
            return True
        with self._written:
            target = self._generation + 2  # the batch being written may predate our rows
            self._wake.set()
            return self._written.wait_for(lambda: self._generation >= target, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what waits and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._write_batch()

    # ------------------------------------------------------------ writer thread

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="prediction-records", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._write_batch()
            if (
                self._clock() - self._last_retention >= self.retention_every_s
                or self._written_since_retention >= self._retention_rows
            ):
                self._last_retention = self._clock()
                self._written_since_retention = 0
                self._apply_retention()

    def _write_batch(self) -> None:
        batch = []
        while self._waiting:
            batch.append(self._waiting.popleft())
        try:
            if batch:
                self.store.add_predictions(batch)
                self._written_since_retention += len(batch)
        except StoreUnavailable as exc:
            self._lost("store_unavailable", len(batch), str(exc))
        except Exception as exc:  # a record must never take the thread down
            logger.exception("prediction records: a batch could not be written")
            self._lost("write_error", len(batch), type(exc).__name__)
        finally:
            with self._written:
                self._generation += 1
                self._written.notify_all()

    def _apply_retention(self) -> None:
        try:
            deleted = self.store.enforce_retention()
        except StoreUnavailable as exc:
            logger.warning("prediction store retention skipped: %s", exc)
            return
        if deleted:
            metrics.RECORDS_DELETED_BY_RETENTION.inc(deleted)

    def _lost(self, reason: str, count: int, cause: str = "writer behind") -> None:
        metrics.PREDICTION_RECORDS_LOST.labels(reason).inc(count)
        now = self._clock()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            logger.warning(
                "prediction records are being lost (%s); counted in "
                "iris_prediction_records_lost_total{reason=%r}",
                cause,
                reason,
            )
