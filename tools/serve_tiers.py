"""`make serve-tiers`: the API tier and N runner replicas, as the `tiers` manifests run them.

Each process is started with the same `start-http-server` arguments as the containers of
deploy/k8s/overlays/tiers (the image's entrypoint takes them; here `python -m
bentoml_cli._internal.start` does): the runner replicas with `--service-name
IrisModelRunner`, each on its own 127.0.0.1 port; the API with `--service-name
IrisClassifier --depends IrisModelRunner=http://<balancer>`, where the balancer is the local
stand-in for the runner's Kubernetes Service (tools/tier_proxy.py: it balances connections,
like kube-proxy). Every process has its own BentoML home (metrics of its own), its log in
the run folder, and stops with the others.

    python -m tools.serve_tiers --replicas 2 --port 3000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iris_pipeline.paths import STATE_DIR, VENV_BIN
from iris_service.inference.runner_address import API_SERVICE, RUNNER_SERVICE
from tools.local_server import (
    API_SERVICE as API_IMPORT,
)
from tools.local_server import (
    HOST,
    LocalServer,
    ProjectState,
    free_port,
    server_env,
    start_server,
)
from tools.tier_proxy import connection_balancer

START_MODULE = "bentoml_cli._internal.start"


def start_http_server_args(
    service_name: str, port: int, host: str = HOST, runner_url: str | None = None
) -> list[str]:
    """The container arguments of one tier (the manifests use the same, with their host)."""
    args = ["start-http-server", "--service-name", service_name, "--host", host]
    args += ["--port", str(port)]
    if runner_url is not None:
        args += ["--depends", f"{RUNNER_SERVICE}={runner_url}"]
    return args


def local_command(args: list[str]) -> list[str]:
    """What the image's entrypoint runs for `args`, from this checkout."""
    return [str(VENV_BIN / "python"), "-m", START_MODULE, *args, API_IMPORT]


@dataclass
class Tiers:
    """The running tiers: `api` on its port, `runners[i]` behind `balancer`."""

    api: LocalServer
    balancer: LocalServer
    runners: list[LocalServer]
    log_dir: Path
    state: ProjectState | None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def runner_url(self) -> str:
        return f"http://{HOST}:{self.balancer.port}"

    def kill_runner(self, index: int) -> None:
        """SIGKILL of every process of runner replica `index` (a pod that dies): its
        supervisor's group, and its workers, which BentoML starts in sessions of their own."""
        import psutil

        runner = self.runners[index]
        workers = psutil.Process(runner.process.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.process.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        runner.process.wait(timeout=30)
        psutil.wait_procs(workers, timeout=30)

    def restart_runner(self, index: int) -> LocalServer:
        """Runner replica `index` started again on its port, once ready."""
        port = self.runners[index].port
        self.runners[index] = start_runner(port, self.log_dir, self.state, self.extra_env)
        return self.runners[index]

    def stop(self) -> None:
        for server in (self.api, *self.runners):
            server.stop()


def start_runner(
    port: int,
    log_dir: Path,
    state: ProjectState | None,
    extra_env: dict[str, str],
    wait: bool = True,
) -> LocalServer:
    """One runner replica (`start-http-server --service-name IrisModelRunner`) on `port`."""
    return start_server(
        local_command(start_http_server_args(RUNNER_SERVICE, port)),
        server_env(state, log_dir, port, **extra_env),
        port,
        log_dir / f"runner-{port}-{time.monotonic_ns()}.log",
        wait=wait,
    )


def start_api(
    port: int, runner_url: str, log_dir: Path, state: ProjectState | None, extra_env: dict[str, str]
) -> LocalServer:
    """The API tier (`start-http-server --service-name IrisClassifier --depends ...`)."""
    return start_server(
        local_command(start_http_server_args(API_SERVICE, port, runner_url=runner_url)),
        server_env(state, log_dir, port, **extra_env),
        port,
        log_dir / f"api-{port}.log",
    )


@contextlib.contextmanager
def serve_tiers(
    state: ProjectState | None,
    log_dir: Path,
    replicas: int,
    port: int | None = None,
    **extra_env: str,
) -> Iterator[Tiers]:
    """The API tier on `port` (default: a free one) and `replicas` runner replicas behind a
    connection balancer, all ready; every process stopped when the block ends."""
    if replicas < 1:
        raise ValueError("need at least one runner replica")
    log_dir.mkdir(parents=True, exist_ok=True)
    runners: list[LocalServer] = []
    try:
        for _ in range(replicas):
            runners.append(start_runner(free_port(), log_dir, state, extra_env, wait=False))
        for runner in runners:
            runner.wait_ready()
        with connection_balancer([r.port for r in runners], log_dir) as balancer:
            url = f"http://{HOST}:{balancer.port}"
            api = start_api(port or free_port(), url, log_dir, state, extra_env)
            tiers = Tiers(api, balancer, runners, log_dir, state, dict(extra_env))
            try:
                yield tiers
            finally:
                tiers.stop()
    finally:
        for runner in runners:
            runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="runner replicas")
    parser.add_argument("--port", type=int, default=3000, help="the API tier's port")
    args = parser.parse_args()
    log_dir = STATE_DIR / "tiers" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with serve_tiers(None, log_dir, args.replicas, args.port) as tiers:
        print(f"API tier:     {tiers.api.url} (start-http-server --service-name {API_SERVICE})")
        for runner in tiers.runners:
            print(f"runner:       {runner.url} (start-http-server --service-name {RUNNER_SERVICE})")
        print(f"runner Service stand-in (nginx stream): {tiers.runner_url}")
        print(f"logs: {log_dir}; Ctrl-C stops every tier", flush=True)
        while not stop.wait(1):
            if tiers.api.process.poll() is not None:
                print(f"the API tier exited:\n{tiers.api.log_tail()}")
                break


if __name__ == "__main__":
    main()
