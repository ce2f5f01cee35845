"""The one way to run a served instance on this machine: start, wait until ready, stop.

Used by the tests, the benchmark (for every server it compares), the load test and
`make report`, so that each of them starts a server the same bounded way: on 127.0.0.1 only,
on a free port, in a process group of its own (stopping it stops every worker), with an
isolated BentoML home, and with its output in a log file.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.paths import CONFIGURATION, PROJECT_ROOT, VENV_BIN
from iris_service.inference.model_aliases import ALIASES_DIR
from iris_service.settings import bentoml_home as default_bentoml_home
from tools.processes import stop_process_group

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
API_SERVICE = "service:IrisClassifier"


def free_port() -> int:
    """A port on 127.0.0.1 that stays reserved until a server binds it.

    A port that is merely found free (bind to 0, close) can be handed to someone else before
    the server we start binds it. Here a connection to the port is accepted and closed from
    the listening side first, which leaves it in TIME_WAIT for about a minute: the kernel then
    hands it out to no other bind(0) or outgoing connection, and no socket without
    SO_REUSEADDR can bind it, while a server (which sets SO_REUSEADDR: uvicorn, BentoML's
    circus sockets, nginx, Prometheus, PostgreSQL, the JVM) binds it at once."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection((HOST, port), timeout=5) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the listening side closes first: its end goes to TIME_WAIT
            client.recv(1)  # the close has reached the client before it closes its end
    return port


def http_status(port: int, method: str, path: str, body: str | None = None) -> int | None:
    """Status of one request to 127.0.0.1:port, or None when nothing answers (yet)."""
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
            "BENTOML_CONFIG": str(CONFIGURATION),
            "BENTOML_DO_NOT_TRACK": "True",
            "PYTHONUNBUFFERED": "1",
            # Servers started here may run side by side: gRPC on a free port each (published
            # in BENTOML_HOME/grpc_port, `grpc_port`), never all on 8001.
            "IRIS_GRPC_PORT": os.environ.get("IRIS_GRPC_PORT", "0"),
        }
        (self.root / "mlflow").mkdir(parents=True, exist_ok=True)
        env.update(extra)
        return env

    def train(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real train.py against this state."""
        return self.run_python("train.py", *args, timeout=timeout)

    def lifecycle(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run `python -m iris_pipeline.lifecycle` (models, promote, rollback) on this state."""
        return self.run_python("-m", "iris_pipeline.lifecycle", *args, timeout=timeout)

    def run_python(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass
class LocalServer:
    """A server process started by `start_server`; `url` is on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ready_path: str
    started_at: float
    cold_start_s: float | None = None
    bentoml_home: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from process start until the readiness route answered 200 (cold start);
        fails with the end of the server's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            if http_status(self.port, "GET", self.ready_path) == 200:
                self.cold_start_s = time.monotonic() - self.started_at
                return self.cold_start_s
            time.sleep(0.05)
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log_tail()}")

    def worker_pids(self, service_name: str | None = None) -> list[int]:
        """PIDs of the worker processes of one BentoML service of this server, or of all its
        services (API workers and runner: each holds the models)."""
        import psutil

        wanted = "--service-name" if service_name is None else f"--service-name {service_name}"
        pids = []
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if wanted in " ".join(proc.cmdline()):
                    pids.append(proc.pid)
            except psutil.Error:
                continue
        return pids

    def worker_pid(self, service_name: str = "IrisModelRunner") -> int:
        """PID of the (first) worker process of a BentoML service of this server."""
        pids = self.worker_pids(service_name)
        if not pids:
            raise LookupError(f"no {service_name} worker under process {self.process.pid}")
        return pids[0]

    def grpc_port(self, timeout: float = 30) -> int:
        """The gRPC port the server's first API worker published in its BENTOML_HOME
        (IRIS_GRPC_PORT=0, the default here); it may come a moment after /readyz, which
        another worker can answer first."""
        if self.bentoml_home is None:
            raise LookupError("this server's BENTOML_HOME is not known")
        published = self.bentoml_home / "grpc_port"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if published.exists():
                return int(published.read_text())
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"no gRPC port published in {published}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the whole process group; SIGKILL when it outlives `timeout`."""
        stop_process_group(self.process, timeout)


def start_server(
    command: list[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    ready_path: str = "/readyz",
    wait: bool = True,
    ready_timeout: float = READY_TIMEOUT_S,
) -> LocalServer:
    """Start `command` (which must listen on 127.0.0.1:port) in its own process group and,
    unless `wait` is false, wait until `ready_path` answers 200; stopped again on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
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
    server = LocalServer(process, port, log_path, ready_path, started_at)
    if wait:
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            raise
    return server


def bentoml_serve_command(port: int, *serve_args: str) -> list[str]:
    """`bentoml serve` of the shipped service on 127.0.0.1:port."""
    command = [str(VENV_BIN / "bentoml"), "serve", API_SERVICE, "--host", HOST]
    return [*command, "--port", str(port), *serve_args]


def isolated_home(models: Path, parent: Path, port: int) -> Path:
    """A BENTOML_HOME of its own whose model store is `models` and whose serving aliases
    (iris_service/inference/model_aliases.py) are those beside it: `bentoml serve` wipes
    `$BENTOML_HOME/prometheus_multiproc_dir` at start, so two servers sharing a home would
    erase each other's metrics."""
    home = parent / f"bentoml-home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    aliases = models.parent / ALIASES_DIR
    aliases.mkdir(parents=True, exist_ok=True)
    for name, target in (("models", models), (ALIASES_DIR, aliases)):
        link = home / name
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    return home


def server_env(
    state: ProjectState | None,
    log_dir: Path,
    port: int,
    unset: tuple[str, ...] = (),
    **extra_env: str,
) -> dict[str, str]:
    """The environment of one BentoML server on `port`: the `state`'s stores (None: the
    environment's, as `make serve` sets them), a BentoML home of its own under `log_dir`
    (unless `extra_env` names one), without the variables in `unset`."""
    env = state.env() if state is not None else {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("IRIS_GRPC_PORT", "0")  # see ProjectState.env
    for name in unset:
        env.pop(name, None)
    env.setdefault("BENTOML_CONFIG", str(CONFIGURATION))
    if "BENTOML_HOME" not in extra_env:
        models = default_bentoml_home(env) / "models"
        extra_env = {**extra_env, "BENTOML_HOME": str(isolated_home(models, log_dir, port))}
    env.update(extra_env)
    return env


@contextmanager
def bento_server(
    state: ProjectState | None,
    log_dir: Path,
    wait: bool = True,
    serve_args: tuple[str, ...] = (),
    port: int | None = None,
    unset: tuple[str, ...] = (),
    **extra_env: str,
) -> Iterator[LocalServer]:
    """`bentoml serve` of the shipped service, stopped when the block ends.

    With a `state`, the server uses that state's model store and MLflow store; with None, the
    environment's (BENTOML_HOME, as `make serve` sets it). Either way it gets its own home.
    `serve_args` are extra `bentoml serve` options, e.g. ("--timeout-graceful-shutdown", "10");
    `unset` names environment variables the server must not inherit.
    """
    port = port or free_port()
    env = server_env(state, log_dir, port, unset, **extra_env)
    server = start_server(
        bentoml_serve_command(port, *serve_args),
        env,
        port,
        log_dir / f"bentoml-serve-{port}.log",
        wait=wait,
    )
    server.bentoml_home = Path(env["BENTOML_HOME"])
    try:
        yield server
    finally:
        server.stop()
