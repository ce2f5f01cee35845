"""What `make serve` shows: start-up and the model it serves on the terminal, the per-request
JSON lines in a file under state/ (named at start); without the file they stay on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from tools.local_server import ProjectState, free_port, isolated_home, start_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _make_serve(state: ProjectState, tmp_path: Path, *variables: str) -> tuple[str, str]:
    """(terminal output of `make serve`, champion tag) after three predictions."""
    port = free_port()
    home = isolated_home(state.bentoml_home / "models", tmp_path, port)
    command = ["make", "--no-print-directory", "-o", ".venv/.installed", "serve"]
    command += [f"PORT={port}", f"BENTOML_HOME={home}", *variables]
    server = start_server(command, state.env(), port, tmp_path / "terminal.log")
    try:
        for _ in range(3):
            answer = requests.post(f"{server.url}/predict", json=FLOWER, timeout=10)
            assert answer.status_code == 200, answer.text
    finally:
        server.stop()
    champion = read_aliases(MODEL_NAME, state.bentoml_home).champion
    return server.log(), champion


def test_make_serve_puts_request_lines_in_a_file_and_the_model_on_the_terminal(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    request_log = tmp_path / "state-logs" / "requests.jsonl"
    terminal, champion = _make_serve(trained_state, tmp_path, f"REQUEST_LOG_FILE={request_log}")
    assert f"Per-request log lines: {request_log}" in terminal
    assert f"serving {champion} as champion" in terminal
    assert '"event": "request"' not in terminal
    lines = [json.loads(line) for line in request_log.read_text().splitlines()]
    predictions = [line for line in lines if line["endpoint"] == "/predict"]
    assert len(predictions) == 3 and all(line["status"] == 200 for line in predictions)


def test_without_a_request_log_file_the_lines_stay_on_stdout(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    terminal, _ = _make_serve(trained_state, tmp_path, "REQUEST_LOG_FILE=")
    assert terminal.count('"endpoint": "/predict"') == 3
