"""A real `bentoml serve` refuses to start with keys that cannot protect it: none when keys
are required (IRIS_API_KEYS_REQUIRED=true, the image's default), or one shorter than
API_KEY_MIN_LENGTH; nor with a wrong setting. One clear line says why; no traceback; the key
is never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_service.settings import API_KEY_MIN_LENGTH
from tools.local_server import ProjectState, bento_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]
EXIT_TIMEOUT_S = 60


def _refused_start(state: ProjectState, logs: Path, **env: str) -> str:
    with bento_server(state, logs, wait=False, **env) as server:
        code = server.process.wait(timeout=EXIT_TIMEOUT_S)
        assert code != 0, server.log_tail()
        return server.log()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"IRIS_API_KEY": "k" * (API_KEY_MIN_LENGTH - 1)}, "shorter than"),
        (
            {"IRIS_API_KEY": "long-enough-key-0123456789", "IRIS_API_KEYS": "tiny"},
            "API key number 2 of 2 is shorter than",
        ),
        ({"IRIS_API_KEYS_REQUIRED": "true"}, "API keys are required"),
        ({"IRIS_API_KEYS_REQUIRED": "true", "IRIS_API_KEYS": " , "}, "API keys are required"),
        ({"IRIS_MAX_BATCH_FLOWERS": "1001"}, "IRIS_MAX_BATCH_FLOWERS=1001 is larger than"),
        ({"IRIS_CANARY_SHARE": "2"}, "IRIS_CANARY_SHARE must be between 0.0 and 1.0, got 2.0"),
    ],
    ids=["short", "one-short-of-two", "required-none", "required-blank", "limits", "setting"],
)
def test_the_server_refuses_to_start(
    trained_state: ProjectState, tmp_path: Path, env: dict[str, str], says: str
) -> None:
    log = _refused_start(trained_state, tmp_path, **env)
    errors = [line for line in log.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    for key in (value for name, value in env.items() if "KEY" in name and "REQUIRED" not in name):
        if key.strip(" ,"):
            assert key not in log


def test_a_long_key_when_required_serves_with_it(
    trained_state: ProjectState, tmp_path: Path
) -> None:
    import requests

    key = "a-long-random-key-" + "0123456789abcdef" * 2
    with bento_server(
        trained_state, tmp_path, IRIS_API_KEYS_REQUIRED="true", IRIS_API_KEY=key
    ) as server:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert requests.get(f"{server.url}/model", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{server.url}/model", headers=auth, timeout=10).status_code == 200
