"""FinOps inputs: the price catalogue, traffic profiles and CSV, and the benchmark output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.finops import capacity
from tools.finops.catalogue import DEFAULT_PRICES, load_catalogue
from tools.finops.errors import FinOpsError
from tools.finops.traffic import (
    MINUTES_PER_DAY,
    MINUTES_PER_MONTH,
    constant,
    diurnal,
    from_csv,
    spiky,
)

INSTANCE = """
instances:
  - name: a
    provider: aws
    region: us-east-1
    vcpu: 2
    memory_gib: 4
    on_demand_per_hour: 0.1
    spot_per_hour: 0.04
    source: https://example.com
    date: 2025-01-31
"""

BENCH = {
    "generated_at": "2026-11-20T10:00:00Z",
    "machine": {"cpus": 2, "description": "test box", "kernel": "ignored"},
    "unknown_top_level": [1, 2],
    "runs": [
        {
            "name": "bentoml-lr-1w",
            "server": "bentoml",
            "model": "logistic_regression",
            "workers": 1,
            "phase": "main",
            "duration_s": 20,
            "requests_per_s": 600.0,
            "latency_ms": {"p50": 40, "p95": 80, "p99": 95},
            "errors": 0,
            "cpu_ms_per_request": 1.7,
            "rss_mb_per_worker": 180,
            "cold_start_s": 3.2,
            "something_new": True,
        },
        {
            "name": "bentoml-lr-2w",
            "server": "bentoml",
            "workers": 2,
            "requests_per_s": 1000.0,
            "latency_ms": {"p99": 70},
        },
        {
            "name": "bentoml-rf-1w",
            "server": "bentoml",
            "requests_per_s": 200.0,
            "latency_ms": {"p99": 400},
        },
        {
            "name": "bentoml-lr-1w",
            "server": "bentoml",
            "phase": "baseline_start",
            "requests_per_s": 5.0,
            "latency_ms": {"p99": 10},
        },
        {
            "name": "fastapi-lr-1w",
            "server": "fastapi",
            "requests_per_s": 900.0,
            "latency_ms": {"p50": 20, "p99": 50},
        },
        {
            "name": "flaky",
            "server": "bentoml",
            "duration_s": 10,
            "requests_per_s": 100.0,
            "latency_ms": {"p99": 50},
            "errors": 500,
        },
        "not a run",
    ],
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- price catalogue ------------------------------------------------------------------------


def test_shipped_catalogue_covers_two_clouds_and_serverless() -> None:
    catalogue = load_catalogue()
    assert catalogue.path.endswith("prices.yaml")
    assert {"aws", "gcp"} <= {i.provider for i in catalogue.instances}
    assert catalogue.serverless
    for instance in catalogue.instances:
        assert 0 < instance.spot_per_hour <= instance.on_demand_per_hour
        assert instance.source.startswith("https://") and instance.date
    assert DEFAULT_PRICES.is_file()


def test_custom_catalogue_loads(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path, "p.yaml", INSTANCE))
    (instance,) = catalogue.instances
    assert instance.date == "2025-01-31"
    assert instance.price_per_hour(0.5) == pytest.approx(0.07)
    assert catalogue.serverless == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instances: [", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("instances: []\n", "non-empty list"),
        (INSTANCE.replace("    vcpu: 2\n", ""), "instances 'a': missing 'vcpu'"),
        (INSTANCE.replace("vcpu: 2", "vcpu: two"), "'vcpu' must be a number"),
        (INSTANCE.replace("on_demand_per_hour: 0.1", "on_demand_per_hour: -1"), "must be > 0"),
        (INSTANCE.replace("spot_per_hour: 0.04", "spot_per_hour: 0.5"), "exceeds on_demand"),
        (INSTANCE.replace("date: 2025-01-31", "date: last week"), "YYYY-MM"),
        (INSTANCE.replace("    source: https://example.com\n", ""), "missing 'source'"),
        (INSTANCE + INSTANCE.replace("instances:\n", ""), "duplicate names a"),
        (INSTANCE + "serverless:\n  - name: f\n", "serverless 'f': missing 'provider'"),
    ],
)
def test_bad_catalogue_is_rejected_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(FinOpsError, match=message):
        load_catalogue(write(tmp_path, "p.yaml", text))


def test_missing_catalogue_file(tmp_path: Path) -> None:
    with pytest.raises(FinOpsError, match="cannot read price catalogue"):
        load_catalogue(tmp_path / "nope.yaml")


# --- traffic --------------------------------------------------------------------------------


def test_synthetic_profiles_cover_a_month_with_the_requested_peak() -> None:
    for traffic in (constant(300.0), diurnal(300.0, 0.25), spiky(300.0, seed=1)):
        assert len(traffic.rps) == MINUTES_PER_MONTH == 43_200
        assert traffic.peak_rps == pytest.approx(300.0)
        assert traffic.rps.min() >= 0
    day = diurnal(300.0, trough_ratio=0.25, peak_hour=14).rps[:MINUTES_PER_DAY]
    assert day.argmax() == 14 * 60 and day.min() == pytest.approx(75.0)
    assert constant(300.0).total_requests == pytest.approx(300 * 60 * MINUTES_PER_MONTH)


def test_spiky_has_bursts_and_is_reproducible() -> None:
    a, b = spiky(1000.0, base_ratio=0.3, seed=7), spiky(1000.0, base_ratio=0.3, seed=7)
    np.testing.assert_array_equal(a.rps, b.rps)
    bursting = a.rps > 300.0 + 1e-9
    assert 0 < bursting.mean() < 0.1
    assert not np.array_equal(a.rps, spiky(1000.0, seed=8).rps)


def test_csv_with_header_is_repeated_to_a_month_and_rescaled(tmp_path: Path) -> None:
    lines = ["timestamp,requests"] + [f"2026-01-01T00:{m:02d},{60 * (m + 1)}" for m in range(60)]
    path = write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    traffic = from_csv(path)
    assert len(traffic.rps) == MINUTES_PER_MONTH
    assert traffic.rps[:3].tolist() == [1.0, 2.0, 3.0]  # requests per minute / 60
    assert traffic.rps[60] == 1.0 and "repeated" in traffic.notes[0]
    assert from_csv(path, peak_rps=120.0).peak_rps == pytest.approx(120.0)


def test_csv_without_header_single_column(tmp_path: Path) -> None:
    values = "\n".join(str(600) for _ in range(MINUTES_PER_MONTH + 10))
    traffic = from_csv(write(tmp_path, "t.csv", values))
    assert traffic.rps.tolist() == [10.0] * MINUTES_PER_MONTH
    assert "first 43200" in traffic.notes[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("requests\n", "no data rows"),
        ("requests\n10\nlots\n", "line 3: 'lots' is not a number"),
        ("5\n-3\n", "line 2: negative request count"),
        ("0\n0\n", "no requests at all"),
    ],
)
def test_bad_csv_is_rejected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FinOpsError, match=message):
        from_csv(write(tmp_path, "t.csv", text))


def test_bad_peak_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FinOpsError, match="peak requests/s must be > 0"):
        diurnal(0.0)
    with pytest.raises(FinOpsError, match="cannot read traffic CSV"):
        from_csv(tmp_path / "missing.csv")


# --- capacity -------------------------------------------------------------------------------


def test_bench_runs_become_serving_configurations(tmp_path: Path) -> None:
    path = write(tmp_path, "bench.json", json.dumps(BENCH))
    result = capacity.load_bench(path, slo_p99_ms=100.0)
    by_name = {c.name: c for c in result.configs}
    assert list(by_name) == ["bentoml-lr-1w", "bentoml-lr-2w", "fastapi-lr-1w"]
    one = by_name["bentoml-lr-1w"]
    assert one.rps == 600.0  # the main run, not the baseline_start phase
    assert one.vcpu == 1.25  # 1.7 ms x 600/s = 1.02 cores, rounded up to a quarter
    assert (one.memory_mb, one.cold_start_s, one.latency_ms) == (180.0, 3.2, 40.0)
    assert "generated 2026-11-20T10:00:00Z" in one.source
    two = by_name["bentoml-lr-2w"]
    assert two.memory_mb == 400.0 and two.vcpu == 2.0
    assert set(two.estimated) == {"vcpu", "memory_mb", "cold_start_s", "latency_ms"}
    assert by_name["fastapi-lr-1w"].kind == "baseline"
    assert by_name["fastapi-lr-1w"].label == "fastapi-lr-1w (baseline)"
    excluded = dict(result.excluded)
    assert "exceeds the 100 ms SLO" in excluded["bentoml-rf-1w"]
    assert "errors" in excluded["flaky"]
    assert result.generated_at == "2026-11-20T10:00:00Z"
    assert result.machine == "2 CPUs, test box"


def test_stricter_slo_drops_runs(tmp_path: Path) -> None:
    path = write(tmp_path, "bench.json", json.dumps(BENCH))
    result = capacity.load_bench(path, slo_p99_ms=80.0)
    assert [c.name for c in result.configs] == ["bentoml-lr-2w", "fastapi-lr-1w"]


def test_missing_bench_uses_labelled_defaults(tmp_path: Path) -> None:
    result = capacity.load_bench(tmp_path / "bench.json", slo_p99_ms=100.0)
    (config,) = result.configs
    assert result.source == "defaults" and config.kind == "default"
    assert config.rps == capacity.DEFAULT_RPS
    assert "DEFAULT capacity, not measured" in result.notes[0]


def test_no_bentoml_run_within_slo_falls_back_to_defaults_keeping_baselines(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "bench.json", json.dumps(BENCH))
    result = capacity.load_bench(path, slo_p99_ms=60.0)
    assert [c.kind for c in result.configs] == ["default", "baseline"]
    assert "no BentoML run" in result.notes[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "cannot read benchmark output"), ('{"runs": 3}', "no 'runs' list")],
)
def test_corrupt_bench_is_rejected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FinOpsError, match=message):
        capacity.load_bench(write(tmp_path, "bench.json", text), slo_p99_ms=100.0)


def test_flags_define_one_configuration() -> None:
    result = capacity.from_flags(250.0, 1.0, None, None, 12.0)
    (config,) = result.configs
    assert (config.rps, config.vcpu, config.latency_ms) == (250.0, 1.0, 12.0)
    assert config.memory_mb == capacity.DEFAULT_MEMORY_MB
    assert set(config.estimated) == {"memory_mb", "cold_start_s"}
    with pytest.raises(FinOpsError, match="capacity rps must be > 0"):
        capacity.from_flags(-1.0, None, None, None, None)


# --- capacity at the SLO from the benchmark's concurrency sweep -----------------------------


def _sweep_point(connections: int, rps: float, p50: float, p99: float, cpu_ms: float) -> dict:
    return {
        "connections": connections,
        "duration_s": 5.0,
        "requests": int(rps * 5),
        "requests_per_s": rps,
        "latency_ms": {"p50": p50, "p95": p99, "p99": p99},
        "errors": 0,
        "cpu_ms_per_request": cpu_ms,
    }


SWEEP_BENCH = {
    "generated_at": "2026-12-01T09:00:00Z",
    "machine": {"cpus": 2},
    "runs": [
        {  # the saturating run: p99 over any usual SLO, so alone it would give no capacity
            "name": "bentoml-shipped-1w",
            "server": "bentoml",
            "model": "shipped",
            "workers": 1,
            "phase": "main",
            "duration_s": 20,
            "requests_per_s": 640.0,
            "latency_ms": {"p50": 70, "p99": 210},
            "errors": 0,
            "cpu_ms_per_request": 1.6,
            "rss_mb_per_worker": 170,
            "cold_start_s": 4.1,
        },
        {
            "name": "bentoml-v2-shipped-1w",
            "server": "bentoml-v2",
            "model": "shipped",
            "workers": 1,
            "phase": "main",
            "skipped": "POST /v2/models/iris-classifier/infer answered 404",
        },
    ],
    "sweep": [
        {
            "name": "bentoml-shipped-1w",
            "server": "bentoml",
            "model": "shipped",
            "workers": 1,
            "cold_start_s": 4.1,
            "rss_mb_per_worker": 170,
            "points": [
                _sweep_point(1, 87, 11, 22, 3.0),
                _sweep_point(8, 314, 24, 68, 2.0),
                _sweep_point(16, 495, 30, 103, 1.8),
                _sweep_point(64, 643, 90, 219, 1.6),
            ],
        },
        {
            "name": "mlserver-shipped-1w",
            "server": "mlserver",
            "model": "shipped",
            "workers": 1,
            "points": [_sweep_point(1, 110, 8, 120, 4.0)],
        },
    ],
}


def test_sweep_gives_the_capacity_at_the_slo_instead_of_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "bench.json", json.dumps(SWEEP_BENCH))
    result = capacity.load_bench(path, slo_p99_ms=100.0)
    assert result.source == "bench"  # measured, not the DEFAULT fallback
    (config,) = result.configs
    assert (config.name, config.kind, config.rps, config.p99_ms) == (
        "bentoml-shipped-1w", "bentoml", 314, 68,
    )  # fmt: skip
    assert config.latency_ms == 24  # p50 at that point, not at saturation
    assert config.vcpu == 0.75  # 2.0 ms x 314/s = 0.63 cores, rounded up to a quarter
    assert (config.memory_mb, config.cold_start_s) == (170.0, 4.1)  # from the server's run
    assert "sweep at 8 connections" in config.source
    assert "concurrency sweep" in result.notes[0]
    excluded = dict(result.excluded)
    assert "bentoml-shipped-1w" not in excluded  # the sweep replaced the saturating run
    assert excluded["mlserver-shipped-1w"] == "no sweep point with p99 <= 100 ms"
    assert excluded["bentoml-v2-shipped-1w"].startswith("skipped: POST /v2/models")


def test_sweep_capacity_follows_the_slo(tmp_path: Path) -> None:
    path = write(tmp_path, "bench.json", json.dumps(SWEEP_BENCH))
    assert [c.rps for c in capacity.load_bench(path, slo_p99_ms=50.0).configs] == [87]
    assert [c.rps for c in capacity.load_bench(path, slo_p99_ms=150.0).configs] == [495, 110]
    result = capacity.load_bench(path, slo_p99_ms=20.0)  # no BentoML point within 20 ms
    assert result.source == "defaults" and "no BentoML run" in result.notes[0]
