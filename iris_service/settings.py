"""Names and tunables shared by training, the runner and the API service.

Every tunable reads an environment variable once, at import, so the hot path never does.
"""

from __future__ import annotations

import os

MODEL_NAME = "iris-classifier"
# The routes that predict: measured, guarded, logged (health, metrics and docs are not).
PREDICTION_PATHS: tuple[str, ...] = ("/predict", "/predict_batch")
FEATURE_NAMES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")


def _int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


# The model the service serves: any BentoML tag, e.g. "iris-classifier:latest".
MODEL_TAG = os.environ.get("IRIS_MODEL_TAG", f"{MODEL_NAME}:latest")
# Most flowers accepted in one POST /predict_batch.
MAX_BATCH_FLOWERS = _int_from_env("IRIS_MAX_BATCH_FLOWERS", 1000)
# Request bodies larger than this are refused with 413 before being read whole.
MAX_BODY_BYTES = _int_from_env("IRIS_MAX_BODY_BYTES", 256 * 1024)
# Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = _int_from_env("IRIS_RETRY_AFTER_SECONDS", 1)
# Drift monitoring (iris_service/drift.py): flowers in each API worker's sliding window, and
# the fewest flowers before a drift score is published.
DRIFT_WINDOW_FLOWERS = _int_from_env("IRIS_DRIFT_WINDOW_FLOWERS", 1000)
DRIFT_MIN_FLOWERS = _int_from_env("IRIS_DRIFT_MIN_FLOWERS", 200)
# Prediction requests one API worker handles at once; more are answered 429 at once.
MAX_CONCURRENT_REQUESTS = _int_from_env("IRIS_MAX_CONCURRENT_REQUESTS", 64)
# Runner heartbeat (iris_service/runner_health.py): each API worker pings the model runner
# every RUNNER_PING_PERIOD_SECONDS; a ping unanswered after RUNNER_PING_TIMEOUT_SECONDS makes
# /readyz answer 503; a runner silent for longer than RUNNER_LIVENESS_GRACE_SECONDS (hung,
# e.g. stopped or deadlocked) makes /livez answer 503 so that the orchestrator restarts it.
RUNNER_PING_PERIOD_SECONDS = 1
RUNNER_PING_TIMEOUT_SECONDS = _int_from_env("IRIS_RUNNER_PING_TIMEOUT_SECONDS", 2)
RUNNER_LIVENESS_GRACE_SECONDS = _int_from_env("IRIS_RUNNER_LIVENESS_GRACE_SECONDS", 30)
if RUNNER_LIVENESS_GRACE_SECONDS < RUNNER_PING_TIMEOUT_SECONDS:
    raise ValueError(
        "IRIS_RUNNER_LIVENESS_GRACE_SECONDS must be at least IRIS_RUNNER_PING_TIMEOUT_SECONDS"
    )
# When set, /predict and /predict_batch require `Authorization: Bearer <key>`.
API_KEY: str | None = os.environ.get("IRIS_API_KEY") or None
# JSON-lines log of every successful prediction; "off" disables it. Default: under
# BENTOML_HOME (always writable by the service, also inside the container).
PREDICTION_LOG_PATH: str | None = os.environ.get("IRIS_PREDICTION_LOG") or os.path.join(
    os.environ.get("BENTOML_HOME", os.path.expanduser("~/bentoml")),
    "prediction_log",
    "predictions.jsonl",
)
if PREDICTION_LOG_PATH.lower() == "off":
    PREDICTION_LOG_PATH = None
