"""The concurrency sweep in the reports: capacities, the curve tables, one plot per model.

bench.md gets a table of every curve (req/s and p99 per connection count) and the capacity
at the p99 objective of every server side by side; reports/bench_sweep_<model>.png plots
p99 latency against throughput, one line per server, with the objective as a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .capacity import DEFAULT_OBJECTIVE_P99_MS

Curve = dict[str, Any]

SERVER_COLOURS = {
    "bentoml": "tab:blue",
    "bentoml-v2": "tab:cyan",
    "fastapi": "tab:orange",
    "mlflow": "tab:green",
    "mlserver": "tab:red",
    "mlserver-batch": "tab:purple",
    "minimal-bentoml": "tab:brown",
    "fastapi-onnx": "tab:olive",
    "bentoml-shadow": "tab:pink",
    "bentoml-canary": "tab:gray",
}


def capacities(sweep: list[Curve]) -> list[dict[str, Any]]:
    """One row per curve: server, model, workers and its capacity at the objective."""
    return [
        {
            "name": curve["name"],
            "server": curve["server"],
            "model": curve["model"],
            "workers": curve["workers"],
        }
        | curve["capacity"]
        for curve in sweep
    ]


def markdown(sweep: list[Curve], settings: dict[str, Any]) -> list[str]:
    if not sweep:
        return []
    objective = settings.get("objective_p99_ms", DEFAULT_OBJECTIVE_P99_MS)
    counts = sorted({p["connections"] for curve in sweep for p in curve["points"]})
    lines = [
        "",
        "## Concurrency sweep (one flower per request)",
        "",
        f"Each server at {', '.join(map(str, counts))} connections, "
        f"{settings.get('sweep_duration_s', '?')} s per step; cells are req/s (p99 ms). "
        f"Capacity = the highest req/s whose p99 <= {objective:g} ms with errors <= 1 %.",
        "",
        "| Run | Path | " + " | ".join(f"{c} conn" for c in counts) + " | capacity req/s | at |",
        "|" + " --- |" * (len(counts) + 4),
    ]
    for curve in sweep:
        by_count = {p["connections"]: p for p in curve["points"]}
        cells = []
        for count in counts:
            point = by_count.get(count)
            if point is None:
                cells.append("-")
                continue
            cell = f"{point['requests_per_s']:,.0f} ({point['latency_ms']['p99']:.0f})"
            cells.append(cell + (f" {point['errors']} err" if point["errors"] else ""))
        capacity = curve["capacity"]
        where = (
            f"{capacity['connections']} conn, p99 {capacity['p99_ms']:.1f} ms"
            if capacity.get("connections") is not None
            else "none within the objective"
        )
        lines.append(
            f"| {curve['name']} | {curve['path']} | {' | '.join(cells)} | "
            f"{capacity['requests_per_s']:,.0f} | {where} |"
        )
    lines += [
        "",
        "Server CPU per request along each curve (ms): "
        + "; ".join(
            f"{curve['name']} "
            + ", ".join(f"{p['cpu_ms_per_request']:.2f}" for p in curve["points"])
            for curve in sweep
        )
        + ".",
    ]
    return lines


def write_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """bench_sweep_<model>.png per model: p99 latency against throughput, one line a server."""
    sweep: list[Curve] = result.get("sweep", [])
    if not sweep:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objective = result.get("settings", {}).get("objective_p99_ms", DEFAULT_OBJECTIVE_P99_MS)
    paths = []
    for model in dict.fromkeys(curve["model"] for curve in sweep):
        figure, axes = plt.subplots(figsize=(8, 5))
        for curve in (c for c in sweep if c["model"] == model):
            points = curve["points"]
            axes.plot(
                [p["requests_per_s"] for p in points],
                [p["latency_ms"]["p99"] for p in points],
                marker="o",
                color=SERVER_COLOURS.get(curve["server"], "grey"),
                label=f"{curve['server']} ({curve['workers']}w)",
            )
            for p in points:
                axes.annotate(
                    str(p["connections"]),
                    (p["requests_per_s"], p["latency_ms"]["p99"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        axes.axhline(objective, color="red", linestyle="--", linewidth=1, label="p99 objective")
        axes.set_yscale("log")
        axes.set_xlabel("throughput (requests/s)")
        axes.set_ylabel("p99 latency (ms)")
        axes.set_title(f"Latency vs throughput, {model} (labels: connections)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / f"bench_sweep_{model}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
