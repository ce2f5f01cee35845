"""Every knob of the service: one typed settings object, read from the environment once.

`settings` is made at import from the variables IRIS_<FIELD NAME> (IRIS_MAX_BATCH_FLOWERS
sets `max_batch_flowers`); an empty variable means the default. A wrong value, or limits that
contradict each other, stop the server at start with one line naming the variable
(SettingsError, a BentoMLException: `bentoml serve` prints it as one line). Every field
carries its default, bounds and a description (`Settings.model_fields`), so the table of
knobs can be generated from here. Code that uses a value per request copies it into a module
constant or an attribute at import or construction, so the hot path never reads the object.

The names of the problem (model, features, classes, routes) are in iris_service/names.py,
which reads no environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from bentoml.exceptions import BentoMLException
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from iris_service.names import FEATURE_NAMES, MODEL_NAME

ENV_PREFIX = "IRIS_"

# Constants, not knobs: one place each.
# Most rows one request may send to the runner (the runner's max_batch_size).
RUNNER_MAX_BATCH_SIZE = 1000
# Every API key must have at least this many characters, whether keys are required or not
# (checked at start by iris_service/http/auth.py).
API_KEY_MIN_LENGTH = 16
# BentoML answers 504 in its own shape once a request of the API service has run this long
# (`traffic.timeout`; configuration.yaml sets the same value, a unit test keeps them equal).
API_TIMEOUT_SECONDS = 15
# Each API worker pings the model runner this often (iris_service/inference/runner_health.py).
RUNNER_PING_PERIOD_SECONDS = 1
DEFAULT_GRPC_PORT = 8001  # Triton's and KServe's; the manifests' `grpc` port

ChallengerMode = Literal["none", "shadow", "canary"]
# What the challenger named by the aliases does (docs/serving-models.md):
#   none   - nothing (it is not loaded);
#   shadow - it also predicts every request off the answer's path; agreement is counted;
#   canary - it answers a share (canary_share) of the requests, chosen at random.
CHALLENGER_MODES: tuple[str, ...] = get_args(ChallengerMode)

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def bentoml_home(environ: Mapping[str, str] = os.environ) -> Path:
    """The BentoML home as BentoML works it out (BENTOML_HOME if set, else ~/bentoml), made
    absolute. The only place this default is worked out."""
    home = environ.get("BENTOML_HOME", os.path.expanduser("~/bentoml"))
    return Path(os.path.abspath(home))


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"must be an integer, got {value!r}") from None
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _challenger_mode(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        if value not in CHALLENGER_MODES:
            raise ValueError(f"must be one of {', '.join(CHALLENGER_MODES)}, got {value!r}")
    return value


def _grpc_port(value: Any) -> Any:
    """A port (1..65535), 0 for any free port, or off/false/no (None)."""
    if not isinstance(value, str):
        return value
    raw = value.strip().lower()
    if raw in {"off", "false", "no"}:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"must be 0..65535 or off, got {raw!r}")
    return port


def _comma_separated(value: Any) -> Any:
    return tuple(value.split(",")) if isinstance(value, str) else value


Int = Annotated[int, BeforeValidator(_integer)]
Number = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_boolean)]


def _default_record_store_url() -> str:
    return "sqlite:///" + str(bentoml_home() / "records" / "records.db")


def largest_batch_body_bytes(flowers: int) -> int:
    """Size of a POST /predict_batch body of `flowers` realistic flowers, as json.dumps
    writes it (the spacing most clients send): a realistic measurement as clients write it
    has two decimals and two digits before the point."""
    flower = dict.fromkeys(FEATURE_NAMES, 10.25)
    return len(json.dumps({"flowers": [flower] * flowers}).encode())


class SettingsError(BentoMLException, ValueError):
    """A wrong setting, or settings that contradict each other: one clear line for operators."""


class Settings(BaseSettings):
    """The service's knobs; each field is read from IRIS_<FIELD NAME IN CAPITALS>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid")

    # Models (iris_service/inference/model_follower.py, docs/serving-models.md).
    model_tag: str = Field(
        f"{MODEL_NAME}:latest",
        description="The model served when no serving aliases file names one: any BentoML tag.",
    )
    challenger_tag: str | None = Field(
        None,
        description="The challenger served when no aliases file names one (an image pins "
        "both versions it packs: tools/containers.py); unset: none.",
    )
    alias_poll_seconds: Number = Field(
        2.0,
        ge=0.05,
        le=30.0,
        description="Seconds between two looks at the serving aliases file's modification time.",
    )
    challenger_mode: Annotated[ChallengerMode, BeforeValidator(_challenger_mode)] = Field(
        "none",
        description="What the challenger does: none, shadow (also predicts every request off "
        "the answer's path), canary (answers a share of the requests).",
    )
    canary_share: Number = Field(
        0.1, ge=0.0, le=1.0, description="Share of requests the challenger answers in canary mode."
    )
    canary_seed: Int = Field(1, gt=0, description="Seed of the canary draw.")
    shadow_max_rows: Int = Field(
        4096,
        gt=0,
        description="Flowers waiting for the challenger's shadow prediction in one API worker; "
        "more are dropped (and counted), never queued.",
    )
    # Where an answer is computed (iris_service/inference/core.py).
    runner_min_rows: Annotated[int | None, BeforeValidator(_integer)] = Field(
        None,
        description="Requests with at least this many rows are computed by the runner; unset: "
        "worked out per model from its cost per row and runner_hop_ms.",
    )
    runner_hop_ms: Number = Field(
        2.0,
        ge=0.0,
        le=1000.0,
        description="What one call to the runner costs the API worker, in milliseconds.",
    )
    runner_call_timeout_seconds: Number = Field(
        5.0,
        ge=0.1,
        le=12.0,
        description="A runner call not answered in this time is computed in the API worker.",
    )
    runner_connection_max_requests: Int = Field(
        200,
        gt=0,
        description="Requests after which a connection to the runner ends, so that runner "
        "replicas balanced by connection all get load.",
    )
    runner_connection_max_age_seconds: Number = Field(
        5.0, ge=0.1, le=3600.0, description="Seconds after which a connection to the runner ends."
    )
    # Requests (iris_service/http/).
    max_batch_flowers: Int = Field(
        1000,
        gt=0,
        description="Most flowers accepted in one POST /predict_batch (at most "
        "RUNNER_MAX_BATCH_SIZE).",
    )
    max_body_bytes: Int = Field(
        256 * 1024,
        gt=0,
        description="Request bodies larger than this are refused with 413 before being read.",
    )
    retry_after_seconds: Int = Field(
        1, gt=0, description="Seconds a client should wait before retrying a 503."
    )
    max_concurrent_requests: Int = Field(
        64,
        gt=0,
        description="Prediction requests one API worker handles at once; more are answered 429.",
    )
    # Drift monitoring (iris_service/monitoring/drift.py).
    drift_window_flowers: Int = Field(
        1000, gt=0, description="Flowers in each API worker's sliding drift window."
    )
    drift_min_flowers: Int = Field(
        200, gt=0, description="The fewest flowers before a drift score is published."
    )
    # Explanations (docs/explanations.md).
    max_explain_flowers: Int = Field(
        100, gt=0, description="Most flowers one request may ask to explain."
    )
    explain_admission_cost: Int = Field(
        4, gt=0, description="Places of the admission limit one POST /explain takes."
    )
    # API keys (iris_service/http/auth.py).
    api_key: str = Field("", repr=False, description="An API key (added to api_keys); empty: none.")
    api_keys: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)] = Field(
        (),
        repr=False,
        description="Comma-separated API keys; with IRIS_API_KEY, deduplicated, all valid (a "
        "rotation). With at least one, every route but health, metrics (and open docs) "
        "requires `Authorization: Bearer <key>`.",
    )
    api_key_open_docs: Bool = Field(False, description="true: the docs are served without a key.")
    api_keys_required: Bool = Field(
        False, description="true: the service refuses to start without a key (the image's)."
    )
    expose_measurement_headers: Bool = Field(
        False,
        description="true: answers carry X-Cpu-Time-Ms and X-Memory-Delta-Mb (always in "
        "metrics and the request log).",
    )
    # Runner heartbeat (iris_service/inference/runner_health.py).
    runner_ping_timeout_seconds: Int = Field(
        2,
        gt=0,
        description="While a ping is unanswered this long, no work is sent to the runner.",
    )
    runner_liveness_grace_seconds: Int = Field(
        30,
        gt=0,
        description="A runner silent for longer makes /livez answer 503 (at least "
        "runner_ping_timeout_seconds).",
    )
    # The prediction store (iris_service/records/store.py, docs/feedback.md).
    record_store_url: str | None = Field(
        default_factory=_default_record_store_url,
        description="SQLite file under BENTOML_HOME by default; postgresql://user:password@"
        "host/db for one database shared by every replica; off: no records (no /feedback).",
    )
    record_store_shared_required: Bool = Field(
        False,
        description="true (the Kubernetes manifests): a store only this pod sees (SQLite) is "
        "refused at start.",
    )
    record_retention_days: Number = Field(
        30.0, ge=0.001, le=36_500.0, description="Records older than this are deleted."
    )
    record_max_predictions: Int = Field(
        1_000_000, gt=0, description="Most prediction rows kept (oldest deleted first)."
    )
    record_max_labels: Int = Field(
        1_000_000, gt=0, description="Most label rows kept (oldest deleted first)."
    )
    record_inputs: Bool = Field(
        True, description="false: request bodies are left out of the records."
    )
    # Live quality (iris_service/monitoring/live_quality.py) and feedback.
    feedback_window: Int = Field(
        200,
        gt=0,
        description="Labelled predictions of each model version that make its live quality.",
    )
    max_feedback_labels: Int = Field(
        1000, gt=0, description="Labels accepted in one POST /feedback."
    )
    # The Open Inference Protocol V2 over gRPC (iris_service/protocols/grpc_server.py).
    grpc_port: Annotated[int | None, BeforeValidator(_grpc_port)] = Field(
        DEFAULT_GRPC_PORT,
        ge=0,
        le=65535,
        description="Port of the V2 gRPC server of the pod's first API worker; 0: any free "
        "port (written to grpc_port_file); off: no gRPC server.",
    )

    @field_validator("record_store_url")
    @classmethod
    def _off_is_none(cls, value: str | None) -> str | None:
        return None if value is not None and value.strip().lower() == "off" else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        keys = (self.api_key, *self.api_keys)
        self.api_keys = tuple(dict.fromkeys(key.strip() for key in keys if key.strip()))
        if self.runner_liveness_grace_seconds < self.runner_ping_timeout_seconds:
            raise ValueError(
                "IRIS_RUNNER_LIVENESS_GRACE_SECONDS must be at least "
                "IRIS_RUNNER_PING_TIMEOUT_SECONDS"
            )
        if self.record_store_shared_required and (self.record_store_url or "sqlite").startswith(
            "sqlite"
        ):
            raise ValueError(
                "IRIS_RECORD_STORE_SHARED_REQUIRED=true needs IRIS_RECORD_STORE_URL="
                "postgresql://...: replicas must share one prediction store"
            )
        # The batch limits must fit together: a batch larger than the runner's max batch
        # fails inside the runner, a body limit too small refuses valid batches with 413.
        if self.max_batch_flowers > RUNNER_MAX_BATCH_SIZE:
            raise ValueError(
                f"IRIS_MAX_BATCH_FLOWERS={self.max_batch_flowers} is larger than the runner's "
                f"max_batch_size={RUNNER_MAX_BATCH_SIZE} (RUNNER_MAX_BATCH_SIZE in "
                f"iris_service/settings.py): lower IRIS_MAX_BATCH_FLOWERS"
            )
        needed = largest_batch_body_bytes(self.max_batch_flowers)
        if self.max_body_bytes < needed:
            raise ValueError(
                f"IRIS_MAX_BODY_BYTES={self.max_body_bytes} is too small for a batch of "
                f"IRIS_MAX_BATCH_FLOWERS={self.max_batch_flowers} flowers (about {needed} "
                f"bytes): raise IRIS_MAX_BODY_BYTES to at least {needed} or lower "
                f"IRIS_MAX_BATCH_FLOWERS"
            )
        return self

    @property
    def runner_hop_seconds(self) -> float:
        return self.runner_hop_ms / 1000

    @property
    def grpc_port_file(self) -> str:
        """Where the gRPC server writes the port it took (IRIS_GRPC_PORT=0)."""
        return str(bentoml_home() / "grpc_port")


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field.upper()


def environment_names() -> dict[str, str]:
    """Every variable the settings read, with its field's description."""
    return {
        env_name(name): field.description or "" for name, field in Settings.model_fields.items()
    }


def _bounds(field: str) -> tuple[Any, Any]:
    low = high = None
    for rule in Settings.model_fields[field].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def _said(error: Any) -> str:
    """One pydantic error as operators read it: the variable, what it must be, what it got."""
    if not error["loc"]:
        return str(error.get("ctx", {}).get("error", error["msg"]))
    field = str(error["loc"][0])
    name = env_name(field)
    got = error["input"]
    if error["type"] == "value_error":
        return f"{name} {error['ctx']['error']}"
    if error["type"] == "greater_than" and error["ctx"]["gt"] == 0:
        return f"{name} must be positive, got {got}"
    if (
        error["type"] in {"greater_than_equal", "less_than_equal"}
        and field in Settings.model_fields
    ):
        low, high = _bounds(field)
        return f"{name} must be between {low} and {high}, got {got}"
    return f"{name}: {error['msg']}, got {got!r}"


def load_settings(**values: Any) -> Settings:
    """The settings from the environment (and `values`, which win), or SettingsError naming
    every wrong variable."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError("; ".join(_said(e) for e in exc.errors())) from None


settings = load_settings()
