"""The performance targets of issue 21, each marked met or not from the run's own numbers.

A target compares one measured value with a threshold (`<=` or `>=`). Its value comes from the
benchmark's runs (one saturating load per server), its concurrency sweeps (curves and
capacities at the p99 objective), its batches or the size of the last image; a target whose
inputs were not measured in this run (a server or model left out, a run that failed, no image
built) is "not measured", never met. Every ratio compares two servers of the same run, same
model files, on the same cores. Issue 21 supersedes the targets of issues 4, 12 and 16.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .models import FAMILIES, SHIPPED
from .servers import OUR_SERVERS

Run = dict[str, Any]
Measure = Callable[["Measured"], tuple[float | None, str]]

# The models the capacity targets are checked for: the shipped one and each family.
CAPACITY_MODELS = (SHIPPED, *FAMILIES)
# The model of the targets about one model (the shipped one; logistic regression when the
# shipped one was not benchmarked).
TARGET_MODELS = (SHIPPED, "logistic_regression")
TARGET_BATCH_SIZE = 1000
# Capacity ratios: ours over each peer's, at least this.
CAPACITY_PEERS = (
    ("fastapi", "plain FastAPI + scikit-learn (1 worker)", 2.0),
    ("mlserver", "MLServer defaults", 2.0),
    ("minimal-bentoml", "the minimal BentoML service", 0.8),
)
MODE_COST_MAX_PERCENT = 15.0


@dataclass(frozen=True)
class Measured:
    """Everything one benchmark run measured."""

    runs: list[Run]
    batch: list[Run] = field(default_factory=list)
    sweep: list[Run] = field(default_factory=list)
    objective_p99_ms: float = 50.0
    image: dict[str, Any] = field(default_factory=dict)
    connections: int = 50


@dataclass(frozen=True)
class Target:
    """One target: `value <= threshold` (or >=) over what the benchmark measured."""

    name: str
    threshold: float
    comparison: str  # "<=" or ">="
    unit: str
    measure: Measure

    def check(self, measured: Measured) -> dict[str, Any]:
        value, evidence = self.measure(measured)
        met = None
        if value is not None:
            met = value <= self.threshold if self.comparison == "<=" else value >= self.threshold
            # An infinite ratio (theirs 0) is met or not, but JSON has no number for it.
            value = round(value, 3) if math.isfinite(value) else None
        return {
            "name": self.name,
            "value": value,
            "threshold": self.threshold,
            "comparison": self.comparison,
            "unit": self.unit,
            "met": met,
            "evidence": evidence,
        }


def find_run(runs: list[Run], server: str, model: str, workers: int | None = None) -> Run | None:
    """The measured main-phase run of `server` with `model` (and `workers`, when given)."""
    for run in runs:
        if (
            run.get("phase") == "main"
            and run.get("server") == server
            and run.get("model") == model
            and (workers is None or run.get("workers") == workers)
            and "requests_per_s" in run
        ):
            return run
    return None


def find_curve(sweep: list[Run], server: str, model: str) -> Run | None:
    for curve in sweep:
        if (curve.get("server"), curve.get("model")) == (server, model) and curve.get("points"):
            return curve
    return None


def find_batch(
    batch: list[Run], server: str, format_name: str, model: str, size: int = TARGET_BATCH_SIZE
) -> Run | None:
    """The measured batch entry of one server, format, model and size."""
    wanted = (server, format_name, model, size)
    for entry in batch:
        keys = ("server", "format", "model", "batch_size")
        if tuple(entry.get(key) for key in keys) == wanted and "rows_per_s" in entry:
            return entry
    return None


def _why_missing(runs: list[Run], server: str, model: str) -> str:
    """'<run> failed: ...' for a run that was tried, else 'not measured'."""
    for run in runs:
        if (run.get("server"), run.get("model")) == (server, model) and "failed" in run:
            return f"{run['name']} failed: {run['failed']}"
    return f"{server} with {model} not measured"


def _ratio_of(ours: float, theirs: float) -> float:
    if theirs > 0:
        return ours / theirs
    return math.inf if ours > 0 else 0.0


def _split(run: Run) -> str:
    split = run.get("connection_split")
    if split:
        return " / ".join(map(str, split))
    return "all (1 worker)" if run.get("workers") == 1 else "?"


def _throughput_ratio(models: tuple[str, ...], baseline: str, server: str = "bentoml") -> Measure:
    """req/s of `server` over `baseline`'s at the saturating load, same model (the first of
    `models` measured for both)."""

    def measure(measured: Measured) -> tuple[float | None, str]:
        for model in models:
            ours = find_run(measured.runs, server, model)
            theirs = find_run(measured.runs, baseline, model)
            if ours and theirs and theirs["requests_per_s"]:
                break
        else:
            mine = [m for m in models if find_run(measured.runs, server, m)]
            if mine:
                return None, _why_missing(measured.runs, baseline, mine[0])
            return None, _why_missing(measured.runs, server, models[0])
        evidence = (
            f"{ours['name']} {ours['requests_per_s']:.0f} req/s vs "
            f"{theirs['name']} {theirs['requests_per_s']:.0f} req/s at "
            f"{ours['connections']} connections"
        )
        if "connection_split" in ours or "connection_split" in theirs:
            evidence += f"; connections per worker {_split(ours)} vs {_split(theirs)}"
        return ours["requests_per_s"] / theirs["requests_per_s"], evidence

    return measure


def _at(curve: Run) -> str:
    capacity = curve["capacity"]
    if capacity.get("connections") is None:
        return "no point within the objective"
    return f"{capacity['connections']} conn, p99 {capacity['p99_ms']:.1f} ms"


def _capacity_ratio(model: str, baseline: str, server: str = "bentoml") -> Measure:
    """Capacity at the p99 objective of `server` over `baseline`'s, same model."""

    def measure(measured: Measured) -> tuple[float | None, str]:
        ours = find_curve(measured.sweep, server, model)
        theirs = find_curve(measured.sweep, baseline, model)
        if not ours or not theirs:
            missing = server if not ours else baseline
            return None, _why_missing(measured.runs, missing, model) + " (no sweep)"
        mine, other = ours["capacity"]["requests_per_s"], theirs["capacity"]["requests_per_s"]
        if not mine and not other:
            return None, (
                f"neither {ours['name']} nor {theirs['name']} had a point within p99 <= "
                f"{measured.objective_p99_ms:g} ms"
            )
        return _ratio_of(mine, other), (
            f"{ours['name']} {mine:.0f} req/s ({_at(ours)}) vs {theirs['name']} {other:.0f} "
            f"req/s ({_at(theirs)}) at p99 <= {measured.objective_p99_ms:g} ms"
        )

    return measure


def _mode_cost(mode_server: str) -> Measure:
    """Capacity lost with a challenger mode on, in % of the capacity with mode none."""

    def measure(measured: Measured) -> tuple[float | None, str]:
        for model in CAPACITY_MODELS:
            mode = find_curve(measured.sweep, mode_server, model)
            none = find_curve(measured.sweep, "bentoml", model)
            if mode and none:
                break
        else:
            return None, _why_missing(measured.runs, mode_server, SHIPPED) + " (no sweep)"
        with_mode = mode["capacity"]["requests_per_s"]
        without = none["capacity"]["requests_per_s"]
        if not without:
            return None, f"{none['name']} had no point within the objective"
        cost = max(0.0, (1 - with_mode / without) * 100)
        return cost, (
            f"{mode['name']} {with_mode:.0f} req/s ({_at(mode)}) vs {none['name']} "
            f"{without:.0f} req/s ({_at(none)}) at p99 <= {measured.objective_p99_ms:g} ms"
        )

    return measure


def _point_at(curve: Run | None, connections: int) -> Run | None:
    if not curve:
        return None
    return next((p for p in curve["points"] if p.get("connections") == connections), None)


def _one_connection(measured: Measured) -> tuple[float | None, str]:
    """Median latency with one connection, ours over plain FastAPI's (same model)."""
    for model in TARGET_MODELS:
        ours = _point_at(find_curve(measured.sweep, "bentoml", model), 1)
        theirs = _point_at(find_curve(measured.sweep, "fastapi", model), 1)
        if ours and theirs and theirs["latency_ms"]["p50"] > 0:
            mine, other = ours["latency_ms"]["p50"], theirs["latency_ms"]["p50"]
            return mine / other, (
                f"p50 at 1 connection, {model}: bentoml {mine:.2f} ms vs fastapi {other:.2f} ms"
            )
    return None, "no sweep point at 1 connection for both bentoml and fastapi"


def _batch_text(entry: Run) -> str:
    return (
        f"{entry['server']} {entry['format']} ({entry['model']}, {entry['batch_size']:,} flowers "
        f"x {entry['connections']} conn) {entry['rows_per_s']:,.0f} flowers/s"
    )


def _batch_missing(batch: list[Run], server: str, format_name: str) -> str:
    for entry in batch:
        if (entry.get("server"), entry.get("format"), entry.get("batch_size")) == (
            server,
            format_name,
            TARGET_BATCH_SIZE,
        ):
            for key in ("refused", "failed"):
                if key in entry:
                    return f"{server} {format_name} {entry['model']} {key}: {entry[key]}"
    return f"{server} {format_name} at {TARGET_BATCH_SIZE:,} flowers per request not measured"


def _batch_vs_peer(format_name: str, peer: str = "fastapi", peer_format: str = "v2") -> Measure:
    """Flowers/s of our service in `format_name` over `peer`'s in `peer_format`, same model."""

    def measure(measured: Measured) -> tuple[float | None, str]:
        models = [m for m in CAPACITY_MODELS if m in TARGET_MODELS] + list(CAPACITY_MODELS)
        for model in dict.fromkeys(models):
            ours = find_batch(measured.batch, "bentoml", format_name, model)
            theirs = find_batch(measured.batch, peer, peer_format, model)
            if ours and theirs:
                return _ratio_of(ours["rows_per_s"], theirs["rows_per_s"]), (
                    f"{_batch_text(ours)} vs {_batch_text(theirs)}"
                )
        if not any(find_batch(measured.batch, "bentoml", format_name, m) for m in models):
            return None, _batch_missing(measured.batch, "bentoml", format_name)
        return None, _batch_missing(measured.batch, peer, peer_format)

    return measure


def _our_runs(measured: Measured) -> list[Run]:
    return [r for r in measured.runs if r.get("server") in OUR_SERVERS and r.get("phase") == "main"]


def _worst(key: str, label: str) -> Measure:
    def measure(measured: Measured) -> tuple[float | None, str]:
        values = [(r[key], r["name"]) for r in _our_runs(measured) if r.get(key) is not None]
        if not values:
            return None, "not measured"
        value, name = max(values)
        return value, f"{label} of {len(values)} runs of our service: {name}"

    return measure


def _cpu_per_request(measured: Measured) -> tuple[float | None, str]:
    for model in TARGET_MODELS:
        run = find_run(measured.runs, "bentoml", model)
        if run:
            return run["cpu_ms_per_request"], (
                f"{run['name']} at {run['connections']} connections, whole process tree "
                f"({run.get('api_worker_processes', '?')} API worker processes)"
            )
    return None, _why_missing(measured.runs, "bentoml", SHIPPED)


def _image_size(measured: Measured) -> tuple[float | None, str]:
    image = measured.image or {}
    if "size_mb" not in image:
        return None, image.get("not_measured", "no image size recorded")
    return float(image["size_mb"]), f"{image.get('tag', '?')} ({image.get('backend', '?')})"


def _shipped_errors(measured: Measured) -> tuple[float | None, str]:
    loads = [
        r
        for r in measured.runs + measured.batch
        if r.get("server") in OUR_SERVERS and "errors" in r
    ]
    points = [
        p for c in measured.sweep if c.get("server") in OUR_SERVERS for p in c.get("points", [])
    ]
    failed = [r for r in measured.runs if r.get("server") in OUR_SERVERS and "failed" in r]
    if not loads and not failed and not points:
        return None, "not measured"
    total = sum(r["errors"] for r in loads + points) + len(failed)
    return float(total), (
        f"non-2xx (429 included) and socket errors over {len(loads)} load runs (incl. batch) "
        f"and {len(points)} sweep steps of our service, {len(failed)} failed runs"
    )


def checks(objective_p99_ms: float, connections: int = 50) -> list[Target]:
    capacity = f"capacity at p99 <= {objective_p99_ms:g} ms"
    batch = f"{TARGET_BATCH_SIZE:,}-flower batches"
    targets = [
        Target("errors of the shipped service (every run, 429 included)", 0, "<=", "errors",
               _shipped_errors),
    ]  # fmt: skip
    for model in CAPACITY_MODELS:
        for peer, label, threshold in CAPACITY_PEERS:
            targets.append(
                Target(f"{capacity}, {model}: vs {label}", threshold, ">=", "x",
                       _capacity_ratio(model, peer))
            )  # fmt: skip
    for family in FAMILIES:
        targets.append(
            Target(f"{connections} connections, /predict, {family}: vs plain FastAPI + "
                   "scikit-learn (1 worker)", 2.0, ">=", "x",
                   _throughput_ratio((family,), "fastapi"))
        )  # fmt: skip
    targets += [
        Target(f"V2 one flower, {connections} connections: vs MLServer defaults (identical V2 "
               "bodies)", 2.0, ">=", "x",
               _throughput_ratio(TARGET_MODELS, "mlserver", server="bentoml-v2")),
        Target("1 connection: median latency vs plain FastAPI", 1.0, "<=", "x", _one_connection),
        Target(f"{batch}, /predict_batch: vs FastAPI parsing V2 JSON into numpy", 2.0, ">=", "x",
               _batch_vs_peer("service")),
        Target(f"{batch}, V2 binary: vs FastAPI parsing V2 JSON into numpy", 2.0, ">=", "x",
               _batch_vs_peer("v2-binary")),
        Target("server CPU per one-flower request", 1.0, "<=", "ms", _cpu_per_request),
        Target("cold start: process start to the first 200 on the prediction route", 5.0, "<=",
               "s", _worst("cold_start_s", "slowest")),
        Target("resident memory per process", 200.0, "<=", "MB",
               _worst("rss_mb_per_worker", "largest process")),
        Target("image size (last `make container`)", 400.0, "<=", "MB", _image_size),
        Target(f"shadow mode: cost in {capacity}", MODE_COST_MAX_PERCENT, "<=", "%",
               _mode_cost("bentoml-shadow")),
        Target(f"canary mode: cost in {capacity}", MODE_COST_MAX_PERCENT, "<=", "%",
               _mode_cost("bentoml-canary")),
    ]  # fmt: skip
    return targets


def targets(measured: Measured) -> list[dict[str, Any]]:
    results = [c.check(measured) for c in checks(measured.objective_p99_ms, measured.connections)]
    errors = results[0]  # met only at exactly zero
    if errors["value"] is not None:
        errors["met"] = errors["value"] == 0
    return results
