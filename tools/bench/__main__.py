"""python -m tools.bench [--models ...] [--servers ...] [--duration 15] [--connections 50]
[--sweep-connections 1 2 4 ...] [--objective-p99-ms 50] [--quick] [--out-dir reports]

The defaults measure issue 21's whole matrix (five models, eight servers) in about 40 minutes on
2 cores; --models and --servers pick a subset, --quick shortens every run."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from iris_pipeline.paths import REPORTS_DIR, STATE_DIR

from . import mlserver, report, runner, servers
from .capacity import DEFAULT_OBJECTIVE_P99_MS
from .models import FAMILIES, MODEL_NAMES, SHIPPED
from .sweep import DEFAULT_CONNECTIONS

# A smoke run: every load at wrk's shortest (1 s), and no warm-up (a run's cold first requests
# are part of its numbers, which mean nothing here).
QUICK = {"duration": 1.0, "warmup": 0.0, "batch_duration": 1.0, "sweep_duration": 1.0}
DEFAULT_BATCHING = servers.ServerSettings().mlserver_batching
# The largest batch measured: its bodies are built in memory and in wrk's Lua script.
MAX_BATCH_SIZE = 10000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=(
            "Benchmark the shipped BentoML service (/predict, its V2 route, its challenger "
            "modes) against plain FastAPI + scikit-learn, MLServer defaults, a minimal BentoML "
            "service and FastAPI + ONNX Runtime (optionally `mlflow models serve` and MLServer "
            "with adaptive batching), same model files, with wrk on 127.0.0.1: saturation runs, "
            "batches, and a concurrency sweep per server with its capacity at a p99 objective; "
            "issue 21's targets marked from the run's own numbers. "
            "Writes bench.json, bench.md and PNG plots into --out-dir."
        ),
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds before a run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 s runs, batch runs and sweep steps, no warm-up "
        "(numbers are not meaningful)",
    )
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR / "bench",
        help="the benchmark's own BentoML home and MLflow store (models trained if missing)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=servers.SERVERS,
        default=list(servers.DEFAULT_SERVERS),
        help="servers to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODEL_NAMES),
        default=[SHIPPED, *FAMILIES],
        help="models to measure; batches, the V2 route and the challenger modes use the first "
        "of shipped or the first given (default: %(default)s)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=None,
        help="API workers of our service, the minimal BentoML service and FastAPI + ONNX "
        "Runtime (default: the shipped configuration's, resolved as BentoML does: "
        f"{servers.shipped_api_workers()} here)",
    )
    parser.add_argument(
        "--batch-sizes",
        nargs="*",
        type=int,
        default=[1, 100, 1000, 10000],
        help="flowers per batch request, each in every batch format of each server; a size a "
        "server refuses (over its limits) is recorded as refused (default: %(default)s)",
    )
    parser.add_argument("--batch-duration", type=float, default=4, help="seconds per batch run")
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument(
        "--baseline-servers",
        nargs="*",
        choices=[s for s in servers.SERVERS if s not in servers.WITH_OUR_WORKERS],
        default=["fastapi"],
        help="baselines re-run at the start and the end (logistic regression, 1 worker)",
    )
    sweep = parser.add_argument_group("concurrency sweep and capacity")
    sweep.add_argument(
        "--sweep-connections",
        nargs="*",
        type=int,
        default=list(DEFAULT_CONNECTIONS),
        help="connection counts of the sweep, each server at the first worker count "
        "(none: no sweep; default: %(default)s)",
    )
    sweep.add_argument("--sweep-duration", type=float, default=4, help="seconds per sweep step")
    sweep.add_argument(
        "--objective-p99-ms",
        type=float,
        default=DEFAULT_OBJECTIVE_P99_MS,
        help="capacity = highest throughput whose p99 stays within this (default: %(default)s)",
    )
    peer = parser.add_argument_group("MLServer peer")
    peer.add_argument(
        "--mlserver-venv",
        type=Path,
        default=mlserver.DEFAULT_VENV,
        help="MLServer's own venv, created on first use from "
        "tools/bench/mlserver-requirements.txt (default: %(default)s)",
    )
    peer.add_argument(
        "--mlserver-max-batch-size",
        type=int,
        default=DEFAULT_BATCHING.max_batch_size,
        help="mlserver-batch: most requests in one batch (default: %(default)s)",
    )
    peer.add_argument(
        "--mlserver-max-batch-time",
        type=float,
        default=DEFAULT_BATCHING.max_batch_time_s,
        help="mlserver-batch: seconds to wait for a batch to fill (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = QUICK["duration"], QUICK["warmup"]
        args.batch_duration = QUICK["batch_duration"]
        args.sweep_duration = QUICK["sweep_duration"]
    if args.duration < 1 or args.batch_duration < 1 or args.sweep_duration < 1:
        parser.error("--duration, --batch-duration and --sweep-duration must be at least 1 s")
    if any(count < 1 for count in args.sweep_connections) or args.objective_p99_ms <= 0:
        parser.error("--sweep-connections and --objective-p99-ms must be positive")
    if args.mlserver_max_batch_size < 2 or args.mlserver_max_batch_time <= 0:
        parser.error("mlserver-batch needs --mlserver-max-batch-size >= 2 and a positive time")
    if args.connections < 1 or (args.api_workers is not None and args.api_workers < 1):
        parser.error("--connections and --api-workers must be positive")
    if any(not 1 <= size <= MAX_BATCH_SIZE for size in args.batch_sizes):
        parser.error(f"--batch-sizes must be between 1 and {MAX_BATCH_SIZE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    options = runner.Options(
        out_dir=args.out_dir,
        state_dir=args.state_dir,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        servers=tuple(args.servers),
        models=tuple(dict.fromkeys(args.models)),
        api_workers=args.api_workers,
        batch_sizes=tuple(args.batch_sizes),
        batch_duration_s=args.batch_duration,
        batch_connections=args.batch_connections,
        baseline_servers=tuple(args.baseline_servers),
        sweep_connections=tuple(sorted(set(args.sweep_connections))),
        sweep_duration_s=args.sweep_duration,
        objective_p99_ms=args.objective_p99_ms,
        server_settings=servers.ServerSettings(
            mlserver_venv=args.mlserver_venv,
            mlserver_batching=mlserver.Batching(
                args.mlserver_max_batch_size, args.mlserver_max_batch_time
            ),
        ),
    )
    started = time.monotonic()
    result = runner.run(options)
    paths = report.write_all(result, args.out_dir)
    print((args.out_dir / "bench.md").read_text())
    print(f"Wrote {', '.join(str(p) for p in paths)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
