"""Names and tunables shared by training, the runner and the API service.

Every tunable reads an environment variable once, at import, so the hot path never does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from fnmatch import translate
from typing import TypeVar

# Re-exported until every importer reads them from iris_service.names.
from iris_service.names import CLASS_NAMES as CLASS_NAMES
from iris_service.names import FEATURE_NAMES as FEATURE_NAMES
from iris_service.names import MODEL_NAME as MODEL_NAME

T = TypeVar("T")

# The routes that predict: measured, guarded, logged (health, metrics and docs are not).
# A `*` stands for a path parameter: the Open Inference Protocol's
# /v2/models/<name>[/versions/<version>]/infer. See RoutePatterns.
PREDICTION_PATHS: tuple[str, ...] = (
    "/predict",
    "/predict_batch",
    "/explain",
    "/invocations",
    "/v2/models/*/infer",
)


class RoutePatterns:
    """A set of routes: exact paths, and patterns where `*` matches any characters.

    `path in routes` is what the middlewares ask (a set lookup first, one regular expression
    only for paths that are not exact); `label(path)` names the route in metrics, so that a
    path parameter (a model name a client made up) never becomes a new metric series.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self.exact = frozenset(p for p in patterns if "*" not in p)
        self.wildcards = tuple(p for p in patterns if "*" in p)
        self._regexes = tuple(re.compile(translate(p)) for p in self.wildcards)

    def label(self, path: str) -> str | None:
        """The route `path` belongs to (itself or its pattern), or None."""
        if path in self.exact:
            return path
        for pattern, regex in zip(self.wildcards, self._regexes, strict=True):
            if regex.match(path):
                return pattern
        return None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.label(path) is not None


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


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _bool_from_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _api_keys() -> tuple[str, ...]:
    """IRIS_API_KEY and the comma-separated IRIS_API_KEYS, together: during a rotation the old
    and the new key are both valid, so clients can switch without downtime."""
    keys = [os.environ.get("IRIS_API_KEY", ""), *os.environ.get("IRIS_API_KEYS", "").split(",")]
    return tuple(dict.fromkeys(key.strip() for key in keys if key.strip()))


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
# The challenger served when no aliases file names one (an image pins both versions it packs:
# tools/containers.py); empty: none.
CHALLENGER_TAG: str | None = os.environ.get("IRIS_CHALLENGER_TAG") or None
# Every process that holds a model follows the serving aliases file
# (iris_service/inference/model_aliases.py): seconds between two looks at its modification time.
# Without the file it serves MODEL_TAG.
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
# Shadow mode: flowers waiting for the challenger's batched shadow prediction in one API
# worker (iris_service/inference/core.py); more are dropped (and counted), never queued, so a
# slow challenger cannot grow memory or delay the answers.
SHADOW_MAX_ROWS = _int_from_env("IRIS_SHADOW_MAX_ROWS", 4096)
# Where an answer is computed (iris_service/inference/core.py): in the API worker, unless the
# request has at least RUNNER_MIN_ROWS rows; then the runner computes it, batched with other
# large requests. Unset: the core works it out per model from the model's measured cost per
# row and RUNNER_HOP_SECONDS, what one call to the runner costs the API worker
# (docs/performance.md measures it).
RUNNER_MIN_ROWS: int | None = _parsed_env("IRIS_RUNNER_MIN_ROWS", int, "an integer")
RUNNER_HOP_SECONDS = _float_from_env("IRIS_RUNNER_HOP_MS", 2.0, 0.0, 1000.0) / 1000
# A runner call not answered in this time is given up and computed in the API worker.
RUNNER_CALL_TIMEOUT_SECONDS = _float_from_env("IRIS_RUNNER_CALL_TIMEOUT_SECONDS", 5.0, 0.1, 12.0)
# Each connection to the runner ends (Connection: close from the runner, between requests)
# after this many requests or seconds, so that runner replicas a Kubernetes Service balances
# by connection all get load (iris_service/inference/connection_lifetime.py).
RUNNER_CONNECTION_MAX_REQUESTS = _int_from_env("IRIS_RUNNER_CONNECTION_MAX_REQUESTS", 200)
RUNNER_CONNECTION_MAX_AGE_SECONDS = _float_from_env(
    "IRIS_RUNNER_CONNECTION_MAX_AGE_SECONDS", 5.0, 0.1, 3600.0
)
# Most rows one request may send to the runner.
RUNNER_MAX_BATCH_SIZE = 1000
# Most flowers accepted in one POST /predict_batch (at most RUNNER_MAX_BATCH_SIZE).
MAX_BATCH_FLOWERS = _int_from_env("IRIS_MAX_BATCH_FLOWERS", 1000)
# Request bodies larger than this are refused with 413 before being read whole.
MAX_BODY_BYTES = _int_from_env("IRIS_MAX_BODY_BYTES", 256 * 1024)
# Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = _int_from_env("IRIS_RETRY_AFTER_SECONDS", 1)
# Drift monitoring (iris_service/monitoring/drift.py): flowers in each API worker's sliding
# window, and the fewest flowers before a drift score is published.
DRIFT_WINDOW_FLOWERS = _int_from_env("IRIS_DRIFT_WINDOW_FLOWERS", 1000)
DRIFT_MIN_FLOWERS = _int_from_env("IRIS_DRIFT_MIN_FLOWERS", 200)
# Prediction requests one API worker handles at once; more are answered 429 at once.
MAX_CONCURRENT_REQUESTS = _int_from_env("IRIS_MAX_CONCURRENT_REQUESTS", 64)
# Explanations (docs/explanations.md): the most flowers one request may ask to explain (V2
# `parameters.explain`), and the places of the admission limit one POST /explain takes (it
# costs 16 coalitions times the background, 800 model rows, against one for /predict).
MAX_EXPLAIN_FLOWERS = _int_from_env("IRIS_MAX_EXPLAIN_FLOWERS", 100)
EXPLAIN_ADMISSION_COST = _int_from_env("IRIS_EXPLAIN_ADMISSION_COST", 4)
# With at least one key, every route requires `Authorization: Bearer <key>` except health,
# metrics and (with IRIS_API_KEY_OPEN_DOCS=true) the docs: iris_service/http/auth.py.
API_KEYS: tuple[str, ...] = _api_keys()
API_KEY_OPEN_DOCS = _bool_from_env("IRIS_API_KEY_OPEN_DOCS", False)
# true: the service refuses to start without a key (the image sets it; `make container-run`
# turns it off explicitly). Every key must have at least API_KEY_MIN_LENGTH characters,
# whether required or not (checked at start by iris_service/http/auth.py).
API_KEYS_REQUIRED = _bool_from_env("IRIS_API_KEYS_REQUIRED", False)
API_KEY_MIN_LENGTH = 16
# X-Cpu-Time-Ms and X-Memory-Delta-Mb describe the worker process: in metrics and the request
# log always, in answers only when this is true (iris_service/http/middleware.py).
EXPOSE_MEASUREMENT_HEADERS = _bool_from_env("IRIS_EXPOSE_MEASUREMENT_HEADERS", False)
# BentoML answers 504 in its own shape once a request of the API service has run this long
# (`traffic.timeout`; configuration.yaml sets the same value, a unit test keeps them equal).
API_TIMEOUT_SECONDS = 15
# Runner heartbeat (iris_service/inference/runner_health.py): each API worker pings the model runner
# every RUNNER_PING_PERIOD_SECONDS; while a ping is unanswered after
# RUNNER_PING_TIMEOUT_SECONDS no work is sent to the runner (the API worker computes it); a
# runner silent for longer than RUNNER_LIVENESS_GRACE_SECONDS (hung, e.g. stopped or
# deadlocked) makes /livez answer 503 so that the orchestrator restarts it.
RUNNER_PING_PERIOD_SECONDS = 1
RUNNER_PING_TIMEOUT_SECONDS = _int_from_env("IRIS_RUNNER_PING_TIMEOUT_SECONDS", 2)
RUNNER_LIVENESS_GRACE_SECONDS = _int_from_env("IRIS_RUNNER_LIVENESS_GRACE_SECONDS", 30)
if RUNNER_LIVENESS_GRACE_SECONDS < RUNNER_PING_TIMEOUT_SECONDS:
    raise ValueError(
        "IRIS_RUNNER_LIVENESS_GRACE_SECONDS must be at least IRIS_RUNNER_PING_TIMEOUT_SECONDS"
    )
# The prediction store (iris_service/records/store.py, docs/feedback.md): every successful
# prediction and every label. Default: an SQLite file under BENTOML_HOME (always writable by
# the service, also inside the container), shared by the pod's API workers; a
# postgresql://user:password@host/db URL for one database shared by every replica; "off"
# turns records, and so POST /feedback, off. With SHARED_REQUIRED=true (set by the
# Kubernetes manifests, which run several replicas) a store only this pod can see (SQLite) is
# refused at start: labels would reach the wrong replica.
_RECORD_STORE = os.environ.get("IRIS_RECORD_STORE_URL") or "sqlite:///" + os.path.join(
    os.path.abspath(os.environ.get("BENTOML_HOME", os.path.expanduser("~/bentoml"))),
    "records",
    "records.db",
)
RECORD_STORE_URL: str | None = None if _RECORD_STORE.strip().lower() == "off" else _RECORD_STORE
RECORD_STORE_SHARED_REQUIRED = _bool_from_env("IRIS_RECORD_STORE_SHARED_REQUIRED", False)
if RECORD_STORE_SHARED_REQUIRED and (RECORD_STORE_URL or "sqlite").startswith("sqlite"):
    raise ValueError(
        "IRIS_RECORD_STORE_SHARED_REQUIRED=true needs IRIS_RECORD_STORE_URL=postgresql://...: "
        "replicas must share one prediction store"
    )
# Retention, enforced by the store (oldest first): rows older than RETENTION_DAYS, and rows
# beyond MAX_PREDICTIONS predictions or MAX_LABELS labels. INPUTS=false leaves request
# bodies out of the records (labels of /predict_batch flowers then carry no features).
RECORD_RETENTION_DAYS = _float_from_env("IRIS_RECORD_RETENTION_DAYS", 30.0, 0.001, 36_500.0)
RECORD_MAX_PREDICTIONS = _int_from_env("IRIS_RECORD_MAX_PREDICTIONS", 1_000_000)
RECORD_MAX_LABELS = _int_from_env("IRIS_RECORD_MAX_LABELS", 1_000_000)
RECORD_INPUTS = _bool_from_env("IRIS_RECORD_INPUTS", True)
# Live quality (iris_service/monitoring/live_quality.py): the last FEEDBACK_WINDOW labelled
# predictions of each model version make its live accuracy, recall per class and label delay.
FEEDBACK_WINDOW = _int_from_env("IRIS_FEEDBACK_WINDOW", 200)
# Labels accepted in one POST /feedback ({"feedback": [...]}).
MAX_FEEDBACK_LABELS = _int_from_env("IRIS_MAX_FEEDBACK_LABELS", 1000)


DEFAULT_GRPC_PORT = 8001  # Triton's and KServe's; the manifests' `grpc` port


def _grpc_port() -> int | None:
    """IRIS_GRPC_PORT: a port (1..65535), 0 for any free port, or off (None)."""
    raw = (os.environ.get("IRIS_GRPC_PORT") or str(DEFAULT_GRPC_PORT)).strip().lower()
    if raw in {"off", "false", "no"}:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError(f"IRIS_GRPC_PORT must be 0..65535 or off, got {raw!r}")
    return value


# The Open Inference Protocol V2 over gRPC (iris_service/protocols/grpc_server.py), served by
# the first API worker of the pod on this port beside HTTP (docs/protocols.md); 0 takes a free
# port, logged and written to GRPC_PORT_FILE; off: no gRPC server.
GRPC_PORT: int | None = _grpc_port()
GRPC_PORT_FILE = os.path.join(
    os.path.abspath(os.environ.get("BENTOML_HOME", os.path.expanduser("~/bentoml"))), "grpc_port"
)
