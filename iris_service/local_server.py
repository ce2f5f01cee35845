"""Run the shipped service locally: an isolated project state and a real `bentoml serve`.

Used by the tests, the benchmark, the load test and `make report`, so that every one of
them starts and stops the service the same bounded way, on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ProjectState:
    """A BentoML home and an MLflow store of their own, apart from the user's."""

    root: Path

    @property
    def bentoml_home(self) -> Path:
        return self.root / "bentoml"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            # tools such as `mlflow models serve` start `uvicorn` from PATH
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "BENTOML_HOME": str(self.bentoml_home),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "BENTOML_CONFIG": str(PROJECT_ROOT / "configuration.yaml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "PYTHONUNBUFFERED": "1",
        }
        (self.root / "mlflow").mkdir(parents=True, exist_ok=True)
        env.update(extra)
        return env

    def train(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "train.py", *args],
            cwd=PROJECT_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass
class BentoServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds until /readyz answered 200; fails with the server log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@contextmanager
def bento_server(
    state: ProjectState,
    log_dir: Path,
    wait: bool = True,
    serve_args: tuple[str, ...] = (),
    **extra_env: str,
) -> Iterator[BentoServer]:
    """`bentoml serve` of the shipped service on a free 127.0.0.1 port, in its own group.

    `serve_args` are extra `bentoml serve` options, e.g. ("--timeout-graceful-shutdown", "10").
    Each server gets its own BENTOML_HOME whose `models` is the trained store: `bentoml serve`
    wipes `$BENTOML_HOME/prometheus_multiproc_dir` when it starts, so two servers sharing a
    home would erase each other's metrics.
    """
    port = free_port()
    log_path = log_dir / f"bentoml-serve-{port}.log"
    if "BENTOML_HOME" not in extra_env:
        home = log_dir / f"bentoml-home-{port}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "models").symlink_to(state.bentoml_home / "models", target_is_directory=True)
        extra_env = {**extra_env, "BENTOML_HOME": str(home)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "bentoml"),
                "serve",
                "service:IrisClassifier",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *serve_args,
            ],
            cwd=PROJECT_ROOT,
            env=state.env(**extra_env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = BentoServer(process, port, log_path)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        server.stop()
