"""The `tiers` shape from the image: two containers on one podman network running the two
`start-http-server` commands of deploy/k8s/overlays/tiers (the runner with the runner
Deployment's environment, the API reaching it by its container name, as it reaches the
runner's Service by name in Kubernetes), answering predictions, batches sent to the runner
included."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from iris_service.inference.runner_address import API_SERVICE, RUNNER_SERVICE
from tests.integration.container_support import (
    BUILD_TIMEOUT_S,
    Image,
    container_logs,
    wait_ready,
)
from tests.support import SETOSA
from tools import containers
from tools.local_server import free_port
from tools.serve_tiers import start_http_server_args

pytestmark = [pytest.mark.container, pytest.mark.timeout(BUILD_TIMEOUT_S)]

RUNNER_DEPLOYMENT = (
    Path(__file__).resolve().parents[2] / "deploy/k8s/overlays/tiers/runner-deployment.yaml"
)


def runner_env() -> list[str]:
    """The runner Deployment's environment, as `--env` options."""
    (container,) = yaml.safe_load(RUNNER_DEPLOYMENT.read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    return [f"--env={item['name']}={item['value']}" for item in container["env"]]


def container_args(service_name: str, runner_url: str | None = None) -> list[str]:
    """The manifests' arguments: start-http-server on port 3000 of every interface."""
    return start_http_server_args(service_name, 3000, host="0.0.0.0", runner_url=runner_url)


@pytest.fixture(scope="module")
def tiers(image: Image) -> Iterator[str]:
    backend, env, tag = image
    cli = containers.runner_cli(backend)
    suffix = uuid.uuid4().hex[:8]
    network, runner, api = f"iris-tiers-{suffix}", f"iris-runner-{suffix}", f"iris-api-{suffix}"
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([cli, *args], env=env, check=True, capture_output=True, timeout=60)

    run("network", "create", network)
    try:
        run("run", "-d", "--rm", "--name", runner, "--network", network, *runner_env(), tag,
            *container_args(RUNNER_SERVICE))  # fmt: skip
        run("run", "-d", "--rm", "--name", api, "--network", network,
            "-p", f"127.0.0.1:{port}:3000", "--env=IRIS_API_KEYS_REQUIRED=false",
            "--env=IRIS_RUNNER_MIN_ROWS=10", tag,
            *container_args(API_SERVICE, runner_url=f"http://{runner}:3000"))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        if wait_ready(base) is None:
            pytest.fail(
                "API tier not ready:\n"
                + container_logs(cli, api, env)
                + container_logs(cli, runner, env)
            )
        yield base
    finally:
        for name in (api, runner):
            containers.remove(backend, env, container=name, image=None)
        subprocess.run([cli, "network", "rm", "-f", network], env=env, capture_output=True)


def test_the_two_tiers_answer_predictions(tiers: str) -> None:
    single = requests.post(f"{tiers}/predict", json=SETOSA, timeout=30)
    assert single.status_code == 200, single.text
    assert single.json()["class_name"] == "setosa"
    batch = requests.post(f"{tiers}/predict_batch", json={"flowers": [SETOSA] * 20}, timeout=30)
    assert batch.status_code == 200, batch.text  # 503 if the runner tier did not answer
    assert [p["class_name"] for p in batch.json()["predictions"]] == ["setosa"] * 20
    metrics = requests.get(f"{tiers}/metrics", timeout=30).text
    runner_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("iris_inferences_total") and 'computed_in="runner"' in line
    ]
    assert runner_lines and float(runner_lines[0].rsplit(" ", 1)[1]) >= 1, runner_lines
