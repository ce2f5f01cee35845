"""A concurrency sweep: the same server loaded at 1, 2, 4 ... connections, one bounded run each.

Like Triton's perf_analyzer, the sweep gives the latency-throughput curve of a server instead
of one saturated point: each step records throughput, p50/p95/p99, errors and the server's
CPU per request. The load itself is a callable (the runner's measured wrk run), so the sweep
holds no server or process logic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .capacity import capacity
from .load import LoadResult
from .resources import TreeUsage

logger = logging.getLogger("tools.bench")

DEFAULT_CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
PAUSE_BETWEEN_STEPS_S = 0.5

LoadAt = Callable[[int], tuple[LoadResult, TreeUsage]]


def point(connections: int, load: LoadResult, usage: TreeUsage) -> dict[str, Any]:
    answered = max(load.requests, 1)
    return {
        "connections": connections,
        "duration_s": round(load.duration_s, 2),
        "requests": load.requests,
        "requests_per_s": round(load.requests_per_s, 1),
        "latency_ms": load.latency_ms,
        "errors": load.errors,
        "cpu_ms_per_request": round(usage.cpu_s * 1000 / answered, 3),
        "server_cpu_cores": round(usage.cpu_s / load.duration_s, 2) if load.duration_s else None,
    }


def run_sweep(
    load_at: LoadAt, connections: tuple[int, ...], objective_p99_ms: float, label: str
) -> dict[str, Any]:
    """{"points": [...], "capacity": {...}} over `connections`, in increasing order."""
    points = []
    for count in sorted(set(connections)):
        load, usage = load_at(count)
        points.append(point(count, load, usage))
        logger.info(
            "  sweep %s %3d conn: %7.0f req/s, p50 %.1f ms, p99 %.1f ms, %d errors",
            label,
            count,
            load.requests_per_s,
            load.latency_ms["p50"],
            load.latency_ms["p99"],
            load.errors,
        )
        time.sleep(PAUSE_BETWEEN_STEPS_S)
    return {"points": points, "capacity": capacity(points, objective_p99_ms)}
