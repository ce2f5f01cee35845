"""Measure what RequestMonitoringMiddleware adds to each request, in microseconds.

The same minimal ASGI app answers the same POST /predict twice: bare, and wrapped in the
middleware. Both are driven in-process through the ASGI interface (no sockets), so the
difference is the middleware's own CPU work: request id, content-type and size checks, two RSS
reads, CPU clock, three histogram observations, one gauge, one JSON log line.

    python -m tools.middleware_overhead --iterations 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from iris_service.http.middleware import RequestMonitoringMiddleware
from iris_service.http.request_log import RequestLog

BODY = b'{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}'
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"75")],
}


async def _minimal_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"class_id":0}'})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _time_per_request_us(app: Any, iterations: int) -> float:
    """CPU time per request: unlike wall time, it does not grow when other processes run."""
    started = time.process_time()
    for _ in range(iterations):
        await app(dict(SCOPE), _receive, _send)
    return (time.process_time() - started) / iterations * 1e6


async def _measure(iterations: int, rounds: int, log_fd: int) -> dict[str, float]:
    wrapped = RequestMonitoringMiddleware(_minimal_app, request_log=RequestLog(log_fd, True))
    bare_runs, wrapped_runs = [], []
    for _ in range(rounds):  # interleaved so drift of the machine hits both alike
        bare_runs.append(await _time_per_request_us(_minimal_app, iterations))
        wrapped_runs.append(await _time_per_request_us(wrapped, iterations))
    bare, monitored = statistics.median(bare_runs), statistics.median(wrapped_runs)
    return {
        "iterations_per_round": iterations,
        "rounds": rounds,
        "bare_app_us_per_request": round(bare, 2),
        "with_middleware_us_per_request": round(monitored, 2),
        "middleware_overhead_us_per_request": round(monitored - bare, 2),
    }


def measure(iterations: int = 5000, rounds: int = 5) -> dict[str, Any]:
    """The log line is formatted and written as in production, but to /dev/null."""
    log_fd = os.open(os.devnull, os.O_WRONLY)
    try:
        result = asyncio.run(_measure(iterations, rounds, log_fd))
    finally:
        os.close(log_fd)
    return {**result, "log_line_written": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/middleware_overhead.json"))
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be positive")
    result = measure(args.iterations, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
