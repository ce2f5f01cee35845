"""tools/middleware_overhead.py reports both timings and their difference. Which of the two is
faster is a measurement (`python -m tools.middleware_overhead`), not a pass/fail check: on a
shared machine a timing comparison can go either way for reasons other than the code."""

import json
import subprocess
import sys

from iris_pipeline.paths import PROJECT_ROOT
from tools.middleware_overhead import measure

KEYS = {"bare_app_us_per_request", "with_middleware_us_per_request"}


def _difference(result: dict) -> float:
    return result["with_middleware_us_per_request"] - result["bare_app_us_per_request"]


def test_measurement_reports_both_timings_and_their_difference() -> None:
    result = measure(iterations=300, rounds=2)
    assert result["bare_app_us_per_request"] > 0
    assert result["with_middleware_us_per_request"] > 0
    assert abs(result["middleware_overhead_us_per_request"] - _difference(result)) < 0.02


def test_cli_writes_the_report(tmp_path) -> None:
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, "-m", "tools.middleware_overhead", "--iterations", "200"]
    completed = subprocess.run(
        [*cmd, "--rounds", "1", "--out", str(out)], cwd=PROJECT_ROOT, timeout=60, check=False
    )
    assert completed.returncode == 0
    report = json.loads(out.read_text())
    assert set(report) >= KEYS and all(report[key] > 0 for key in KEYS)
    assert abs(report["middleware_overhead_us_per_request"] - _difference(report)) < 0.02
