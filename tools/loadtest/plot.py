"""PNG of throughput and latency over time from Locust's <prefix>_stats_history.csv.

The percentiles are those of each moment's trailing window (Locust's "current" response
times, about the last 10 s), written for the Aggregated row only when Locust runs with
--csv-full-history (tools/loadtest passes it). Without it the columns are cumulative since
the start, where a slow start makes p95 seem to fall for the rest of the run; such a file
is plotted with its lines labelled "cumulative".
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


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


WINDOW_LABEL = "trailing 10 s window"
CUMULATIVE_LABEL = "cumulative since start"


def is_per_window(history_csv: Path) -> bool:
    """Whether the file holds per-endpoint rows too (--csv-full-history): only then are the
    Aggregated row's percentiles per window rather than cumulative."""
    with history_csv.open(newline="") as handle:
        return any(row.get("Name") not in (None, "Aggregated") for row in csv.DictReader(handle))


def history_figure(rows: list[dict[str, float | None]], title: str, per_window: bool) -> Any:
    """Throughput (requests and failures per second, users on their own axis) above the
    latency percentiles; every axis says its unit."""
    import matplotlib.pyplot as plt

    t = [row["t"] for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, layout="constrained")
    top.plot(t, [row["rps"] for row in rows], label="requests/s")
    top.plot(t, [row["failures_per_s"] for row in rows], label="failures/s", color="red")
    users = top.twinx()
    users.plot(t, [row["users"] for row in rows], color="grey", linestyle=":", label="users")
    users.set_ylabel("simulated users (count)")
    users.set_ylim(bottom=0)
    top.set_ylabel("throughput (requests/s)")
    top.set_ylim(bottom=0)
    top.set_title(title)
    handles, labels = top.get_legend_handles_labels()
    more_handles, more_labels = users.get_legend_handles_labels()
    top.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)
    window = WINDOW_LABEL if per_window else CUMULATIVE_LABEL
    for key in ("p50", "p95", "p99"):
        series = [(x, row[key]) for x, row in zip(t, rows, strict=True) if row[key] is not None]
        bottom.plot([p[0] for p in series], [p[1] for p in series], label=f"{key}, {window}")
    bottom.set_ylabel("response time (ms)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("time since start (s)")
    bottom.legend(loc="upper left", fontsize=8)
    return figure


def plot_history(history_csv: Path, png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = history_figure(read_history(history_csv), title, is_per_window(history_csv))
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
