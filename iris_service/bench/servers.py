"""Start and stop each server under test on 127.0.0.1, and measure its cold start.

- bentoml: the shipped service exactly as users get it (`bentoml serve service:IrisClassifier`
  with BENTOML_CONFIG=configuration.yaml; for N != 1 workers, a copy of that file with the
  API service's `workers` set to N);
- fastapi: `uvicorn iris_service.bench.baseline_app:app --workers N` (uvicorn defaults);
- mlflow: `mlflow models serve -m runs:/<run>/model --env-manager local --workers N`.

Every server runs in its own process group so that stopping it stops all of its workers.
Cold start = process start until the readiness endpoint first answers 200.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .models import PROJECT_ROOT, BenchModel, ProjectState

HOST = "127.0.0.1"
SERVERS = ("bentoml", "fastapi", "mlflow")
API_SERVICE = "IrisClassifier"
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Endpoints:
    ready: str
    predict: str
    batch: str


ENDPOINTS: dict[str, Endpoints] = {
    "bentoml": Endpoints("/readyz", "/predict", "/predict_batch"),
    "fastapi": Endpoints("/health", "/predict", "/predict_batch"),
    "mlflow": Endpoints("/ping", "/invocations", "/invocations"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class RunningServer:
    server: str
    model: BenchModel
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    cold_start_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def endpoints(self) -> Endpoints:
        return ENDPOINTS[self.server]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from process start until the readiness endpoint answered 200."""
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server} exited early:\n{self.log_tail()}")
            if http_status(self.port, "GET", self.endpoints.ready) == 200:
                self.cold_start_s = time.monotonic() - self.started_at
                return self.cold_start_s
            time.sleep(0.05)
        raise TimeoutError(f"{self.server} not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


def http_status(port: int, method: str, path: str, body: str | None = None) -> int | None:
    """Status of one request, or None when the server does not answer (yet)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def bentoml_config(state: ProjectState, workers: int) -> Path:
    """configuration.yaml as shipped, or a copy with the API service's workers set."""
    shipped = PROJECT_ROOT / "configuration.yaml"
    if workers == 1:
        return shipped
    config = yaml.safe_load(shipped.read_text()) or {}
    services = config.setdefault("services", {})
    services.setdefault(API_SERVICE, {})["workers"] = workers
    path = state.root / f"configuration-{workers}-workers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command_and_env(
    server: str, model: BenchModel, workers: int, port: int, state: ProjectState
) -> tuple[list[str], dict[str, str]]:
    venv_bin = Path(sys.executable).parent
    if server == "bentoml":
        command = [str(venv_bin / "bentoml"), "serve", "service:IrisClassifier"]
        command += ["--host", HOST, "--port", str(port)]
        env = state.env(
            BENTOML_CONFIG=str(bentoml_config(state, workers)), IRIS_MODEL_TAG=model.tag
        )
        return command, env
    if server == "fastapi":
        command = [str(venv_bin / "uvicorn"), "iris_service.bench.baseline_app:app"]
        command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
        return command, state.env(IRIS_BASELINE_MODEL_DIR=str(model.mlflow_model_dir))
    if server == "mlflow":
        command = [str(venv_bin / "mlflow"), "models", "serve", "-m", model.mlflow_uri]
        command += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
        command += ["--workers", str(workers)]
        return command, state.env()
    raise ValueError(f"unknown server {server!r}; choose from {', '.join(SERVERS)}")


def start(
    server: str, model: BenchModel, workers: int, state: ProjectState, log_dir: Path
) -> RunningServer:
    """Start the server in its own process group and wait until it is ready."""
    port = free_port()
    command, env = command_and_env(server, model, workers, port, state)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{server}-{model.short}-{workers}w-{port}.log"
    with log_path.open("wb") as log_file:
        started_at = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningServer(server, model, workers, port, process, log_path, started_at)
    try:
        running.wait_ready()
    except BaseException:
        running.stop()
        raise
    return running
