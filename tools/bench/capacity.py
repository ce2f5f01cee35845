"""Capacity at a latency objective: the highest throughput whose p99 stays within it.

p99 at saturating concurrency is mostly queueing (Little's law); what capacity planning needs
is the best throughput a server sustains while its p99 meets the objective. Given the points
of a concurrency sweep (one load run per connection count), a point counts when its p99 is
within the objective and its errors stay within `max_error_rate` of its requests; the
capacity is the largest request rate among the points that count. Used by the benchmark's
report and by FinOps (tools/finops/capacity.py), so both read the same figure from a curve.
"""

from __future__ import annotations

from typing import Any

DEFAULT_OBJECTIVE_P99_MS = 50.0
MAX_ERROR_RATE = 0.01  # points with more failed requests than this do not count

Point = dict[str, Any]


def within_objective(
    point: Point, objective_p99_ms: float, max_error_rate: float = MAX_ERROR_RATE
) -> bool:
    """True when the point answered requests, its p99 <= objective, its errors are rare."""
    requests = point.get("requests")
    latency = point.get("latency_ms")
    if not isinstance(requests, int | float) or requests <= 0 or not isinstance(latency, dict):
        return False
    p99 = latency.get("p99")
    if not isinstance(p99, int | float) or p99 > objective_p99_ms:
        return False
    errors = point.get("errors") or 0
    return errors <= max_error_rate * requests


def best_point(
    points: list[Point], objective_p99_ms: float, max_error_rate: float = MAX_ERROR_RATE
) -> Point | None:
    """The point of highest throughput within the objective, or None when there is none."""
    usable = [p for p in points if within_objective(p, objective_p99_ms, max_error_rate)]
    return max(usable, key=lambda p: p["requests_per_s"], default=None)


def capacity(points: list[Point], objective_p99_ms: float) -> dict[str, Any]:
    """What bench.json records for one curve: the capacity and the point it comes from
    (requests_per_s 0.0 and a reason when no point meets the objective)."""
    point = best_point(points, objective_p99_ms)
    if point is None:
        return {
            "objective_p99_ms": objective_p99_ms,
            "requests_per_s": 0.0,
            "connections": None,
            "p99_ms": None,
            "reason": f"no point with p99 <= {objective_p99_ms:g} ms and errors <= "
            f"{MAX_ERROR_RATE:.0%} of {len(points)} measured",
        }
    return {
        "objective_p99_ms": objective_p99_ms,
        "requests_per_s": point["requests_per_s"],
        "connections": point["connections"],
        "p99_ms": point["latency_ms"]["p99"],
    }
