"""The benchmark's parsing and reporting, on canned wrk output and synthetic runs."""

from __future__ import annotations

import json
from pathlib import Path

from tools.bench import capacity, load, mlserver, payloads, report, servers

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


def test_report_has_drift_ratios_worker_processes_and_connection_split(tmp_path: Path) -> None:
    lr = "logistic_regression"
    two_workers = _run("bentoml", lr, 1500, workers=2) | {
        "connection_split": [30, 20],
        "api_worker_processes": 2,
    }
    runs = [
        _run("fastapi", lr, 1000, phase="baseline_start"),
        two_workers,
        _run("fastapi", lr, 1000),
        _run("minimal-bentoml", lr, 1250, workers=2),
        _run("fastapi", lr, 900, phase="baseline_end"),
        {"name": "fastapi-onnx-lr-2w", "server": "fastapi-onnx", "model": lr, "workers": 2,
         "phase": "main", "failed": "RuntimeError: POST /predict answered 404 | x"},
    ]  # fmt: skip
    result = report.build(
        "2026-01-01T00:00:00+00:00", {"cpus": 2, "description": "t"}, {}, runs, []
    )
    assert result["image"] == {"not_measured": "not asked"}
    paths = report.write_all(result, tmp_path)
    assert {p.name for p in paths} == {"bench.json", "bench.md", "bench_throughput.png"}
    markdown = (tmp_path / "bench.md").read_text()
    assert "| fastapi-lr-1w | 1,000 | 900 | -10.0 % |" in markdown  # drift
    # Ours (2 workers) over FastAPI (1 worker) and over the minimal BentoML service, same model.
    assert "| bentoml-lr-2w | main | 1,500 | 1.50× | 1.20× |" in markdown
    assert "| 2 | 30 / 20 |" in markdown  # API worker processes, connection split
    assert (
        "| fastapi-onnx-lr-2w | main | failed: RuntimeError: POST /predict answered 404 \\| x |"
        in (markdown)
    )
    assert "## Targets (issue 21)" in markdown and "not measured (not asked)" in markdown
    assert json.loads((tmp_path / "bench.json").read_text())["runs"] == runs


# --- round two: sweep, capacity at the objective, new targets --------------------------------


def _point(connections: int, rps: float, p50: float, p99: float, errors: int = 0) -> dict:
    return {
        "connections": connections,
        "duration_s": 5.0,
        "requests": int(rps * 5),
        "requests_per_s": rps,
        "latency_ms": {"p50": p50, "p95": p99 * 0.9, "p99": p99},
        "errors": errors,
        "cpu_ms_per_request": 1.5,
        "server_cpu_cores": 0.5,
    }


def _curve(server: str, model: str, points: list[dict], workers: int = 1) -> dict:
    short = {"logistic_regression": "lr"}.get(model, model)
    return {
        "name": f"{server}-{short}-{workers}w",
        "server": server,
        "model": model,
        "estimator": "svm",
        "workers": workers,
        "cold_start_s": 4.0,
        "rss_mb_per_worker": 150.0,
        "path": "/predict",
        "points": points,
        "capacity": capacity.capacity(points, 50.0),
    }


def test_capacity_is_the_highest_throughput_within_the_objective() -> None:
    points = [
        _point(1, 87, 11, 22),
        _point(2, 116, 16, 26),
        _point(4, 153, 25, 104),  # p99 over the objective: its throughput does not count
        _point(8, 314, 24, 48),  # within again: the curve is not monotonic
        _point(16, 495, 30, 49, errors=30),  # 30 of 2,475 requests failed (> 1 %)
        _point(32, 620, 50, 156),
    ]
    result = capacity.capacity(points, 50.0)
    assert result == {
        "objective_p99_ms": 50.0, "requests_per_s": 314, "connections": 8, "p99_ms": 48,
    }  # fmt: skip
    assert capacity.capacity(points, 25.0)["requests_per_s"] == 87
    assert capacity.capacity(points, 200.0)["connections"] == 32
    assert capacity.within_objective(_point(16, 495, 30, 49, errors=20), 50.0)  # 0.8 % errors


def test_no_point_within_the_objective_gives_zero_capacity_and_a_reason() -> None:
    result = capacity.capacity([_point(1, 200, 60, 80), _point(2, 0, 0, 0)], 50.0)
    assert result["requests_per_s"] == 0.0 and result["connections"] is None
    assert "no point with p99 <= 50 ms" in result["reason"]
    assert capacity.capacity([], 50.0)["requests_per_s"] == 0.0


def test_v2_bodies_are_open_inference_tensors_of_the_same_flowers() -> None:
    single = json.loads(payloads.single_body("v2", 3))
    batch = json.loads(payloads.batch_body("v2", 5, 3))
    service_batch = json.loads(payloads.batch_body("service", 5, 3))
    (tensor,) = batch["inputs"]
    assert tensor["shape"] == [5, 4] and tensor["datatype"] == "FP64"
    flowers = [list(f.values()) for f in service_batch["flowers"]]
    assert tensor["data"] == [value for row in flowers for value in row]  # same flowers
    assert single["inputs"][0]["shape"] == [1, 4] and single["inputs"][0]["data"] == flowers[0]
    ours, theirs = servers.ENDPOINTS["bentoml-v2"], servers.ENDPOINTS["mlserver"]
    assert (ours.predict, ours.protocol) == (theirs.predict, theirs.protocol) == (
        "/v2/models/iris-classifier/infer", "v2",
    )  # fmt: skip


def test_mlserver_settings_bind_localhost_and_switch_batching(tmp_path: Path) -> None:
    model_dir = tmp_path / "mlflow_model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.pkl\n    serialization_format: pickle\n"
    )
    default = mlserver.write_config(tmp_path / "a", model_dir, 8123, mlserver.Batching())
    batching = mlserver.write_config(tmp_path / "b", model_dir, 8124, mlserver.ADAPTIVE_BATCHING)
    settings = json.loads((default / "settings.json").read_text())
    assert settings["host"] == "127.0.0.1" and settings["http_port"] == 8123
    assert len({8123, settings["grpc_port"], settings["metrics_port"]}) == 3
    plain = json.loads((default / "model-settings.json").read_text())
    assert "max_batch_size" not in plain  # MLServer's default: no adaptive batching
    assert plain["parameters"]["uri"] == str(model_dir / "model.pkl")
    assert plain["inputs"][0]["shape"] == [-1, 4] and plain["outputs"][0]["name"] == "predict"
    batched = json.loads((batching / "model-settings.json").read_text())
    assert (batched["max_batch_size"], batched["max_batch_time"]) == (64, 0.005)


def test_mode_runs_are_compared_with_mode_none_of_the_same_model() -> None:
    from tools.bench.report import mode_lines

    shadow = {**_run("bentoml-shadow", "logistic_regression", 750.0), "cpu_ms_per_request": 1.4}
    canary = _run("bentoml-canary", "logistic_regression", 900.0)
    runs = [_run("bentoml", "logistic_regression", 1000.0), shadow, canary]
    table = [line for line in mode_lines(runs) if line.startswith("| logistic_regression")]
    assert table == [
        "| logistic_regression | shadow | 1,000 | 750 | 0.75× | 90.0 / 90.0 | +0.50 | 0 |",
        "| logistic_regression | canary | 1,000 | 900 | 0.90× | 90.0 / 90.0 | +0.00 | 0 |",
    ]
    assert mode_lines(runs[1:]) == []  # without mode none there is nothing to compare with
