import json
import subprocess
import sys

from iris_pipeline.paths import PROJECT_ROOT
from tools.middleware_overhead import measure


def test_measurement_reports_both_timings_and_their_difference() -> None:
    result = measure(iterations=300, rounds=2)
    assert result["bare_app_us_per_request"] > 0
    assert result["with_middleware_us_per_request"] > result["bare_app_us_per_request"]
    difference = result["with_middleware_us_per_request"] - result["bare_app_us_per_request"]
    assert abs(result["middleware_overhead_us_per_request"] - difference) < 0.02


def test_cli_writes_the_report(tmp_path) -> None:
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, "-m", "tools.middleware_overhead", "--iterations", "200"]
    completed = subprocess.run(
        [*cmd, "--rounds", "1", "--out", str(out)], cwd=PROJECT_ROOT, timeout=60, check=False
    )
    assert completed.returncode == 0
    assert json.loads(out.read_text())["middleware_overhead_us_per_request"] > 0
