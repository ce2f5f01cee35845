"""The FinOps command line, run as users run it: a subprocess writing to a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BENCH = {
    "generated_at": "2026-11-20T10:00:00Z",
    "machine": {"cpus": 2, "description": "test box"},
    "runs": [
        {
            "name": "bentoml-lr-1w",
            "server": "bentoml",
            "workers": 1,
            "phase": "main",
            "duration_s": 20,
            "requests_per_s": 600.0,
            "latency_ms": {"p50": 40, "p99": 95},
            "errors": 0,
            "cpu_ms_per_request": 1.7,
            "rss_mb_per_worker": 180,
            "cold_start_s": 3.2,
        },
        {
            "name": "bentoml-lr-2w",
            "server": "bentoml",
            "workers": 2,
            "phase": "main",
            "requests_per_s": 1000.0,
            "latency_ms": {"p50": 30, "p99": 80},
            "cpu_ms_per_request": 1.9,
            "rss_mb_per_worker": 180,
            "cold_start_s": 3.5,
        },
        {
            "name": "mlflow-lr-1w",
            "server": "mlflow",
            "phase": "main",
            "requests_per_s": 300.0,
            "latency_ms": {"p50": 20, "p99": 60},
        },
    ],
}

PRICES = """
instances:
  - {name: small, provider: aws, region: us-east-1, vcpu: 2, memory_gib: 4,
     on_demand_per_hour: 0.085, spot_per_hour: 0.035, source: test, date: 2025-01}
  - {name: other, provider: gcp, region: us-central1, vcpu: 2, memory_gib: 8,
     on_demand_per_hour: 0.1, spot_per_hour: 0.03, source: test, date: 2025-01}
"""


def finops(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env_path = {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tools.finops", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), **env_path},
    )


def _env() -> dict[str, str]:
    import os

    # FinOps reads no store: neither store variable is passed, so that whatever an earlier
    # test left in this process's environment cannot make the tool warn about the stores.
    dropped = {"PYTHONPATH", "BENTOML_HOME", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


def test_report_from_benchmark_output(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH), encoding="utf-8")
    out = tmp_path / "out"
    done = finops("--bench", str(bench), "--out-dir", str(out), "--profile", "spiky")
    assert done.returncode == 0, done.stderr
    assert "Cheapest meeting the SLO" in done.stdout and "$ / 1M predictions" in done.stdout

    for name in ("finops_day.png", "finops_costs.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000

    report = (out / "finops.md").read_text(encoding="utf-8")
    for heading in (
        "## Answer",
        "## Key options",
        "## Fixed provisioning for the peak vs autoscaling",
        "## Instance types and on-demand vs spot",
        "## Serverless",
        "## Serving configurations",
        "## Assumptions",
    ):
        assert heading in report
    assert (
        "per million predictions" in report and "Cheapest configuration meeting the SLO" in report
    )
    assert "generated 2026-11-20T10:00:00Z" in report  # which benchmark the capacity came from
    assert "mlflow-lr-1w (baseline)" in report
    assert "(finops_day.png)" in report and "(finops_costs.png)" in report
    # minutes and requests are told apart, and a share at risk never reads 0.0000%
    assert "Minutes short of capacity" in report and " min |" in report
    assert " requests (" in report and "0.0000%" not in report
    assert "still meet the SLO, which counts requests" in report

    data = json.loads((out / "finops.json").read_text(encoding="utf-8"))
    assert data["capacity"]["source"] == "bench"
    assert data["minutes"] == 43_200
    names = {c["name"] for c in data["capacity"]["configs"]}
    assert names == {"bentoml-lr-1w", "bentoml-lr-2w", "mlflow-lr-1w"}
    best = data["recommended"]
    assert best["meets_slo"] and best["config_kind"] != "baseline"
    cheapest = min(
        (o for o in data["options"] if o["meets_slo"] and o["config_kind"] != "baseline"),
        key=lambda o: o["monthly_cost"],
    )
    assert best["monthly_cost"] == cheapest["monthly_cost"]
    strategies = {o["strategy"] for o in data["options"]}
    assert strategies == {"autoscale", "fixed", "serverless"}
    assert {o["purchase"] for o in data["options"]} >= {"on-demand", "spot 50%"}


def test_hand_computed_example_through_the_cli(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES, encoding="utf-8")
    args = [
        "--profile", "constant", "--peak-rps", "100", "--capacity-rps", "50",
        "--replica-vcpu", "2", "--target-utilization", "0.8", "--headroom", "0",
        "--min-replicas", "1", "--prices", str(prices), "--out-dir", str(tmp_path), "--quiet",
        "--no-plots",
    ]  # fmt: skip
    done = finops(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    data = json.loads((tmp_path / "finops.json").read_text(encoding="utf-8"))
    assert data["capacity"]["source"] == "flags"
    costs = {
        (o["strategy"], o["platform"], o["purchase"]): round(o["monthly_cost"], 2)
        for o in data["options"]
    }
    assert costs[("autoscale", "small", "on-demand")] == 183.60  # 3 replicas x 720 h x $0.085
    assert costs[("autoscale", "other", "spot 50%")] == 140.40  # 3 x 720 h x $0.065
    assert data["recommended"]["platform"] == "small"
    assert data["recommended"]["purchase"] == "spot 50%"  # 3 x 720 x $0.06 = $129.60
    assert round(data["recommended"]["monthly_cost"], 2) == 129.60
    assert "DEFAULT" not in (tmp_path / "finops.md").read_text(encoding="utf-8")


def test_without_benchmark_output_defaults_are_said(tmp_path: Path) -> None:
    done = finops("--bench", str(tmp_path / "none.json"), "--out-dir", str(tmp_path), "--no-plots")
    assert done.returncode == 0, done.stderr
    assert "DEFAULT capacity, not measured" in done.stdout
    report = (tmp_path / "finops.md").read_text(encoding="utf-8")
    assert "DEFAULT capacity, not measured" in report and "not found" in report


def test_user_traffic_csv(tmp_path: Path) -> None:
    csv = tmp_path / "traffic.csv"
    csv.write_text(
        "minute,requests\n" + "".join(f"{m},{6000 + 60 * (m % 120)}\n" for m in range(1440))
    )
    done = finops(
        "--traffic-csv", str(csv), "--no-bench", "--out-dir", str(tmp_path), "--quiet", "--no-plots"
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "finops_day.png").exists()
    data = json.loads((tmp_path / "finops.json").read_text(encoding="utf-8"))
    assert data["traffic"]["profile"] == "csv"
    assert data["traffic"]["peak_rps"] == pytest.approx((6000 + 60 * 119) / 60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peak-rps", "-5"], "--peak-rps: '-5' must be > 0"),
        (["--target-utilization", "1.5"], "must be between 0 and 1"),
        (["--profile", "weekly"], "invalid choice: 'weekly'"),
        (
            ["--min-replicas", "5", "--max-replicas", "2"],
            "max replicas (2) must be >= min replicas",
        ),
        (["--prices", "/nonexistent/prices.yaml"], "cannot read price catalogue"),
        (["--traffic-csv", "/nonexistent/t.csv"], "cannot read traffic CSV"),
        (["--run", "no-such-run", "--no-bench"], "run 'no-such-run' is not a usable configuration"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = finops(*args, "--out-dir", str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], done.stderr
    assert message in lines[0]
    assert not (tmp_path / "finops.md").exists()


def test_corrupt_bench_and_bad_csv_errors(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text("{oops", encoding="utf-8")
    done = finops("--bench", str(bench), "--out-dir", str(tmp_path))
    assert done.returncode == 2 and "--no-bench" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    csv = tmp_path / "t.csv"
    csv.write_text("requests\n12\nabc\n", encoding="utf-8")
    done = finops("--traffic-csv", str(csv), "--no-bench", "--out-dir", str(tmp_path))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"finops: error: traffic CSV {csv} line 3: 'abc' is not a number of requests"
    )


def test_help() -> None:
    done = finops("--help")
    assert done.returncode == 0
    for flag in ("--traffic-csv", "--prices", "--bench", "--headroom", "--spot-share", "--out-dir"):
        assert flag in done.stdout


def test_default_slo_plans_from_the_sweep_not_from_defaults(tmp_path: Path) -> None:
    """With only the saturating run (p99 210 ms) the default 100 ms SLO left nothing measured;
    the sweep's curve gives the capacity at the SLO: the run's own point at 16 connections."""
    saturated = {
        "name": "bentoml-shipped-1w", "server": "bentoml", "model": "shipped", "workers": 1,
        "phase": "main", "duration_s": 20, "requests_per_s": 640.0,
        "latency_ms": {"p50": 70, "p99": 210}, "errors": 0, "cpu_ms_per_request": 1.6,
        "rss_mb_per_worker": 170, "cold_start_s": 4.1,
    }  # fmt: skip
    points = [
        {"connections": c, "duration_s": 5.0, "requests": int(r * 5), "requests_per_s": r,
         "latency_ms": {"p50": p50, "p95": p99, "p99": p99}, "errors": 0,
         "cpu_ms_per_request": 1.8}
        for c, r, p50, p99 in ((1, 87.0, 11, 22), (16, 495.0, 30, 96), (64, 643.0, 90, 219))
    ]  # fmt: skip
    curve = {key: saturated[key] for key in ("name", "server", "model", "workers")}
    bench = {"generated_at": "2026-12-01T09:00:00Z", "runs": [saturated],
             "sweep": [curve | {"points": points}]}  # fmt: skip
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench), encoding="utf-8")
    done = finops("--bench", str(path), "--out-dir", str(tmp_path), "--no-plots")
    assert done.returncode == 0, done.stderr
    assert "DEFAULT capacity" not in done.stdout
    assert "concurrency sweep" in done.stdout
    data = json.loads((tmp_path / "finops.json").read_text(encoding="utf-8"))
    assert data["capacity"]["source"] == "bench"
    (config,) = data["capacity"]["configs"]
    assert (config["name"], config["rps"], config["p99_ms"]) == ("bentoml-shipped-1w", 495.0, 96)


def test_a_small_share_keeps_two_significant_digits() -> None:
    from tools.finops.report import percent

    assert percent(7.2e-7) == "0.000072%"
    assert percent(0.0123) == "1.23%" and percent(0) == "0.00%"
