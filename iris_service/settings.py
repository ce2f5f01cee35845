"""Names and tunables shared by training, the runner and the API service.

Every tunable reads an environment variable once, at import, so the hot path never does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MODEL_NAME = "iris-classifier"
# The routes that predict: measured, guarded, logged (health, metrics and docs are not).
PREDICTION_PATHS: tuple[str, ...] = ("/predict", "/predict_batch")
FEATURE_NAMES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")


def _parsed_env(name: str, convert: Callable[[str], T], kind: str) -> T | None:
    """The variable `name` converted, or None when it is unset or empty."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return convert(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from exc


def _int_from_env(name: str, default: int) -> int:
    value = _parsed_env(name, int, "an integer")
    if value is None:
        return default
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _float_from_env(name: str, default: float, low: float, high: float) -> float:
    value = _parsed_env(name, float, "a number")
    if value is None:
        return default
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _choice_from_env(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# The model the service serves: any BentoML tag, e.g. "iris-classifier:latest".
MODEL_TAG = os.environ.get("IRIS_MODEL_TAG", f"{MODEL_NAME}:latest")
# The runner follows the serving aliases file (iris_service/model_aliases.py): seconds
# between two looks at its modification time. Without the file it serves MODEL_TAG.
ALIAS_POLL_SECONDS = _float_from_env("IRIS_ALIAS_POLL_SECONDS", 2.0, 0.05, 30.0)
# What the challenger named by the aliases does (docs/serving-models.md):
#   none   - nothing (it is not loaded);
#   shadow - it also predicts every request off the answer's path; agreement is counted;
#   canary - it answers a share (CANARY_SHARE) of the requests, chosen at random.
CHALLENGER_MODES: tuple[str, ...] = ("none", "shadow", "canary")
CHALLENGER_MODE = _choice_from_env("IRIS_CHALLENGER_MODE", "none", CHALLENGER_MODES)
# Share of requests the challenger answers in canary mode (0..1), and the seed of that draw.
CANARY_SHARE = _float_from_env("IRIS_CANARY_SHARE", 0.1, 0.0, 1.0)
CANARY_SEED = _int_from_env("IRIS_CANARY_SEED", 1)
# Shadow predictions one API worker keeps in flight; more are dropped (and counted), never
# queued, so a slow challenger cannot grow memory or delay the answers.
SHADOW_MAX_IN_FLIGHT = _int_from_env("IRIS_SHADOW_MAX_IN_FLIGHT", 32)
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
