"""python -m iris_service.loadtest [--scenario typical|saturation] [--run-time 60s]

Starts the shipped service (`bentoml serve service:IrisClassifier`, BENTOML_CONFIG and
BENTOML_HOME from the environment, as `make serve` does) on 127.0.0.1, runs locustfile.py
headless for a bounded time, stops the service and writes into --out-dir:
locust-<scenario>.html, locust-<scenario>_*.csv and locust-<scenario>.png. The exit code is
Locust's: 0 when the SLOs of the locustfile held, 1 when not.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from iris_service.bench.servers import HOST, free_port, http_status

from .plot import plot_history

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 120


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m iris_service.loadtest", description=__doc__)
    parser.add_argument("--scenario", choices=("typical", "saturation"), default="typical")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    parser.add_argument("--run-time", default="60s", help="Locust --run-time, e.g. 30s, 5m")
    parser.add_argument("--slo-p95-ms", type=float, default=100.0)
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "reports")
    parser.add_argument(
        "--port", type=int, default=0, help="port of the service (default: a free one)"
    )
    parser.add_argument(
        "--host",
        default=None,
        help="URL of an already running service; nothing is started (e.g. http://127.0.0.1:3000)",
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+[smh]?", args.run_time):
        parser.error("--run-time must look like 30, 30s, 5m or 1h")
    return args


def run_seconds(run_time: str) -> int:
    value, unit = int(re.sub(r"\D", "", run_time)), run_time[-1]
    return value * {"m": 60, "h": 3600}.get(unit, 1)


def start_service(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [str(VENV_BIN / "bentoml"), "serve", "service:IrisClassifier"]
    command += ["--host", HOST, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited early; see {log_path}")
        if http_status(port, "GET", "/readyz") == 200:
            return process
        time.sleep(0.2)
    stop_service(process)
    raise TimeoutError(f"service not ready after {READY_TIMEOUT_S} s; see {log_path}")


def stop_service(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_locust(args: argparse.Namespace, url: str, prefix: Path) -> int:
    command = [str(VENV_BIN / "locust"), "-f", str(PROJECT_ROOT / "locustfile.py")]
    command += ["--headless", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    command += ["--run-time", args.run_time, "--stop-timeout", "5", "--host", url]
    command += ["--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary"]
    command += ["--slo-p95-ms", str(args.slo_p95_ms)]
    env = {**os.environ, "IRIS_LOAD_SCENARIO": args.scenario}
    timeout = run_seconds(args.run_time) + 120
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, timeout=timeout, check=False
    ).returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.out_dir / f"locust-{args.scenario}"
    service = None
    url = args.host
    if url is None:
        port = args.port or free_port()
        log_path = args.out_dir / f"locust-{args.scenario}-service.log"
        print(f"Starting the service on {HOST}:{port} (log: {log_path})", flush=True)
        service = start_service(port, log_path)
        url = f"http://{HOST}:{port}"
    try:
        code = run_locust(args, url, prefix)
    finally:
        if service is not None:
            stop_service(service)
    png = plot_history(
        Path(f"{prefix}_stats_history.csv"),
        Path(f"{prefix}.png"),
        f"Locust, {args.scenario} scenario, {args.users} users",
    )
    print(f"Reports: {prefix}.html, {prefix}_stats.csv, {png} (Locust exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
