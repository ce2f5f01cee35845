"""Capacity of one serving replica: from the benchmark's reports/bench.json, flags or defaults.

A *replica* is one server process group exactly as benchmarked (e.g. BentoML with 2 workers).
Its capacity is the requests/s the benchmark measured while p99 latency stayed within the SLO.
When bench.json has concurrency sweeps (a latency-throughput curve per server), a replica's
capacity is its capacity at the SLO: the highest throughput of the curve whose p99 stays
within it (tools/bench/capacity.py), with the CPU and latency measured at that point. That
replaces the single saturating run of the same name, whose p99 is mostly queueing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.capacity import best_point
from tools.finops.errors import FinOpsError

DEFAULT_BENCH = Path("reports/bench.json")
# Used when there is no benchmark output and no flags; clearly labelled in the report.
DEFAULT_RPS = 500.0
DEFAULT_VCPU = 2.0
DEFAULT_MEMORY_MB = 200.0
DEFAULT_COLD_START_S = 5.0
DEFAULT_LATENCY_MS = 20.0
MAX_ERROR_RATE = 0.01  # runs with more failed requests than this do not count
VCPU_STEP = 0.25  # replica CPU requests are rounded up to this (Kubernetes-style quarter cores)
OUR_SERVERS = ("bentoml", "bentoml-v2")
BASELINE_SERVERS = ("fastapi", "mlflow", "mlserver", "mlserver-batch")


@dataclass(frozen=True)
class ReplicaConfig:
    """One serving configuration and what a single replica of it needs and delivers."""

    name: str
    kind: str  # "bentoml", "baseline", "flags" or "default"
    rps: float  # sustained requests/s within the latency SLO
    vcpu: float
    memory_mb: float
    cold_start_s: float
    latency_ms: float  # typical (p50) request latency: the serverless billed duration
    p99_ms: float | None = None
    workers: int = 1
    source: str = ""
    estimated: tuple[str, ...] = ()  # fields that fell back to defaults

    @property
    def label(self) -> str:
        return f"{self.name} (baseline)" if self.kind == "baseline" else self.name

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        data["estimated"] = list(self.estimated)
        return data


@dataclass
class CapacityInput:
    configs: list[ReplicaConfig]
    source: str  # "bench", "flags" or "defaults"
    bench_path: str | None = None
    generated_at: str | None = None
    machine: str | None = None
    excluded: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def defaults(reason: str) -> CapacityInput:
    config = ReplicaConfig(
        name="default",
        kind="default",
        rps=DEFAULT_RPS,
        vcpu=DEFAULT_VCPU,
        memory_mb=DEFAULT_MEMORY_MB,
        cold_start_s=DEFAULT_COLD_START_S,
        latency_ms=DEFAULT_LATENCY_MS,
        source="built-in default (not measured)",
    )
    text = (
        f"DEFAULT capacity, not measured: {DEFAULT_RPS:g} req/s per replica at {DEFAULT_VCPU:g} "
        f"vCPU, {DEFAULT_MEMORY_MB:g} MB, cold start {DEFAULT_COLD_START_S:g} s ({reason})"
    )
    return CapacityInput([config], "defaults", notes=[text])


def from_flags(
    rps: float | None,
    vcpu: float | None,
    memory_mb: float | None,
    cold_start_s: float | None,
    latency_ms: float | None,
) -> CapacityInput:
    """One configuration from command-line flags; fields not given take the defaults."""
    given = {"rps": rps, "vcpu": vcpu, "memory_mb": memory_mb}
    given |= {"cold_start_s": cold_start_s, "latency_ms": latency_ms}
    for key, value in given.items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise FinOpsError(f"capacity {key} must be > 0, got {value}")
    fallback = {
        "rps": DEFAULT_RPS,
        "vcpu": DEFAULT_VCPU,
        "memory_mb": DEFAULT_MEMORY_MB,
        "cold_start_s": DEFAULT_COLD_START_S,
        "latency_ms": DEFAULT_LATENCY_MS,
    }
    estimated = tuple(k for k, v in given.items() if v is None)
    values = {k: (fallback[k] if v is None else float(v)) for k, v in given.items()}
    config = ReplicaConfig(
        name="flags",
        kind="flags",
        source="command-line flags",
        estimated=estimated,
        **values,
    )
    note = "capacity from command-line flags (the benchmark output is not used)"
    if estimated:
        note += f"; defaults used for {', '.join(estimated)}"
    return CapacityInput([config], "flags", notes=[note])


def load_bench(path: str | Path, slo_p99_ms: float) -> CapacityInput:
    """Serving configurations from the benchmark output; defaults if the file is missing.

    Only `phase: main` runs (or runs without a phase) of bentoml/fastapi/mlflow servers count,
    and only when p99 latency is within the SLO and errors stay under 1 % of requests.
    Unknown keys are ignored; missing per-run fields fall back to defaults and are listed.
    """
    path = Path(path)
    if not path.exists():
        return defaults(f"{path} not found; run the benchmark or pass --capacity-rps")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinOpsError(
            f"cannot read benchmark output {path}: {exc}; fix it or pass --no-bench"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise FinOpsError(f"benchmark output {path} has no 'runs' list; fix it or pass --no-bench")
    generated_at = _text(data.get("generated_at"))
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    machine_text = _machine_text(machine)
    configs: dict[str, ReplicaConfig] = {}
    excluded: list[tuple[str, str]] = []
    for index, run in enumerate(data["runs"]):
        if not isinstance(run, dict):
            excluded.append((f"run #{index}", "not an object"))
            continue
        name = _text(run.get("name")) or f"run-{index}"
        if run.get("phase", "main") != "main":
            continue  # start/end baselines check the machine's stability, not capacity
        if "skipped" in run:
            excluded.append((name, f"skipped: {run['skipped']}"))
            continue
        config, reason = _config(run, name, slo_p99_ms, generated_at)
        if config is None:
            excluded.append((name, reason))
        else:
            configs[name] = config  # a later run with the same name replaces an earlier one
    from_sweep = _sweep_configs(data.get("sweep"), slo_p99_ms, generated_at, excluded)
    for config in from_sweep:
        excluded[:] = [e for e in excluded if e[0] != config.name]
        configs[config.name] = config
    result = CapacityInput(
        list(configs.values()),
        "bench",
        bench_path=str(path),
        generated_at=generated_at,
        machine=machine_text,
        excluded=excluded,
    )
    if from_sweep:
        result.notes.append(
            f"capacity at the SLO from the benchmark's concurrency sweep for "
            f"{len(from_sweep)} configuration(s): the highest measured throughput whose p99 "
            f"<= {slo_p99_ms:g} ms"
        )
    if not any(c.kind == "bentoml" for c in result.configs):
        fallback = defaults(f"no BentoML run in {path} met the p99 <= {slo_p99_ms:g} ms SLO")
        fallback.excluded = excluded
        fallback.bench_path, fallback.generated_at = str(path), generated_at
        fallback.configs += [c for c in result.configs if c.kind == "baseline"]
        return fallback
    return result


def _sweep_configs(
    sweep: Any, slo_p99_ms: float, generated_at: str | None, excluded: list[tuple[str, str]]
) -> list[ReplicaConfig]:
    """One configuration per curve with a point within the SLO (its best such point)."""
    if not isinstance(sweep, list):
        return []
    configs = []
    for index, curve in enumerate(sweep):
        if not isinstance(curve, dict) or not isinstance(curve.get("points"), list):
            continue
        name = _text(curve.get("name")) or f"sweep-{index}"
        points = [p for p in curve["points"] if isinstance(p, dict)]
        point = best_point(points, slo_p99_ms, MAX_ERROR_RATE)
        if point is None:
            if not any(e[0] == name for e in excluded):
                excluded.append((name, f"no sweep point with p99 <= {slo_p99_ms:g} ms"))
            continue
        run = {k: v for k, v in curve.items() if k not in ("points", "capacity")} | point
        where = f"sweep at {point.get('connections', '?')} connections"
        config, reason = _config(run, name, slo_p99_ms, generated_at, where)
        if config is None:
            excluded.append((name, reason))
        else:
            configs.append(config)
    return configs


def _config(
    run: dict[str, Any],
    name: str,
    slo_p99_ms: float,
    generated_at: str | None,
    where: str = "",
) -> tuple[ReplicaConfig | None, str]:
    server = _text(run.get("server"))
    if server in OUR_SERVERS:
        kind = "bentoml"
    elif server in BASELINE_SERVERS:
        kind = "baseline"
    else:
        return None, f"unknown server {server!r}"
    rps = _number(run.get("requests_per_s"))
    if rps is None or rps <= 0:
        return None, "no requests_per_s"
    latency = run.get("latency_ms") if isinstance(run.get("latency_ms"), dict) else {}
    p99 = _number(latency.get("p99"))
    if p99 is None:
        return None, "no p99 latency"
    if p99 > slo_p99_ms:
        return None, f"p99 {p99:g} ms exceeds the {slo_p99_ms:g} ms SLO"
    errors = _number(run.get("errors")) or 0.0
    duration = _number(run.get("duration_s"))
    total = rps * duration if duration else None
    if errors > 0 and (total is None or errors / total > MAX_ERROR_RATE):
        return None, f"{errors:g} errors"
    workers = int(_number(run.get("workers")) or 1)
    estimated: list[str] = []
    cpu_ms = _number(run.get("cpu_ms_per_request"))
    if cpu_ms is not None and cpu_ms > 0:
        vcpu = max(VCPU_STEP, math.ceil(cpu_ms * rps / 1000 / VCPU_STEP) * VCPU_STEP)
    else:
        vcpu = float(workers)  # about one core per worker process
        estimated.append("vcpu")
    rss = _number(run.get("rss_mb_per_worker"))
    memory = rss * workers if rss else DEFAULT_MEMORY_MB * workers
    if not rss:
        estimated.append("memory_mb")
    cold = _number(run.get("cold_start_s"))
    if cold is None or cold < 0:
        cold = DEFAULT_COLD_START_S
        estimated.append("cold_start_s")
    p50 = _number(latency.get("p50"))
    if p50 is None or p50 <= 0:
        p50 = min(p99, DEFAULT_LATENCY_MS)
        estimated.append("latency_ms")
    model = _text(run.get("model"))
    source = f"bench run '{name}'" + (f" ({model})" if model else "")
    source += f", {where}" if where else ""
    source += f", generated {generated_at}" if generated_at else ", date unknown"
    config = ReplicaConfig(
        name=name,
        kind=kind,
        rps=rps,
        vcpu=vcpu,
        memory_mb=memory,
        cold_start_s=cold,
        latency_ms=p50,
        p99_ms=p99,
        workers=workers,
        source=source,
        estimated=tuple(estimated),
    )
    return config, ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int | float) and str(value) else None


def _machine_text(machine: dict[str, Any]) -> str | None:
    parts = []
    if _number(machine.get("cpus")):
        parts.append(f"{machine['cpus']:g} CPUs")
    if _text(machine.get("description")):
        parts.append(str(machine["description"]))
    return ", ".join(parts) or None
