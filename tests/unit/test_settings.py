"""Environment knobs are checked when the service starts: a wrong value is a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iris_pipeline.paths import PROJECT_ROOT

READ = "from iris_service import settings as s; print(s.CHALLENGER_MODE, s.CANARY_SHARE)"


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", READ],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_challenger_defaults_and_values() -> None:
    assert _settings().stdout.split() == ["none", "0.1"]
    chosen = _settings(IRIS_CHALLENGER_MODE=" Canary ", IRIS_CANARY_SHARE="0.25")
    assert chosen.stdout.split() == ["canary", "0.25"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IRIS_CHALLENGER_MODE": "blue"}, "IRIS_CHALLENGER_MODE must be one of none, shadow"),
        ({"IRIS_CANARY_SHARE": "1.5"}, "IRIS_CANARY_SHARE must be between 0.0 and 1.0"),
        ({"IRIS_CANARY_SHARE": "a lot"}, "IRIS_CANARY_SHARE must be a number"),
        ({"IRIS_ALIAS_POLL_SECONDS": "0"}, "IRIS_ALIAS_POLL_SECONDS must be between"),
        ({"IRIS_SHADOW_MAX_ROWS": "-1"}, "IRIS_SHADOW_MAX_ROWS must be positive"),
        ({"IRIS_RUNNER_MIN_ROWS": "many"}, "IRIS_RUNNER_MIN_ROWS must be an integer"),
        ({"IRIS_RUNNER_HOP_MS": "-3"}, "IRIS_RUNNER_HOP_MS must be between"),
        ({"IRIS_GRPC_PORT": "70000"}, "IRIS_GRPC_PORT must be 0..65535 or off"),
        ({"IRIS_GRPC_PORT": "grpc"}, "IRIS_GRPC_PORT must be 0..65535 or off"),
    ],
)
def test_a_wrong_value_is_refused_with_its_name(env: dict[str, str], message: str) -> None:
    result = _settings(**env)
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]


def test_the_grpc_port_is_8001_a_number_0_or_off() -> None:
    read = "from iris_service import settings as s; print(s.GRPC_PORT)"

    def port(**env: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", read],
            cwd=PROJECT_ROOT,
            env={"PATH": "/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

    assert port() == "8001"
    assert port(IRIS_GRPC_PORT="9001") == "9001"
    assert port(IRIS_GRPC_PORT="0") == "0"
    assert port(IRIS_GRPC_PORT="Off") == "None"
