"""bench.json (read by other code: keep its shape), bench.md and the plots.

bench.json: {"generated_at", "machine": {"cpus", "description"}, "settings", "runs": [...],
"batch": [...], "sweep": [...], "capacities": [...], "targets": [{"name", "value",
"threshold", "met", ...}]}. A run is one server (servers.SERVERS) x model x phase
(main|baseline_start|baseline_end), with the workers it was started with and the API worker
processes counted during its load; a run that could not be measured (it failed to start or to
answer, or answered nothing) holds "failed" (with the reason) instead of numbers. A batch
entry is one server x batch format (payloads.BATCH_FORMATS) x batch size: {"server", "model",
"workers", "format", "path",
"batch_size", "connections", "requests_per_s", "rows_per_s", "latency_ms", "errors",
"cpu_us_per_row"}, or "refused" (the server's 4xx answer: over its limits) or "failed" instead
of the numbers. A sweep entry is one server x model's curve:
{"name", "server", "model", "workers", "path", "points": [{"connections", "requests_per_s",
"latency_ms", "errors", "cpu_ms_per_request", ...}], "capacity": {"objective_p99_ms",
"requests_per_s", "connections", "p99_ms"}}; "capacities" lists those capacities side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import sweep_report
from .servers import CANARY_SHARE, MODE_SERVERS
from .targets import Measured, find_run, targets

Run = dict[str, Any]

SERVER_COLOURS = sweep_report.SERVER_COLOURS


def build(
    generated_at: str,
    machine: dict[str, Any],
    settings: dict[str, Any],
    runs: list[Run],
    batch: list[Run],
    sweep: list[Run] | None = None,
    image: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sweep = sweep or []
    image = image or {"not_measured": "not asked"}
    objective = settings.get("objective_p99_ms") or sweep_report.DEFAULT_OBJECTIVE_P99_MS
    connections = settings.get("connections") or 50
    measured = Measured(runs, batch, sweep, objective, image, connections)
    return {
        "generated_at": generated_at,
        "machine": machine,
        "settings": settings,
        "runs": runs,
        "batch": batch,
        "sweep": sweep,
        "capacities": sweep_report.capacities(sweep),
        "image": image,
        "targets": targets(measured),
    }


def write_all(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """bench.json, bench.md and the PNG plots; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plots = write_plots(result, out_dir) + sweep_report.write_plots(result, out_dir)
    md_path = out_dir / "bench.md"
    md_path.write_text(markdown(result, [p.name for p in plots]))
    return [json_path, md_path, *plots]


# --- Markdown -------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio_text(run: Run, runs: list[Run], baseline: str) -> str:
    other = find_run(runs, baseline, run["model"])
    if run.get("phase") != "main" or not other or not other.get("requests_per_s"):
        return "-"
    return f"{run['requests_per_s'] / other['requests_per_s']:.2f}×"


def markdown(result: dict[str, Any], plot_names: list[str]) -> str:
    runs: list[Run] = result["runs"]
    settings = result.get("settings", {})
    lines = [
        "# Benchmark: the shipped BentoML service vs plain FastAPI, MLServer, a minimal BentoML "
        "service and FastAPI + ONNX Runtime",
        "",
        f"Generated {result['generated_at']} on {result['machine'].get('description', '?')}.",
        f"Load: wrk, {settings.get('connections', '?')} connections, "
        f"{settings.get('threads', '?')} thread(s), {settings.get('duration_s', '?')} s per run "
        f"after {settings.get('warmup_s', '?')} s of warm-up; the load generator shares the "
        "cores with the server (its CPU is in the last columns).",
        f"Load average (1, 5, 15 min) at the start: {settings.get('load_average_at_start', '?')}; "
        f"at the end: {result['machine'].get('load_average_at_end', '?')} "
        f"({result['machine'].get('cpus', '?')} CPUs). A load average above the CPU count means "
        "other processes competed for the cores: compare the drift table before trusting a ratio.",
        "",
        "## Throughput and latency (POST /predict, one flower per request)",
        "",
        "| Run | Phase | req/s | × FastAPI | × minimal BentoML | p50 ms | p95 ms | p99 ms | "
        "errors | server CPU ms/req | RSS MB per process (largest) | RSS MB total | "
        "cold start s | wrk CPU ms/req | API worker processes | connections per worker |",
        "|" + " --- |" * 16,
    ]
    for run in runs:
        if "failed" in run:
            reason = str(run["failed"]).replace("|", "\\|")
            lines.append(f"| {run['name']} | {run['phase']} | failed: {reason} |" + " |" * 13)
            continue
        latency = run["latency_ms"]
        split = run.get("connection_split")
        lines.append(
            f"| {run['name']} | {run['phase']} | {_fmt(run['requests_per_s'])} | "
            f"{_ratio_text(run, runs, 'fastapi')} | {_ratio_text(run, runs, 'minimal-bentoml')} | "
            f"{_fmt(latency['p50'], 1)} | {_fmt(latency['p95'], 1)} | {_fmt(latency['p99'], 1)} | "
            f"{run['errors']} | {_fmt(run['cpu_ms_per_request'], 2)} | "
            f"{_fmt(run['rss_mb_per_worker'])} | {_fmt(run.get('rss_mb_total'))} | "
            f"{_fmt(run['cold_start_s'], 1)} | {_fmt(run['loadgen_cpu_ms_per_request'], 2)} | "
            f"{_fmt(run.get('api_worker_processes'))} | "
            f"{' / '.join(map(str, split)) if split else '-'} |"
        )
    lines += _drift_lines(runs)
    lines += mode_lines(runs)
    lines += batch_lines(result.get("batch", []))
    lines += sweep_report.markdown(result.get("sweep", []), settings)
    lines += [
        "",
        "## Targets (issue 21)",
        "",
        f"API workers: {settings.get('api_workers', '?')} for our service, the minimal BentoML "
        f"service and FastAPI + ONNX Runtime (shipped configuration: "
        f"{settings.get('api_workers_shipped', '?')} on this machine); 1 for plain FastAPI and "
        f"MLServer. Image: {_image_text(result.get('image') or {})}.",
        "",
        "| Target | Measured | Threshold | Met | Evidence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for target in result["targets"]:
        met = {True: "✅ met", False: "❌ not met", None: "not measured"}[target["met"]]
        lines.append(
            f"| {target['name']} | {_fmt(target['value'], 2)} {target['unit']} | "
            f"{target['comparison']} {_fmt(target['threshold'], 1)} | {met} | "
            f"{target['evidence']} |"
        )
    lines += [
        "",
        "Definitions: errors = non-2xx answers + socket errors (connect, read, write, timeout); "
        "server CPU = user+system time of the server's whole process tree (supervisor, API "
        "workers, runner) during the run, divided by the requests answered; RSS per process = "
        "the largest peak resident set of any one process of the tree; cold start = process "
        "start until one valid prediction on the server's prediction route (/predict, the V2 "
        "route for MLServer, /invocations for mlflow) first answered 200; × FastAPI / × "
        "minimal BentoML = req/s over that peer's req/s with the same model in the main phase; "
        "API worker processes = the processes that answered requests (BentoML API service "
        "workers, uvicorn workers), counted during the load. bentoml-v2, mlserver and "
        "mlserver-batch answer identical V2 JSON bodies.",
    ]
    lines += ["", *(f"![{name}]({name})" for name in plot_names)]
    return "\n".join(lines) + "\n"


def _image_text(image: dict[str, Any]) -> str:
    if "size_mb" in image:
        return f"{image.get('tag', '?')}, {image['size_mb']:,.0f} MB"
    return f"not measured ({image.get('not_measured', '?')})"


def mode_lines(runs: list[Run]) -> list[str]:
    """What the challenger modes cost: each mode run against mode none (the shipped service
    alone) with the same model and workers, in the same benchmark."""
    rows = []
    for run in runs:
        mode = MODE_SERVERS.get(run.get("server", ""))
        none = find_run(runs, "bentoml", run.get("model", ""))
        if mode is None or run.get("phase") != "main" or "requests_per_s" not in run or not none:
            continue
        ratio = run["requests_per_s"] / none["requests_per_s"]
        rows.append(
            f"| {run['model']} | {mode} | {_fmt(none['requests_per_s'])} | "
            f"{_fmt(run['requests_per_s'])} | {ratio:.2f}× | "
            f"{_fmt(none['latency_ms']['p99'], 1)} / {_fmt(run['latency_ms']['p99'], 1)} | "
            f"{run['cpu_ms_per_request'] - none['cpu_ms_per_request']:+.2f} | {run['errors']} |"
        )
    if not rows:
        return []
    return [
        "",
        "## Cost of the challenger modes (the challenger is the champion's own version)",
        "",
        f"Canary answers {CANARY_SHARE:.0%} of the requests with the challenger; shadow has "
        "the challenger also predict every request, off the answer's path.",
        "",
        "| Model | Mode | req/s, none | req/s, mode | × none | p99 ms none / mode | "
        "Δ server CPU ms/req | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def _drift_lines(runs: list[Run]) -> list[str]:
    starts = {
        r["name"]: r for r in runs if r.get("phase") == "baseline_start" and "requests_per_s" in r
    }
    ends = {
        r["name"]: r for r in runs if r.get("phase") == "baseline_end" and "requests_per_s" in r
    }
    names = [name for name in starts if name in ends]
    if not names:
        return []
    lines = [
        "",
        "## Drift (the same baseline at the start and at the end of the run)",
        "",
        "| Baseline | req/s at start | req/s at end | change |",
        "| --- | --- | --- | --- |",
    ]
    for name in names:
        start, end = starts[name]["requests_per_s"], ends[name]["requests_per_s"]
        change = (end - start) / start * 100 if start else 0.0
        lines.append(f"| {name} | {_fmt(start)} | {_fmt(end)} | {change:+.1f} % |")
    return lines


FORMAT_LABELS = {
    "service": "service JSON",
    "v2": "V2 JSON tensor",
    "v2-binary": "V2 binary tensor",
    "dataframe_split": "MLflow dataframe_split",
}


def _format_label(entry: Run) -> str:
    name = entry.get("format", "")
    return f"{FORMAT_LABELS.get(name, name)} `{entry.get('path', '?')}`"


def _batch_cell(entry: Run | None) -> str:
    if entry is None:
        return "-"
    if "refused" in entry:
        return f"refused ({entry['refused'].split(':', 1)[0]})"
    if "failed" in entry:
        return "failed"
    cell = _fmt(entry["rows_per_s"])
    return f"{cell} ({entry['errors']} errors)" if entry["errors"] else cell


def batch_table(batch: list[Run]) -> list[str]:
    """Flowers/s per server, format and model (rows) and batch size (columns)."""
    sizes = sorted({entry["batch_size"] for entry in batch})
    cells: dict[tuple[str, str, str, int], dict[int, Run]] = {}
    for entry in batch:
        key = (entry["server"], _format_label(entry), entry["model"], entry["workers"])
        cells.setdefault(key, {})[entry["batch_size"]] = entry
    lines = [
        "| Server | Format | Model | Workers | "
        + " | ".join(f"{size:,} / request" for size in sizes)
        + " |",
        "|" + " --- |" * (4 + len(sizes)),
    ]
    for (server, label, model, workers), by_size in cells.items():
        row = " | ".join(_batch_cell(by_size.get(size)) for size in sizes)
        lines.append(f"| {server} | {label} | {model} | {workers} | {row} |")
    return lines


def batch_lines(batch: list[Run]) -> list[str]:
    """The batch section: flowers/s per format and size, then every entry in detail."""
    if not batch:
        return []
    connections = sorted({entry["connections"] for entry in batch})
    lines = [
        "",
        "## Batch throughput (flowers/s per format and batch size)",
        "",
        f"Each format and batch size loaded for the batch duration at "
        f"{', '.join(map(str, connections))} connections, same run, same model files: our "
        "service (bentoml: its JSON on /predict_batch, V2 JSON and binary tensors, MLflow "
        "dataframe_split on /invocations), plain FastAPI (/predict_batch and a V2 route parsing "
        "the same V2 JSON into numpy), `mlflow models serve` and MLServer. One request is tried "
        "first: a size a server refuses (4xx, over its limits) is marked refused and not "
        "loaded; the answer is in the detail table and in bench.json.",
        "",
        *batch_table(batch),
        "",
        "| Server | Format | Model | Workers | Batch size | Connections | req/s | flowers/s | "
        "p99 ms | errors | server CPU µs/flower |",
        "|" + " --- |" * 11,
    ]
    for entry in batch:
        head = (
            f"| {entry['server']} | {_format_label(entry)} | {entry['model']} | "
            f"{entry['workers']} | {entry['batch_size']:,} |"
        )
        if "refused" in entry or "failed" in entry:
            key = "refused" if "refused" in entry else "failed"
            reason = str(entry[key]).replace("|", "\\|")  # a table cell
            lines.append(f"{head} {key}: {reason} |" + " |" * 5)
            continue
        lines.append(
            f"{head} {entry['connections']} | "
            f"{_fmt(entry['requests_per_s'])} | {_fmt(entry['rows_per_s'])} | "
            f"{_fmt(entry['latency_ms']['p99'], 1)} | {entry['errors']} | "
            f"{_fmt(entry['cpu_us_per_row'], 1)} |"
        )
    return lines


# --- Plots ----------------------------------------------------------------------------------


def write_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    paths: list[Path] = []
    runs = [r for r in result["runs"] if "requests_per_s" in r]
    if runs:
        labels = [
            r["name"] if r["phase"] == "main" else f"{r['name']}\n({r['phase']})" for r in runs
        ]
        colours = [SERVER_COLOURS.get(r["server"], "grey") for r in runs]
        figure, (top, bottom) = plt.subplots(
            2, 1, figsize=(max(8, len(runs) * 0.8), 8), sharex=True
        )
        positions = range(len(runs))
        top.bar(positions, [r["requests_per_s"] for r in runs], color=colours)
        top.set_ylabel("requests/s")
        top.legend(
            handles=[Patch(color=colour, label=server) for server, colour in SERVER_COLOURS.items()]
        )
        top.set_title(f"POST /predict at {result['settings'].get('connections', '?')} connections")
        bottom.bar(positions, [r["latency_ms"]["p99"] for r in runs], color=colours)
        objective = result["settings"].get("objective_p99_ms") or 50.0
        bottom.axhline(objective, color="red", linestyle="--", linewidth=1, label="p99 objective")
        bottom.set_ylabel("p99 latency (ms)")
        bottom.legend()
        bottom.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=8)
        figure.tight_layout()
        path = out_dir / "bench_throughput.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    batch = [b for b in result.get("batch", []) if "rows_per_s" in b]
    if batch:
        figure, axes = plt.subplots(figsize=(8, 5))
        series: dict[str, list[tuple[int, float]]] = {}
        for entry in batch:
            key = (
                f"{entry['server']} {entry.get('format', '')} {entry['model']} {entry['workers']}w"
            )
            series.setdefault(key, []).append((entry["batch_size"], entry["rows_per_s"]))
        for key, points in series.items():
            points.sort()
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("flowers per request")
        axes.set_ylabel("flowers classified per second")
        axes.set_title("Batch throughput")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / "bench_batch.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths
