"""python -m tools.bench [--duration 20] [--connections 50] [--quick] [--out-dir reports]"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from iris_pipeline.paths import REPORTS_DIR, STATE_DIR

from . import report, runner, servers
from .models import MODEL_NAMES

QUICK = {"duration": 2.0, "warmup": 0.5, "batch_duration": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=(
            "Benchmark the shipped BentoML service against plain FastAPI + uvicorn and "
            "`mlflow models serve` (same MLflow runs, same workers) with wrk on 127.0.0.1. "
            "Writes bench.json, bench.md and PNG plots into --out-dir."
        ),
    )
    parser.add_argument("--duration", type=float, default=20, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds before a run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 s runs, 0.5 s warm-up, 1 s batch runs (numbers are not meaningful)",
    )
    parser.add_argument("--out-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR / "bench",
        help="the benchmark's own BentoML home and MLflow store (models trained if missing)",
    )
    parser.add_argument("--servers", nargs="+", choices=servers.SERVERS, default=servers.SERVERS)
    parser.add_argument("--models", nargs="+", choices=list(MODEL_NAMES), default=list(MODEL_NAMES))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 10, 100, 1000])
    parser.add_argument("--batch-duration", type=float, default=5, help="seconds per batch run")
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument(
        "--baseline-servers",
        nargs="*",
        choices=[s for s in servers.SERVERS if s != "bentoml"],
        default=["fastapi", "mlflow"],
        help="baselines re-run at the start and the end (logistic regression, 1 worker)",
    )
    parser.add_argument(
        "--multi-worker-servers",
        nargs="*",
        choices=servers.SERVERS,
        default=["bentoml", "fastapi"],
        help="servers also measured at worker counts above 1 (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = QUICK["duration"], QUICK["warmup"]
        args.batch_duration = QUICK["batch_duration"]
    if args.duration < 1 or args.batch_duration < 1:
        parser.error("--duration and --batch-duration must be at least 1 s")
    if args.connections < 1 or any(w < 1 for w in args.workers):
        parser.error("--connections and --workers must be positive")
    if any(not 1 <= size <= 1000 for size in args.batch_sizes):
        parser.error("--batch-sizes must be between 1 and 1000 (the service's limit)")
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
        models=tuple(args.models),
        workers=tuple(dict.fromkeys(args.workers)),
        batch_sizes=tuple(args.batch_sizes),
        batch_duration_s=args.batch_duration,
        batch_connections=args.batch_connections,
        baseline_servers=tuple(args.baseline_servers),
        multi_worker_servers=tuple(args.multi_worker_servers),
    )
    started = time.monotonic()
    result = runner.run(options)
    paths = report.write_all(result, args.out_dir)
    print((args.out_dir / "bench.md").read_text())
    print(f"Wrote {', '.join(str(p) for p in paths)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
