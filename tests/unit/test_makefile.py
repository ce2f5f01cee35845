"""What the Makefile shows and passes on, read with `make -n` (nothing is run)."""

from __future__ import annotations

import os
import subprocess

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tools import containers

STORES = ("BENTOML_HOME", "MLFLOW_TRACKING_URI")


def _make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in STORES and not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _variable(name: str, **env: str) -> str:
    """The value make gives a variable, through a target defined on the command line."""
    return _make(f"--eval=print-it: ; @echo $({name})", "print-it", **env).stdout.strip()


def test_make_help_expands_the_variables() -> None:
    shown = _make("help", "PORT=3100").stdout
    assert "serve on 127.0.0.1:3100" in shown and "127.0.0.1:3100" in shown
    assert "$(" not in shown


def test_make_promote_echoes_one_line_without_a_dangling_backslash() -> None:
    (line,) = _make("-n", "promote", "FORCE=1", "VERSION=3", "MARGIN=0.1").stdout.splitlines()
    assert line.endswith("lifecycle promote --version 3 --force --recall-margin 0.1")
    assert "\\" not in line
    assert _make("-n", "promote").stdout.strip().endswith("lifecycle promote")


@pytest.mark.parametrize(
    ("target", "variable", "expected"),
    [
        ("loadtest", "LOADTEST_ARGS=--port 3100", "--port 3100"),
        ("loadtest", "LOADTEST_ARGS=--host http://127.0.0.1:3000", "--host http://127.0.0.1:3000"),
        ("report", "REPORT_ARGS=--port 3100", "--port 3100"),
    ],
)
def test_ports_and_hosts_are_passed_on(target: str, variable: str, expected: str) -> None:
    assert expected in _make("-n", target, variable).stdout


def test_the_stores_follow_one_rule_the_environment_wins_else_state() -> None:
    assert _variable("BENTOML_HOME") == str(PROJECT_ROOT / "state" / "bentoml")
    assert _variable("MLFLOW_TRACKING_URI").endswith("/state/mlflow/mlflow.db")
    named = {"BENTOML_HOME": "/elsewhere/bentoml", "MLFLOW_TRACKING_URI": "sqlite:////else.db"}
    assert _variable("BENTOML_HOME", **named) == "/elsewhere/bentoml"
    assert _variable("MLFLOW_TRACKING_URI", **named) == "sqlite:////else.db"


def test_naming_only_one_store_is_warned_about() -> None:
    warned = _make("-n", "models", BENTOML_HOME="/elsewhere/bentoml").stderr
    assert "only one of BENTOML_HOME and MLFLOW_TRACKING_URI is set" in warned
    both = {"BENTOML_HOME": "/elsewhere/bentoml", "MLFLOW_TRACKING_URI": "sqlite:////else.db"}
    assert "only one of" not in _make("-n", "models", **both).stderr


def test_make_serve_sends_request_lines_to_a_file_under_state() -> None:
    commands = _make("-n", "serve").stdout
    assert f"IRIS_REQUEST_LOG_FILE={PROJECT_ROOT}/state/logs/requests-" in commands
    assert ".jsonl .venv/bin/bentoml serve service:IrisClassifier" in commands


def test_containerize_runs_without_clicks_duplicate_quiet_warning() -> None:
    command = [str(containers.bentoml_bin()), "containerize", "--help"]
    loud = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert "--quiet is used more than once" in loud.stderr  # BentoML's own fault, still there
    quiet = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": containers.CLICK_DUPLICATE_QUIET},
    )
    assert "more than once" not in quiet.stderr
