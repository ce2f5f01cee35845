"""A short, bounded run of locustfile.py against a real `bentoml serve` (no throughput checks)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT, VENV_BIN
from tools.loadtest.plot import plot_history
from tools.local_server import LocalServer

pytestmark = pytest.mark.server

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _locust(
    server: LocalServer, prefix: Path, scenario: str, seconds: int, slo_p95_ms: float
) -> subprocess.CompletedProcess[str]:
    command = [str(VENV_BIN / "locust"), "-f", str(PROJECT_ROOT / "locustfile.py"), "--headless"]
    command += ["--users", "5", "--spawn-rate", "5", "--run-time", f"{seconds}s"]
    command += ["--stop-timeout", "2", "--host", server.url, "--csv", str(prefix)]
    command += ["--html", f"{prefix}.html", "--only-summary"]
    env = {**os.environ, "IRIS_LOAD_SCENARIO": scenario, "LOCUST_SLO_P95_MS": str(slo_p95_ms)}
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )


def test_saturation_run_writes_reports_and_passes_its_slo(
    server: LocalServer, tmp_path: Path
) -> None:
    prefix = tmp_path / "locust-saturation"
    # The latency objective is not what this checks (throughput and latency are `make bench`'s
    # and `make loadtest`'s); the SLO verdict must be computed from the run's own numbers.
    result = _locust(server, prefix, "saturation", seconds=6, slo_p95_ms=60_000)
    output = result.stdout + result.stderr
    # Exit code 0: no unexpected failure, i.e. every invalid request was answered 4xx.
    assert result.returncode == 0, output[-4000:]
    assert "SaturationUser" in output
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0
    # The verdict names the run's request count and p95 (locust's CSV holds the same numbers).
    verdict = r"SLO met: (\d+) requests, 0 unexpected failures, p95 (\d+) ms <= 60000 ms"
    met = re.search(verdict, output)
    assert met, output[-4000:]
    assert int(met.group(1)) == int(total["Request Count"])
    assert int(met.group(2)) == pytest.approx(float(total["95%"]), abs=1)
    assert int(rows["/predict"]["Request Count"]) > 0
    html = Path(f"{prefix}.html").read_text()
    assert "<html" in html.lower() and "/predict" in html
    png = plot_history(Path(f"{prefix}_stats_history.csv"), tmp_path / "over-time.png", "smoke")
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_a_broken_latency_slo_sets_exit_code_1(server: LocalServer, tmp_path: Path) -> None:
    result = _locust(server, tmp_path / "locust-typical", "typical", seconds=3, slo_p95_ms=0.001)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "SLO not met: p95" in output
    assert "TypicalUser" in output
