"""PNG of throughput and latency over time from Locust's <prefix>_stats_history.csv."""

from __future__ import annotations

import csv
from pathlib import Path


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_history(path: Path) -> list[dict[str, float | None]]:
    """The 'Aggregated' rows: seconds since start, users, req/s, failures/s, percentiles.

    Throughput is derived from the running totals between consecutive rows (Locust's own
    Requests/s column is a trailing 10 s window that reads 0 during the first seconds).
    """
    rows: list[dict[str, float | None]] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated":
                continue
            rows.append(
                {
                    "timestamp": _number(row.get("Timestamp")),
                    "users": _number(row.get("User Count")),
                    "total": _number(row.get("Total Request Count")) or 0.0,
                    "total_failures": _number(row.get("Total Failure Count")) or 0.0,
                    "p50": _number(row.get("50%")),
                    "p95": _number(row.get("95%")),
                    "p99": _number(row.get("99%")),
                }
            )
    if not rows:
        raise ValueError(f"no 'Aggregated' rows in {path}")
    start = rows[0]["timestamp"] or 0.0
    previous = None
    for row in rows:
        row["t"] = (row["timestamp"] or start) - start
        row["rps"] = row["failures_per_s"] = 0.0
        if previous is not None and row["t"] > previous["t"]:
            elapsed = row["t"] - previous["t"]
            row["rps"] = (row["total"] - previous["total"]) / elapsed
            row["failures_per_s"] = (row["total_failures"] - previous["total_failures"]) / elapsed
        previous = row
    return rows


def plot_history(history_csv: Path, png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history_csv)
    t = [row["t"] for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(t, [row["rps"] for row in rows], label="requests/s")
    top.plot(t, [row["failures_per_s"] for row in rows], label="failures/s", color="red")
    users = top.twinx()
    users.plot(t, [row["users"] for row in rows], color="grey", linestyle=":", label="users")
    users.set_ylabel("users")
    top.set_ylabel("per second")
    top.set_title(title)
    top.legend(loc="upper left")
    for key in ("p50", "p95", "p99"):
        series = [(x, row[key]) for x, row in zip(t, rows, strict=True) if row[key] is not None]
        bottom.plot([p[0] for p in series], [p[1] for p in series], label=key)
    bottom.set_ylabel("response time (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.legend(loc="upper left")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
