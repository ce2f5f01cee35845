"""The benchmark's parsing and reporting, on canned wrk output and synthetic runs."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import load, report

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:3000
  1 threads and 50 connections
  Latency Distribution
     50%   40.00ms
     99%   95.00ms
  1200 requests in 2.00s, 300.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:    600.00
WRK_JSON {"requests": 1200, "duration_us": 2000000, "bytes": 307200, \
"errors": {"connect": 0, "read": 2, "write": 0, "status": 3, "timeout": 1}, \
"latency_us": {"mean": 41000.0, "max": 120000, "p50": 40000, "p90": 80000, \
"p95": 88000, "p99": 95000}}
"""


def test_wrk_output_is_parsed_into_rates_percentiles_and_errors() -> None:
    result = load.parse_output(WRK_OUTPUT, loadgen_cpu_s=0.5)
    assert result.requests_per_s == 600
    assert result.latency_ms["p50"] == 40 and result.latency_ms["p99"] == 95
    assert result.non_2xx == 3
    assert result.errors == 6  # 3 non-2xx + 2 read + 1 timeout
    assert result.loadgen_cpu_s == 0.5


def test_lua_script_quotes_bodies_that_contain_closing_brackets() -> None:
    body = json.dumps({"dataframe_split": {"data": [[5.1, 3.5, 1.4, 0.2]]}})
    script = load.lua_script("/invocations", [body])
    assert f"[=[{body}]=]" in script  # the "]]" inside cannot end the literal early
    assert "done = function" in script and "latency:percentile(99)" in script


def _run(server: str, model: str, rps: float, workers: int = 1, phase: str = "main") -> dict:
    return {
        "name": f"{server}-{ {'logistic_regression': 'lr'}.get(model, 'rf') }-{workers}w",
        "server": server,
        "model": model,
        "workers": workers,
        "phase": phase,
        "connections": 50,
        "duration_s": 20,
        "requests_per_s": rps,
        "latency_ms": {"p50": 20, "p95": 60, "p99": 90},
        "errors": 0,
        "cpu_ms_per_request": 0.9,
        "rss_mb_per_worker": 150,
        "rss_mb_total": 400,
        "cold_start_s": 3.0,
        "loadgen_cpu_ms_per_request": 0.1,
    }


def test_targets_ratios_drift_and_connection_split(tmp_path: Path) -> None:
    lr, rf = "logistic_regression", "random_forest"
    two_workers = _run("bentoml", lr, 1500, workers=2) | {"connection_split": [30, 20]}
    runs = [
        _run("fastapi", lr, 1000, phase="baseline_start"),
        _run("bentoml", lr, 1200),
        _run("fastapi", lr, 1000),
        _run("mlflow", lr, 1000),
        _run("bentoml", rf, 500) | {"latency_ms": {"p50": 50, "p95": 90, "p99": 150}},
        _run("fastapi", rf, 100),
        two_workers,
        _run("fastapi", lr, 900, phase="baseline_end"),
    ]
    batch = [
        {"server": "bentoml", "model": lr, "workers": 1, "batch_size": 10, "connections": 8,
         "requests_per_s": 100, "rows_per_s": 1000, "latency_ms": {"p99": 10}, "errors": 1,
         "cpu_us_per_row": 50.0},
    ]  # fmt: skip
    result = report.build(
        "2026-01-01T00:00:00+00:00", {"cpus": 2, "description": "t"}, {}, runs, batch
    )
    targets = {t["name"]: t for t in result["targets"]}
    assert targets["errors of the shipped service"] == targets["errors of the shipped service"] | {
        "value": 1.0,
        "met": False,
    }
    assert targets["LR throughput vs plain FastAPI (1 worker)"]["value"] == 1.2
    assert targets["LR throughput vs plain FastAPI (1 worker)"]["met"] is True
    assert targets["LR throughput vs mlflow models serve (1 worker)"]["met"] is False  # 1.2 < 1.5
    assert targets["RF throughput vs plain FastAPI (1 worker)"]["value"] == 5.0
    assert (
        targets["p99 latency of the shipped service"] | {"value": 150, "met": False}
        == (targets["p99 latency of the shipped service"])
    )
    assert targets["server CPU per LR request"]["met"] is True
    assert targets["cold start of the shipped service"]["met"] is True
    assert targets["resident memory per worker process"]["met"] is True

    paths = report.write_all(result, tmp_path)
    assert {p.name for p in paths} == {
        "bench.json", "bench.md", "bench_throughput.png", "bench_batch.png"
    }  # fmt: skip
    markdown = (tmp_path / "bench.md").read_text()
    assert "| fastapi-lr-1w | 1,000 | 900 | -10.0 % |" in markdown  # drift
    assert "| 30 / 20 |" in markdown  # connection split of the 2-worker run
    assert "1.20×" in markdown  # bentoml LR over FastAPI LR
    assert json.loads((tmp_path / "bench.json").read_text())["runs"] == runs
