"""`make container-run` turns the image's required API keys off explicitly and says so, or
passes the caller's IRIS_API_KEY on; the image itself requires a key (bentofile.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools import containers

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_requires_keys() -> None:
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    envs = {env["name"]: env["value"] for env in bentofile["envs"]}
    assert envs["IRIS_API_KEYS_REQUIRED"] == "true"


def test_container_run_turns_keys_off_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IRIS_API_KEY", raising=False)
    options = containers.local_key_options()
    assert options == ["--env", "IRIS_API_KEYS_REQUIRED=false"]
    assert "API keys turned off (IRIS_API_KEYS_REQUIRED=false)" in capsys.readouterr().err
    command = containers.run_command("podman", "iris_classifier:x", 3000, options=options)
    assert command[-3:] == [*options, "iris_classifier:x"]  # options before the image
    assert "127.0.0.1:3000:3000" in command


def test_container_run_passes_a_key_from_the_environment_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IRIS_API_KEY", "a-long-random-key-0123456789abcdef")
    assert containers.local_key_options() == ["--env", "IRIS_API_KEY"]  # never on the line
    assert "API key required" in capsys.readouterr().err


def test_container_run_publishes_the_grpc_port_on_loopback_when_asked() -> None:
    command = containers.run_command("podman", "iris_classifier:x", 3000, grpc_port=9001)
    assert "127.0.0.1:9001:8001" in command and "127.0.0.1:3000:3000" in command
    assert not any(":8001" in part for part in containers.run_command("podman", "x", 3000))
