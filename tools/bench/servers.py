"""Start and stop each server under test on 127.0.0.1, and measure its cold start.

- bentoml: the shipped service exactly as users get it (`bentoml serve service:IrisClassifier`
  with BENTOML_CONFIG=configuration.yaml, whose API workers are `cpu_count`; for another API
  worker count, a copy of that file with the API service's `workers` set to it);
- fastapi: plain FastAPI as users write it, `uvicorn tools.bench.baseline_app:app`, the
  scikit-learn pickle, 1 worker (uvicorn defaults);
- mlflow: `mlflow models serve -m runs:/<run>/model --env-manager local --workers N`;
- bentoml-v2: the shipped service again, loaded on its V2 route (Open Inference Protocol JSON);
  the service's batches in every format (its JSON, V2 JSON and binary tensors, MLflow's
  dataframe_split) are measured in the bentoml run;
- bentoml-shadow, bentoml-canary: the shipped service with its challenger mode on
  (IRIS_CHALLENGER_MODE), the challenger being the champion's own version, so that the run
  measures what the mode itself costs, not a slower model;
- mlserver: MLServer 1.7.1 in its default configuration, in its own venv (tools/bench/mlserver.py),
  serving the same MLflow model's pickle over V2; mlserver-batch: the same with its adaptive
  batching on. bentoml-v2, mlserver and mlserver-batch get identical V2 bodies;
- minimal-bentoml: the minimal BentoML service (tools/bench/minimal_bentoml.py), the same
  model.onnx, `bentoml serve tools.bench.minimal_bentoml:MinimalIris`, with our runtime
  configuration's access log, metrics and tracing settings and our API worker count;
- fastapi-onnx: FastAPI + ONNX Runtime (tools/bench/onnx_app.py), the same model.onnx, with
  our API worker count.

Our service and the peers that run the compiled model get the same API worker count
(`api_workers`, the shipped configuration's value resolved as BentoML resolves it); plain
FastAPI, mlflow and MLServer run with 1 worker, as users start them.

Every server runs in its own process group so that stopping it stops all of its workers.
Cold start = process start until the prediction route first answers 200 (one valid prediction,
polled once the readiness route answers 200), which is also the check that the server answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iris_pipeline.paths import CONFIGURATION, VENV_BIN
from iris_service.names import MODEL_NAME
from tools.local_server import (
    HOST,
    READY_TIMEOUT_S,
    LocalServer,
    ProjectState,
    bentoml_serve_command,
    free_port,
    http_status,
    start_server,
)

from . import mlserver
from .models import BenchModel
from .onnx_model import ONNX_PATH_ENV
from .payloads import single_body

SERVERS = (
    "bentoml",
    "bentoml-v2",
    "bentoml-shadow",
    "bentoml-canary",
    "fastapi",
    "mlserver",
    "minimal-bentoml",
    "fastapi-onnx",
    "mlflow",
    "mlserver-batch",
)
# What `make bench` measures unless told otherwise: the servers issue 21's targets name
# (mlflow and MLServer with adaptive batching are measured on request only).
DEFAULT_SERVERS = SERVERS[:8]
# Our service in every mode: the runs whose errors count against "zero errors".
OUR_SERVERS = ("bentoml", "bentoml-v2", "bentoml-shadow", "bentoml-canary")
# Servers run with our API worker count; every other one runs with 1 worker.
WITH_OUR_WORKERS = (*OUR_SERVERS, "minimal-bentoml", "fastapi-onnx")
# Measured with the primary model only (the shipped one when it is measured).
PRIMARY_MODEL_ONLY = ("bentoml-v2", "bentoml-shadow", "bentoml-canary")
# Measured at the saturating load only (its target is a throughput ratio), no sweep.
NOT_SWEPT = ("bentoml-v2",)
# The shipped service with a challenger mode: measured at saturation only (no batches, no
# sweep), against "bentoml" (mode none) in the report.
MODE_SERVERS: dict[str, str] = {"bentoml-shadow": "shadow", "bentoml-canary": "canary"}
CANARY_SHARE = 0.2
API_SERVICE = "IrisClassifier"
MINIMAL_SERVICE = "MinimalIris"
MINIMAL_TARGET = f"tools.bench.minimal_bentoml:{MINIMAL_SERVICE}"
# The runtime settings under `services:` that the minimal BentoML service takes from ours.
SHARED_RUNTIME_KEYS = ("tracing", "logging", "metrics")
FIRST_ANSWER_POLL_S = 0.05
# The V2 (Open Inference Protocol) inference route, the same on our service and on MLServer.
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"


# Where each batch format (payloads.BATCH_FORMATS) is posted, on every server that takes it.
BATCH_PATHS = {
    "service": "/predict_batch",
    "v2": V2_INFER,
    "v2-binary": V2_INFER,
    "dataframe_split": "/invocations",
}
# Every batch format of the shipped service, measured in its "bentoml" run (one server start).
SERVICE_BATCH_FORMATS = ("service", "v2", "v2-binary", "dataframe_split")


@dataclass(frozen=True)
class Endpoints:
    ready: str
    predict: str
    # Batch formats measured on this server (payloads.BATCH_FORMATS, posted to BATCH_PATHS).
    batch_formats: tuple[str, ...]
    # Request body format of `predict` (payloads.py): "service", "dataframe_split" or "v2".
    protocol: str = "service"


ENDPOINTS: dict[str, Endpoints] = {
    "bentoml": Endpoints("/readyz", "/predict", SERVICE_BATCH_FORMATS),
    # Its batches are the bentoml run's "v2" and "v2-binary" (the same service).
    "bentoml-v2": Endpoints("/readyz", V2_INFER, (), "v2"),
    "bentoml-shadow": Endpoints("/readyz", "/predict", ()),
    "bentoml-canary": Endpoints("/readyz", "/predict", ()),
    # /predict_batch, and a V2 JSON route parsing the tensor into numpy (baseline_app.py).
    "fastapi": Endpoints("/health", "/predict", ("service", "v2")),
    "mlflow": Endpoints("/ping", "/invocations", ("dataframe_split",), "dataframe_split"),
    # MLServer's REST server does not read the binary extension (422): JSON tensors only.
    "mlserver": Endpoints("/v2/health/ready", V2_INFER, ("v2",), "v2"),
    "mlserver-batch": Endpoints("/v2/health/ready", V2_INFER, ("v2",), "v2"),
    "minimal-bentoml": Endpoints("/readyz", "/predict", ()),
    "fastapi-onnx": Endpoints("/health", "/predict", ()),
}


@dataclass(frozen=True)
class ServerSettings:
    """What a server needs beyond its model: where MLServer lives and how it batches."""

    mlserver_venv: Path = mlserver.DEFAULT_VENV
    mlserver_batching: mlserver.Batching = mlserver.ADAPTIVE_BATCHING


@dataclass
class RunningServer:
    """One server under test: which one, with which model and workers, and its process."""

    server: str
    model: BenchModel
    workers: int
    local: LocalServer

    @property
    def port(self) -> int:
        return self.local.port

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def cold_start_s(self) -> float | None:
        return self.local.cold_start_s

    @property
    def endpoints(self) -> Endpoints:
        return ENDPOINTS[self.server]

    def log_tail(self, chars: int = 3000) -> str:
        return self.local.log_tail(chars)

    def stop(self) -> None:
        self.local.stop(timeout=20)


def resolve_workers(value: Any) -> int:
    """A `workers` setting as BentoML resolves it: "cpu_count" is the CPUs the process may use
    (the cgroup quota in a container, the cores otherwise), a number is itself."""
    if value == "cpu_count":
        from bentoml._internal.resource import system_resources

        return int(system_resources()["cpu"]) or 1
    return int(value or 1)


def shipped_api_workers(configuration: Path = CONFIGURATION) -> int:
    """The number of API worker processes the shipped configuration gives on this machine."""
    config = yaml.safe_load(configuration.read_text()) or {}
    return resolve_workers((config.get("services") or {}).get(API_SERVICE, {}).get("workers"))


def bentoml_config(state: ProjectState, workers: int) -> Path:
    """configuration.yaml as shipped when it gives `workers` API workers, else a copy with the
    API service's workers set."""
    shipped = CONFIGURATION
    if workers == shipped_api_workers(shipped):
        return shipped
    config = yaml.safe_load(shipped.read_text()) or {}
    services = config.setdefault("services", {})
    services.setdefault(API_SERVICE, {})["workers"] = workers
    path = state.root / f"configuration-{workers}-workers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def minimal_config(state: ProjectState, workers: int) -> Path:
    """The minimal BentoML service's runtime configuration: our access log, metrics and
    tracing settings (tracing off for /predict, as ours), and `workers` workers."""
    shipped = (yaml.safe_load(CONFIGURATION.read_text()) or {}).get("services") or {}
    services: dict[str, Any] = {key: shipped[key] for key in SHARED_RUNTIME_KEYS if key in shipped}
    services[MINIMAL_SERVICE] = {"workers": workers}
    path = state.root / f"configuration-minimal-{workers}-workers.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"services": services}, sort_keys=False))
    return path


def command_and_env(
    server: str,
    model: BenchModel,
    workers: int,
    port: int,
    state: ProjectState,
    settings: ServerSettings,
) -> tuple[list[str], dict[str, str]]:
    if server in ("bentoml", "bentoml-v2", *MODE_SERVERS):
        command = bentoml_serve_command(port)
        env = state.env(
            BENTOML_CONFIG=str(bentoml_config(state, workers)), IRIS_MODEL_TAG=model.tag
        )
        if server in MODE_SERVERS:
            env.update(
                IRIS_CHALLENGER_MODE=MODE_SERVERS[server],
                IRIS_CHALLENGER_TAG=model.tag,
                IRIS_CANARY_SHARE=str(CANARY_SHARE),
            )
        return command, env
    if server == "minimal-bentoml":
        command = [str(VENV_BIN / "bentoml"), "serve", MINIMAL_TARGET, "--host", HOST]
        command += ["--port", str(port)]
        env = state.env(BENTOML_CONFIG=str(minimal_config(state, workers)))
        return command, env | {ONNX_PATH_ENV: str(model.onnx_path)}
    if server == "fastapi-onnx":
        command = [str(VENV_BIN / "uvicorn"), "tools.bench.onnx_app:app"]
        command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
        return command, state.env(**{ONNX_PATH_ENV: str(model.onnx_path)})
    if server == "fastapi":
        command = [str(VENV_BIN / "uvicorn"), "tools.bench.baseline_app:app"]
        command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
        return command, state.env(IRIS_BASELINE_MODEL_DIR=str(model.mlflow_model_dir))
    if server == "mlflow":
        command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model.mlflow_uri]
        command += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
        command += ["--workers", str(workers)]
        return command, state.env()
    if server in ("mlserver", "mlserver-batch"):
        if workers != 1:
            raise ValueError("MLServer is measured with its default single inference worker")
        executable = mlserver.ensure_venv(settings.mlserver_venv)
        batching = settings.mlserver_batching if server == "mlserver-batch" else mlserver.Batching()
        folder = state.root / "mlserver" / f"{server}-{model.short}-{port}"
        mlserver.write_config(folder, model.mlflow_model_dir, port, batching)
        # MLServer's own interpreter and console scripts first, not the project venv's.
        env = state.env(PATH=f"{executable.parent}:/usr/local/bin:/usr/bin:/bin")
        return mlserver.command(executable, folder), env
    raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")


def start(
    server: str,
    model: BenchModel,
    workers: int,
    state: ProjectState,
    log_dir: Path,
    settings: ServerSettings | None = None,
) -> RunningServer:
    """Start the server in its own process group and wait until it answers a prediction."""
    port = free_port()
    command, env = command_and_env(
        server, model, workers, port, state, settings or ServerSettings()
    )
    log_path = log_dir / f"{server}-{model.short}-{workers}w-{port}.log"
    endpoints = ENDPOINTS[server]
    local = start_server(command, env, port, log_path, ready_path=endpoints.ready, wait=False)
    try:
        # Ready first: a server may answer 4xx before its model is loaded (MLServer's 404).
        local.wait_ready()
        wait_first_answer(local, endpoints.predict, single_body(endpoints.protocol, 0))
    except BaseException:
        local.stop(timeout=20)
        raise
    return RunningServer(server, model, workers, local)


def wait_first_answer(
    local: LocalServer, path: str, body: str, timeout: float = READY_TIMEOUT_S
) -> float:
    """Seconds from process start until one valid prediction on `path` answered 200: the
    cold start (asked once the server is ready). Nothing listening or a 5xx/429 is waited
    for; another 4xx cannot become right (a missing route, a refused body) and fails at once,
    as do an exit and the timeout."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if local.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{local.log_tail()}")
        status = http_status(local.port, "POST", path, body)
        if status == 200:
            local.cold_start_s = time.monotonic() - local.started_at
            return local.cold_start_s
        if status is not None and 400 <= status < 500 and status != 429:
            raise RuntimeError(
                f"POST {path} answered {status} to a valid prediction:\n{local.log_tail()}"
            )
        time.sleep(FIRST_ANSWER_POLL_S)
    raise TimeoutError(
        f"no 200 on POST {path} after {timeout} s (last {status}):\n{local.log_tail()}"
    )
