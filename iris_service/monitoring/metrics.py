"""Prometheus metrics of the service, served by BentoML on /metrics.

BentoML runs prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR is set for
every worker before the service is imported), so plain prometheus_client metrics declared
here are aggregated across workers. Names carry units, as Prometheus recommends.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from iris_service.names import CLASS_NAMES

# Fine where the service answers (a few ms to a few tens of ms inside the API worker), so
# that p50/p95/p99 are not interpolated inside one wide bucket; 100 stays a bound (the
# latency alert's threshold).
LATENCY_BUCKETS_MS = (
    0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12.5, 15, 20, 25, 30, 40, 50, 75, 100,
    150, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip
CPU_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000)
MEMORY_DELTA_BUCKETS_MB = (-10, -1, -0.1, 0, 0.1, 0.5, 1, 5, 10, 50, 100)

REQUEST_LATENCY_MS = Histogram(
    "iris_request_latency_ms",
    "Wall time of a prediction request inside the API worker, in milliseconds.",
    ("endpoint", "status"),
    buckets=LATENCY_BUCKETS_MS,
)
REQUEST_CPU_MS = Histogram(
    "iris_request_cpu_ms",
    "CPU time the API worker process used while the request was in flight, in milliseconds.",
    ("endpoint",),
    buckets=CPU_BUCKETS_MS,
)
REQUEST_MEMORY_DELTA_MB = Histogram(
    "iris_request_memory_delta_mb",
    "Change of the API worker's resident memory over a request, in MB.",
    ("endpoint",),
    buckets=MEMORY_DELTA_BUCKETS_MB,
)
PROCESS_RESIDENT_MEMORY_MB = Gauge(
    "iris_process_resident_memory_mb",
    "Resident memory of each API worker after its latest request, in MB.",
    multiprocess_mode="livemax",
)
PREDICTIONS_TOTAL = Counter(
    "iris_predictions_total",
    "Flowers classified, by predicted class.",
    ("class_name",),
)
INFERENCES_TOTAL = Counter(
    "iris_inferences_total",
    "Answered prediction requests by where they were computed: api_worker (in-process, the"
    " default) or runner (requests whose rows cost more than the hop, batched there).",
    ("computed_in",),
)
EXPLAINED_FLOWERS_TOTAL = Counter(
    "iris_explained_flowers_total",
    "Flowers explained (exact Shapley values: /explain and V2 with parameters.explain).",
)
ERRORS_TOTAL = Counter(
    "iris_errors_total",
    "Error answers, by error code.",
    ("endpoint", "error"),
)
# Data drift (iris_service/monitoring/drift.py). Each API worker scores its own window of flowers;
# "livemax" shows the highest score among the live workers (a dead worker's value is dropped).
DRIFT_PSI = Gauge(
    "iris_feature_drift_psi",
    "Population stability index of each feature over the recent window vs the training data.",
    ("feature",),
    multiprocess_mode="livemax",
)
DRIFT_WINDOW_FLOWERS = Gauge(
    "iris_drift_window_flowers",
    "Flowers in the drift window of the API worker holding the most.",
    multiprocess_mode="livemax",
)
# Prediction records (iris_service/records/writer.py) are written after the answer, in
# batches: a record the store could not take is counted here (alert: IrisPredictionRecordsLost).
PREDICTION_RECORDS_LOST = Counter(
    "iris_prediction_records_lost",
    "Prediction records not written to the prediction store, by reason (store_unavailable: "
    "the database was down, full or locked; queue_full: the writer fell behind; write_error: "
    "any other failure).",
    ("reason",),
)
RECORDS_DELETED_BY_RETENTION = Counter(
    "iris_records_deleted_by_retention",
    "Predictions and labels deleted from the prediction store by its retention (age, rows).",
)
RECORDS_READ_AT_START = Gauge(
    "iris_records_read_at_start",
    "Labels this API worker read from the prediction store when it started (its live-quality "
    "windows; never the whole history).",
    multiprocess_mode="liveall",
)
# The models in service (iris_service/inference/model_follower.py), set by each runner worker: 1 for
# the tag and role it serves, 0 for one it served before. "livemax": a model is shown as in
# service while any live runner worker serves it (during a switch, both can be).
MODEL_INFO = Gauge(
    "iris_model_info",
    "1 for each model version a runner worker serves, by role (champion, challenger).",
    ("model_tag", "role"),
    multiprocess_mode="livemax",
)
# Which model answered each request (iris_service/challenger.py): the canary share is
# challenger / all.
ROUTED_REQUESTS_TOTAL = Counter(
    "iris_routed_requests_total",
    "Prediction requests by the role of the model that answered them.",
    ("role",),
)
# Shadow mode: the challenger also predicts every flower the champion answered.
SHADOW_PREDICTIONS_TOTAL = Counter(
    "iris_shadow_predictions_total",
    "Flowers the challenger predicted in shadow, by agreement with the champion's class.",
    ("agreement",),
)
SHADOW_CONFUSION_TOTAL = Counter(
    "iris_shadow_confusion_total",
    "Flowers predicted in shadow, by the champion's class and the challenger's class.",
    ("champion_class", "challenger_class"),
)
SHADOW_SKIPPED_TOTAL = Counter(
    "iris_shadow_skipped_total",
    "Flowers answered in shadow mode that the challenger did not predict, by reason "
    "(saturated: too many in flight, dropped; no_challenger; failed).",
    ("reason",),
)


def _start_at_zero() -> None:
    """Create every label set of the routing, inference and shadow counters at 0, so that the
    dashboard's panels (and rate()) have series in every mode, before the first event."""
    for role in ("champion", "challenger"):
        ROUTED_REQUESTS_TOTAL.labels(role)
    for place in ("api_worker", "runner"):
        INFERENCES_TOTAL.labels(place)
    for agreement in ("agree", "disagree"):
        SHADOW_PREDICTIONS_TOTAL.labels(agreement)
    for reason in ("saturated", "no_challenger", "failed"):
        SHADOW_SKIPPED_TOTAL.labels(reason)
    for champion_class in CLASS_NAMES:
        for challenger_class in CLASS_NAMES:
            SHADOW_CONFUSION_TOTAL.labels(champion_class, challenger_class)


_start_at_zero()
# Ground-truth feedback (iris_service/records/feedback.py) and the live quality it gives
# (live_quality.py). Every API worker computes the gauges from the same shared
# feedback log, so the value most recently set is the current one ("livemostrecent").
# model_version is the BentoML tag of the model that made the labelled predictions.
FEEDBACK_TOTAL = Counter(
    "iris_feedback",
    "Labels sent to POST /feedback, by outcome (accepted, or the error code of the refusal).",
    ("outcome",),
)
FEEDBACK_DELAY_SECONDS = Histogram(
    "iris_feedback_delay_seconds",
    "Time from a prediction to the arrival of its true class, in seconds.",
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400),
)
LIVE_ACCURACY = Gauge(
    "iris_live_accuracy",
    "Share of the labelled predictions in the live window that named the true class.",
    ("model_version",),
    multiprocess_mode="livemostrecent",
)
LIVE_RECALL = Gauge(
    "iris_live_recall",
    "Per true class: share of its labelled flowers in the live window predicted as that class.",
    ("model_version", "class_name"),
    multiprocess_mode="livemostrecent",
)
LIVE_LABELLED = Gauge(
    "iris_live_labelled",
    "Labelled predictions in the live window (at most IRIS_FEEDBACK_WINDOW).",
    ("model_version",),
    multiprocess_mode="livemostrecent",
)
LIVE_LABEL_DELAY_SECONDS = Gauge(
    "iris_live_label_delay_seconds",
    "Median time from prediction to label over the live window, in seconds.",
    ("model_version",),
    multiprocess_mode="livemostrecent",
)
