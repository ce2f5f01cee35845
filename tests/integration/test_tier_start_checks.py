"""The API tier refuses to start on a `--depends` it must not run with: one line on stderr,
a non-zero exit, within seconds, before any worker (so never a runner built in the API
process). A runner URL that resolves but refuses connections is a tier not up yet: the API
starts, answers single predictions and gives runner-bound work 503 with Retry-After."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from iris_service.inference.runner_address import API_SERVICE
from iris_service.names import MODEL_NAME
from tools.bench.payloads import batch_body
from tools.local_server import HOST, ProjectState, free_port, server_env, start_server
from tools.serve_tiers import local_command, start_http_server_args

WRONG_DEPENDS = {
    "misspelt name": ["--depends", "IrisModelRuner=http://127.0.0.1:9"],
    "no runner named": [],
    "malformed URL": ["--depends", "IrisModelRunner=127.0.0.1:3000"],
    "host that does not resolve": [
        "--depends",
        "IrisModelRunner=http://no-such-runner.invalid:3000",
    ],
}


@pytest.mark.parametrize("depends", WRONG_DEPENDS.values(), ids=WRONG_DEPENDS.keys())
def test_a_wrong_depends_stops_the_start_with_one_line(
    trained_state: ProjectState, tmp_path: Path, depends: list[str]
) -> None:
    port = free_port()
    command = local_command([*start_http_server_args(API_SERVICE, port), *depends])
    result = subprocess.run(
        command,
        env=server_env(trained_state, tmp_path, port),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "IrisModelRunner" in errors[0] or "runner URL" in errors[0]


def test_an_unreachable_runner_tier_gives_503_for_runner_work_only(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    port, closed_port = free_port(), free_port()  # nothing listens on closed_port
    args = start_http_server_args(API_SERVICE, port, runner_url=f"http://{HOST}:{closed_port}")
    env = server_env(trained_state, tmp_path, port, IRIS_RUNNER_MIN_ROWS="10")
    api = start_server(local_command(args), env, port, tmp_path / "api.log")
    try:
        flower = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        single = _post(port, "/predict", flower)
        batch = _post(port, "/predict_batch", {"flowers": [flower] * 20})
        small_batch = _post(port, "/predict_batch", {"flowers": [flower] * 2})
        livez = _post(port, "/livez", None)
        protocols = [
            _post(port, "/invocations", json.loads(batch_body("dataframe_split", 20))),
            _post(port, f"/v2/models/{MODEL_NAME}/infer", json.loads(batch_body("v2", 20))),
        ]
    finally:
        api.stop()
    for status, headers, body in protocols:  # the other protocols refuse alike, in their shape
        assert status == 503, body
        assert headers.get("retry-after") == "1"
        assert "runner tier" in body
    assert single[0] == 200 and small_batch[0] == 200
    status, headers, body = batch
    assert status == 503, body
    assert headers.get("retry-after") == "1"
    assert json.loads(body)["error"] == "service_unavailable"
    assert livez[0] == 200  # the runner tier's state never restarts an API pod


def _post(port: int, path: str, body: object | None) -> tuple[int, dict[str, str], str]:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=15)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            payload = json.dumps(body)
            connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read().decode()
    finally:
        connection.close()
