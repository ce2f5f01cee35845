"""python -m tools.loadtest [--scenario typical|saturation] [--run-time 60s]

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
import subprocess
import sys
from pathlib import Path

from iris_pipeline.paths import LOCUSTFILE, PROJECT_ROOT, REPORTS_DIR, VENV_BIN
from tools.local_server import bento_server

from .plot import plot_history


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest", description=__doc__)
    parser.add_argument("--scenario", choices=("typical", "saturation"), default="typical")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    parser.add_argument("--run-time", default="60s", help="Locust --run-time, e.g. 30s, 5m")
    parser.add_argument("--slo-p95-ms", type=float, default=100.0)
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
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


def run_locust(args: argparse.Namespace, url: str, prefix: Path) -> int:
    command = [str(VENV_BIN / "locust"), "-f", str(LOCUSTFILE)]
    command += ["--headless", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    command += ["--run-time", args.run_time, "--stop-timeout", "5", "--host", url]
    # --csv-full-history: per-window percentiles in the history (tools/loadtest/plot.py)
    command += ["--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html"]
    command += ["--only-summary"]
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
    if args.host is not None:
        code = run_locust(args, args.host, prefix)
    else:
        with bento_server(None, args.out_dir / "locust-service", port=args.port or None) as service:
            print(f"Service ready at {service.url} (log: {service.log_path})", flush=True)
            code = run_locust(args, service.url, prefix)
    png = plot_history(
        Path(f"{prefix}_stats_history.csv"),
        Path(f"{prefix}.png"),
        f"Locust, {args.scenario} scenario, {args.users} users",
    )
    print(f"Reports: {prefix}.html, {prefix}_stats.csv, {png} (Locust exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
