"""The benchmark harness end to end with --quick (1-2 s runs): well-formed reports only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tests.support import ensure_debian_packages

pytestmark = pytest.mark.server

RUN_KEYS = {
    "name", "server", "model", "workers", "phase", "connections", "duration_s",
    "requests_per_s", "latency_ms", "errors", "cpu_ms_per_request", "rss_mb_per_worker",
    "cold_start_s", "loadgen_cpu_ms_per_request",
}  # fmt: skip


def test_quick_bench_writes_well_formed_reports(tmp_path: Path) -> None:
    ensure_debian_packages("wrk")
    out_dir = tmp_path / "reports"
    command = [sys.executable, "-m", "tools.bench", "--quick", "--out-dir", str(out_dir)]
    command += ["--state-dir", str(tmp_path / "state"), "--connections", "10"]
    # Every server kind and code path (baselines at start/end, ratios, batches), few starts.
    command += ["--servers", "bentoml", "mlflow", "--models", "logistic_regression"]
    command += ["--workers", "1", "--batch-sizes", "1", "10", "--baseline-servers", "fastapi"]
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=420, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    bench = json.loads((out_dir / "bench.json").read_text())
    assert {"generated_at", "machine", "runs", "batch", "targets"} <= set(bench)
    assert bench["machine"]["cpus"] >= 1 and bench["machine"]["description"]
    runs = bench["runs"]
    assert [(r["name"], r["phase"]) for r in runs] == [
        ("fastapi-lr-1w", "baseline_start"),
        ("bentoml-lr-1w", "main"),
        ("mlflow-lr-1w", "main"),
        ("fastapi-lr-1w", "baseline_end"),
    ], [r.get("failed") for r in runs]
    for run in runs:
        assert set(run) >= RUN_KEYS, run
        assert run["requests_per_s"] > 0 and run["duration_s"] > 0
        assert {"p50", "p95", "p99"} <= set(run["latency_ms"])
        assert run["cold_start_s"] > 0 and run["rss_mb_per_worker"] > 0
        assert run["cpu_ms_per_request"] > 0 and run["loadgen_cpu_ms_per_request"] > 0
        assert isinstance(run["errors"], int)
    assert sorted((b["server"], b["batch_size"]) for b in bench["batch"]) == [
        ("bentoml", 1), ("bentoml", 10), ("mlflow", 1), ("mlflow", 10),
    ]  # fmt: skip
    assert all(b["rows_per_s"] > 0 for b in bench["batch"])
    targets = {t["name"]: t for t in bench["targets"]}
    assert len(targets) == 8
    assert all({"value", "threshold", "met"} <= set(t) for t in targets.values())
    assert targets["LR throughput vs mlflow models serve (1 worker)"]["met"] is not None
    assert targets["RF throughput vs plain FastAPI (1 worker)"]["met"] is None  # not measured

    markdown = (out_dir / "bench.md").read_text()
    for heading in ("## Throughput and latency", "## Drift", "## Batches", "## Targets"):
        assert heading in markdown
    assert "| bentoml-lr-1w | main |" in markdown
    for png in ("bench_throughput.png", "bench_batch.png"):
        assert (out_dir / png).read_bytes().startswith(b"\x89PNG")
