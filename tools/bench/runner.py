"""One benchmark run: train the models, then start, warm up, load and stop every server.

Order: baselines (start) -> for each model, every server -> baselines (end), so that the
comparison runs are close in time and the drift of the machine is visible. Our service, the
minimal BentoML service and FastAPI + ONNX Runtime run with our API worker count; the other
peers with 1 worker. Every server except bentoml-v2 is also swept over connection counts
(sweep.py): its latency-throughput curve and its capacity at the p99 objective. Batches,
the V2 route and the challenger modes are measured with the primary model only (the shipped
one when it is measured), to keep the whole matrix within about 45 minutes on 2 cores.
"""

from __future__ import annotations

import http.client
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iris_service.errors import first_line
from tools.local_server import HOST, ProjectState

from . import payloads, servers
from .capacity import DEFAULT_OBJECTIVE_P99_MS
from .image import last_image
from .load import LoadResult, ensure_wrk, run_wrk
from .models import FAMILIES, SHIPPED, BenchModel, ensure_trained
from .resources import ProcessTreeMonitor, TreeUsage, wait_quiet
from .servers import ServerSettings
from .sweep import DEFAULT_CONNECTIONS, run_sweep

logger = logging.getLogger("tools.bench")

PAUSE_BETWEEN_RUNS_S = 1.0
# The request tried before loading a batch size: its timeout, and how much of a refusal is kept.
PROBE_TIMEOUT_S = 30
PROBE_ANSWER_CHARS = 200
SETTLE_AFTER_WARMUP_S = 1.0


@dataclass
class Options:
    out_dir: Path
    state_dir: Path
    duration_s: float = 20
    warmup_s: float = 3
    connections: int = 50
    threads: int = 1
    servers: tuple[str, ...] = servers.DEFAULT_SERVERS
    models: tuple[str, ...] = (SHIPPED, *FAMILIES)
    # API workers of our service and of the peers that run with ours (None: as shipped).
    api_workers: int | None = None
    batch_sizes: tuple[int, ...] = (1, 100, 1000, 10000)
    batch_duration_s: float = 4
    batch_connections: int = 8
    baseline_servers: tuple[str, ...] = ("fastapi",)
    baseline_model: str = "logistic_regression"
    # The concurrency sweep (empty: none), seconds per step, and the latency objective.
    sweep_connections: tuple[int, ...] = DEFAULT_CONNECTIONS
    sweep_duration_s: float = 5
    objective_p99_ms: float = DEFAULT_OBJECTIVE_P99_MS
    server_settings: ServerSettings = field(default_factory=ServerSettings)


@dataclass
class Results:
    runs: list[dict[str, Any]] = field(default_factory=list)
    batch: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)


def machine() -> dict[str, Any]:
    cpu_model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        wrk_version = (wrk.stdout or wrk.stderr).split("Copyright")[0].strip()
    except OSError:
        wrk_version = "wrk ?"
    cpus = os.cpu_count() or 1
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    description = (
        f"{cpus} CPUs ({cpu_model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {_versions()}, {wrk_version}"
    )
    return {"cpus": cpus, "description": description, "load_average_at_end": load}


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("bentoml", "mlflow", "scikit-learn", "fastapi", "uvicorn"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def run_name(server: str, model: BenchModel, workers: int) -> str:
    return f"{server}-{model.short}-{workers}w"


def primary_model(models: tuple[str, ...]) -> str:
    """The model batches, the V2 route and the challenger modes are measured with."""
    return SHIPPED if SHIPPED in models else models[0]


def workers_of(server: str, api_workers: int) -> int:
    return api_workers if server in servers.WITH_OUR_WORKERS else 1


def measured_load(
    running: servers.RunningServer,
    path: str,
    bodies: list[str],
    duration_s: float,
    connections: int,
    threads: int,
) -> tuple[LoadResult, TreeUsage]:
    monitor = ProcessTreeMonitor(running.local.process.pid, running.port)
    monitor.start()
    try:
        load = run_wrk(running.url, path, bodies, duration_s, connections, threads)
    finally:
        usage = monitor.stop()
    return load, usage


def run_record(
    running: servers.RunningServer,
    phase: str,
    options: Options,
    load: LoadResult,
    usage: TreeUsage,
) -> dict[str, Any]:
    answered = max(load.requests, 1)
    record: dict[str, Any] = {
        "name": run_name(running.server, running.model, running.workers),
        "server": running.server,
        "model": running.model.family,
        "estimator": running.model.estimator,
        "workers": running.workers,
        "phase": phase,
        "connections": options.connections,
        "duration_s": round(load.duration_s, 2),
        "requests": load.requests,
        "requests_per_s": round(load.requests_per_s, 1),
        "latency_ms": load.latency_ms,
        "errors": load.errors,
        "non_2xx": load.non_2xx,
        "socket_errors": load.socket_errors,
        "cpu_ms_per_request": round(usage.cpu_s * 1000 / answered, 3),
        "server_cpu_cores": round(usage.cpu_s / load.duration_s, 2) if load.duration_s else None,
        "rss_mb_per_worker": round(usage.peak_rss_mb_per_process, 1),
        "rss_mb_total": round(usage.rss_mb_total, 1),
        "api_worker_processes": usage.api_worker_processes,
        "cold_start_s": round(running.cold_start_s or 0.0, 2),
        "loadgen_cpu_ms_per_request": round(load.loadgen_cpu_s * 1000 / answered, 3),
        "model_tag": running.model.tag,
        "processes": [
            {"role": p.role, "peak_rss_mb": round(p.peak_rss_mb, 1), "cpu_s": round(p.cpu_s, 2)}
            for p in usage.processes
        ],
    }
    if running.workers > 1:
        record["connection_split"] = usage.connection_split
    return record


def probe(port: int, path: str, body: payloads.Body) -> tuple[int | None, str]:
    """Status and the start of the answer of one request (None: no answer)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("POST", path, body=body.content, headers=dict(body.headers))
        response = connection.getresponse()
        text = response.read(PROBE_ANSWER_CHARS).decode(errors="replace")
        return response.status, " ".join(text.split())
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def batch_records(running: servers.RunningServer, options: Options) -> list[dict[str, Any]]:
    """Flowers/s for each of the server's batch formats and each batch size. One request is
    tried first: a size the server refuses (4xx: over its limits, e.g. our service's
    IRIS_MAX_BATCH_FLOWERS) is recorded as refused with its answer, not loaded."""
    records = []
    for format_name in running.endpoints.batch_formats:
        path = servers.BATCH_PATHS[format_name]
        for size in options.batch_sizes:
            records.append(_batch_record(running, options, format_name, path, size))
    return records


def _batch_record(
    running: servers.RunningServer, options: Options, format_name: str, path: str, size: int
) -> dict[str, Any]:
    bodies = [payloads.batch_request(format_name, size, offset) for offset in range(3)]
    entry: dict[str, Any] = {
        "server": running.server,
        "model": running.model.family,
        "workers": running.workers,
        "format": format_name,
        "path": path,
        "batch_size": size,
        "connections": options.batch_connections,
    }
    status, answer = probe(running.port, path, bodies[0])
    if status is not None and 400 <= status < 500:
        logger.info("  %s batch %5d: refused, HTTP %d", format_name, size, status)
        return entry | {"refused": f"HTTP {status}: {answer}"}
    try:
        if status != 200:
            raise RuntimeError(f"one request answered {status}: {answer}")
        load, usage = measured_load(
            running,
            path,
            bodies,
            options.batch_duration_s,
            options.batch_connections,
            options.threads,
        )
    except (RuntimeError, ValueError) as exc:
        return entry | {"failed": first_line(exc, None)}
    if load.requests == 0:  # slower than the run: no throughput, no latency to report
        return entry | {"failed": f"no answer within the {load.duration_s:.1f} s run"}
    rows = load.requests * size
    entry |= {
        "duration_s": round(load.duration_s, 2),
        "requests_per_s": round(load.requests_per_s, 1),
        "rows_per_s": round(rows / load.duration_s, 1) if load.duration_s else 0.0,
        "latency_ms": load.latency_ms,
        "errors": load.errors,
        "non_2xx": load.non_2xx,
        "socket_errors": load.socket_errors,
        "cpu_us_per_row": round(usage.cpu_s * 1e6 / max(rows, 1), 2),
    }
    logger.info(
        "  %s batch %5d: %8.0f rows/s, p99 %.1f ms, %d errors",
        format_name,
        size,
        entry["rows_per_s"],
        load.latency_ms["p99"],
        load.errors,
    )
    return entry


def sweep_record(
    running: servers.RunningServer, record: dict[str, Any], bodies: list[str], options: Options
) -> dict[str, Any]:
    """The server's latency-throughput curve over options.sweep_connections."""

    def load_at(connections: int) -> tuple[LoadResult, TreeUsage]:
        return measured_load(
            running,
            running.endpoints.predict,
            bodies,
            options.sweep_duration_s,
            connections,
            options.threads,
        )

    curve = run_sweep(load_at, options.sweep_connections, options.objective_p99_ms, record["name"])
    keys = ("name", "server", "model", "estimator", "workers", "cold_start_s", "rss_mb_per_worker")
    return {key: record[key] for key in keys} | {"path": running.endpoints.predict} | curve


def measure(
    server: str,
    model: BenchModel,
    workers: int,
    phase: str,
    options: Options,
    state: ProjectState,
    with_batches: bool,
    with_sweep: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """Start one server, measure it, stop it. A server that fails to start, to answer a
    prediction or to answer anything in its run becomes a `failed` record."""
    name = run_name(server, model, workers)
    logger.info("%s (%s): starting", name, phase)
    log_dir = options.out_dir / "bench-logs"
    try:
        running = servers.start(server, model, workers, state, log_dir, options.server_settings)
    except (RuntimeError, TimeoutError, ValueError) as exc:
        logger.error("%s failed to start: %s", name, exc)
        return _failed(server, model, workers, phase, options, exc), [], None
    curve = None
    try:
        logger.info("%s: first answer %.2f s after start, warming up", name, running.cold_start_s)
        predict_bodies = payloads.single_bodies(running.endpoints.protocol)
        if options.warmup_s > 0:
            run_wrk(
                running.url,
                running.endpoints.predict,
                predict_bodies,
                options.warmup_s,
                options.connections,
                options.threads,
            )
            # When the warm-up's wrk exits, the requests it left in flight are still being
            # answered; starting the measured run at once would put up to twice the
            # connections' worth of requests in flight (and trip the admission limit).
            time.sleep(SETTLE_AFTER_WARMUP_S)
        load, usage = measured_load(
            running,
            running.endpoints.predict,
            predict_bodies,
            options.duration_s,
            options.connections,
            options.threads,
        )
        if load.requests == 0:
            raise RuntimeError(f"no answer within the {load.duration_s:.1f} s run")
        record = run_record(running, phase, options, load, usage)
        logger.info(
            "%s: %.0f req/s, p99 %.1f ms, %d errors, %.2f CPU ms/req",
            name,
            record["requests_per_s"],
            record["latency_ms"]["p99"],
            record["errors"],
            record["cpu_ms_per_request"],
        )
        batches = batch_records(running, options) if with_batches else []
        if with_sweep and options.sweep_connections:
            curve = sweep_record(running, record, predict_bodies, options)
    except (RuntimeError, ValueError) as exc:
        logger.error("%s failed: %s", name, exc)
        return _failed(server, model, workers, phase, options, exc), [], None
    finally:
        running.stop()
        wait_quiet(PAUSE_BETWEEN_RUNS_S)
    return record, batches, curve


def _failed(
    server: str,
    model: BenchModel,
    workers: int,
    phase: str,
    options: Options,
    exc: Exception,
) -> dict[str, Any]:
    return {
        "name": run_name(server, model, workers),
        "server": server,
        "model": model.family,
        "workers": workers,
        "phase": phase,
        "connections": options.connections,
        "failed": f"{type(exc).__name__}: {first_line(exc, None)}",
    }


def run(options: Options) -> dict[str, Any]:
    """The whole benchmark; returns the bench.json document (not yet written)."""
    from . import report

    ensure_wrk()
    load_at_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    state = ProjectState(options.state_dir)
    families = list(dict.fromkeys([*options.models, options.baseline_model]))
    models = {}
    for family in families:
        logger.info("training %s into %s (unless present)", family, state.root)
        models[family] = ensure_trained(state, family)
    results = Results()
    baseline_model = models[options.baseline_model]

    def baselines(phase: str) -> None:
        for server in options.baseline_servers:
            record, _, _ = measure(server, baseline_model, 1, phase, options, state, False)
            results.runs.append(record)

    api_workers = options.api_workers or servers.shipped_api_workers()
    primary = primary_model(options.models)
    baselines("baseline_start")
    for family in options.models:
        for server in options.servers:
            if server in servers.PRIMARY_MODEL_ONLY and family != primary:
                continue
            record, batches, curve = measure(
                server,
                models[family],
                workers_of(server, api_workers),
                "main",
                options,
                state,
                with_batches=family == primary and bool(options.batch_sizes),
                with_sweep=server not in servers.NOT_SWEPT,
            )
            results.runs.append(record)
            results.batch.extend(batches)
            if curve is not None:
                results.sweep.append(curve)
    baselines("baseline_end")
    settings = {
        "connections": options.connections,
        "threads": options.threads,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "batch_duration_s": options.batch_duration_s,
        "batch_connections": options.batch_connections,
        "models": {family: model.tag for family, model in models.items()},
        "estimators": {family: model.estimator for family, model in models.items()},
        "load_average_at_start": load_at_start,
        "api_workers": api_workers,
        "api_workers_shipped": servers.shipped_api_workers(),
        "primary_model": primary,
        "sweep_connections": list(options.sweep_connections),
        "sweep_duration_s": options.sweep_duration_s,
        "objective_p99_ms": options.objective_p99_ms,
        "mlserver_batching": {
            "max_batch_size": options.server_settings.mlserver_batching.max_batch_size,
            "max_batch_time_s": options.server_settings.mlserver_batching.max_batch_time_s,
        },
    }
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    return report.build(
        generated_at,
        machine(),
        settings,
        results.runs,
        results.batch,
        results.sweep,
        image=last_image(),
    )
