"""`make bench-grpc` end to end with short runs: a real `bentoml serve`, every variant
answered with the same probabilities as REST JSON (checked by the tool before timing), and a
well-formed report whose numbers come from the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tools.bench.grpc_bench import SIZES, VARIANTS
from tools.local_server import ProjectState

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


def test_the_grpc_bench_measures_every_variant(trained_state: ProjectState, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tools.bench.grpc_bench", "--out-dir", str(tmp_path)]
    command += ["--duration", "0.5", "--warmup", "0.2", "--concurrency", "2"]
    result = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=trained_state.env(),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "grpc-bench.json").read_text())
    assert set(report["runs"]) == {f"{v}/{n}" for v in VARIANTS for n in SIZES}
    for run in report["runs"].values():
        assert run["requests"] > 0 and run["errors"] == 0, run
        assert 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["flowers_per_s"] == pytest.approx(run["requests_per_s"] * run["flowers"])
    table = (tmp_path / "grpc-bench.md").read_text()
    assert table.count("| grpc-raw |") == len(SIZES)
