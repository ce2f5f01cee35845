"""Environment knobs are checked when the service starts: a wrong value is a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.settings import (
    Settings,
    SettingsError,
    bentoml_home,
    env_name,
    environment_names,
    load_settings,
)

READ = "from iris_service.settings import settings as s; print(s.challenger_mode, s.canary_share)"


@pytest.fixture(autouse=True)
def _no_iris_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the caller's environment sets."""
    for name in environment_names():
        monkeypatch.delenv(name, raising=False)


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


def _refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    return str(refused.value)


def test_challenger_defaults_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.challenger_mode, defaults.canary_share) == ("none", 0.1)
    monkeypatch.setenv("IRIS_CHALLENGER_MODE", " Canary ")
    monkeypatch.setenv("IRIS_CANARY_SHARE", "0.25")
    chosen = load_settings()
    assert (chosen.challenger_mode, chosen.canary_share) == ("canary", 0.25)


def test_a_wrong_value_stops_the_import_with_one_line() -> None:
    """The object is made at import: a process that imports the settings fails at once."""
    assert _settings().stdout.split() == ["none", "0.1"]
    result = _settings(IRIS_CHALLENGER_MODE="blue")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("iris_service.settings.SettingsError: IRIS_CHALLENGER_MODE must be")


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
        ({"IRIS_RECORD_INPUTS": "maybe"}, "IRIS_RECORD_INPUTS must be true or false"),
        ({"IRIS_MAX_BODY_BYTES": "1.5"}, "IRIS_MAX_BODY_BYTES must be an integer"),
    ],
)
def test_a_wrong_value_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    said = _refusal(monkeypatch, **env)
    assert message in said
    assert "\n" not in said  # one line


def test_every_wrong_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    said = _refusal(monkeypatch, IRIS_CANARY_SEED="0", IRIS_FEEDBACK_WINDOW="x")
    assert "IRIS_CANARY_SEED must be positive, got 0" in said
    assert "IRIS_FEEDBACK_WINDOW must be an integer, got 'x'" in said
    assert "\n" not in said


def test_the_grpc_port_is_8001_a_number_0_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def port(value: str) -> int | None:
        monkeypatch.setenv("IRIS_GRPC_PORT", value)
        return load_settings().grpc_port

    assert load_settings().grpc_port == 8001
    assert port("9001") == 9001
    assert port("0") == 0
    assert port("Off") is None
    assert port(" no ") is None


def test_every_field_is_read_from_iris_and_its_capitalised_name() -> None:
    names = environment_names()
    assert len(names) == len(Settings.model_fields)
    assert list(names) == [env_name(field) for field in Settings.model_fields]
    assert all(name.startswith("IRIS_") and name.isupper() for name in names)
    assert all(description for description in names.values())  # self-documenting
    for field in Settings.model_fields:
        assert env_name(field) == "IRIS_" + field.upper()
    assert {"IRIS_MAX_BATCH_FLOWERS", "IRIS_RUNNER_HOP_MS", "IRIS_API_KEY"} <= set(names)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("model_tag", "iris-classifier:abc", "iris-classifier:abc"),
        ("challenger_tag", "iris-classifier:b", "iris-classifier:b"),
        ("max_batch_flowers", "10", 10),
        ("runner_min_rows", "0", 0),
        ("runner_hop_ms", "4", 4.0),
        ("record_inputs", "no", False),
        ("expose_measurement_headers", " On ", True),
        ("record_store_url", "postgresql://u:p@db/records", "postgresql://u:p@db/records"),
        ("record_store_url", " OFF ", None),
    ],
)
def test_each_variable_sets_its_field(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(env_name(field), value)
    assert getattr(load_settings(), field) == expected


def test_an_empty_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    for name in environment_names():
        monkeypatch.setenv(name, "")
    assert load_settings() == defaults
    assert defaults.record_store_url == f"sqlite:///{bentoml_home()}/records/records.db"
    assert defaults.runner_hop_seconds == 0.002


def test_the_record_store_defaults_under_the_bentoml_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    found = load_settings()
    assert found.record_store_url == f"sqlite:///{tmp_path}/records/records.db"
    assert found.grpc_port_file == str(tmp_path / "grpc_port")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"IRIS_RUNNER_PING_TIMEOUT_SECONDS": "10", "IRIS_RUNNER_LIVENESS_GRACE_SECONDS": "5"},
            "IRIS_RUNNER_LIVENESS_GRACE_SECONDS must be at least IRIS_RUNNER_PING_TIMEOUT_SECONDS",
        ),
        (
            {"IRIS_RECORD_STORE_SHARED_REQUIRED": "true"},
            "IRIS_RECORD_STORE_SHARED_REQUIRED=true needs IRIS_RECORD_STORE_URL=postgresql://",
        ),
        (
            {"IRIS_RECORD_STORE_SHARED_REQUIRED": "true", "IRIS_RECORD_STORE_URL": "off"},
            "IRIS_RECORD_STORE_SHARED_REQUIRED=true needs IRIS_RECORD_STORE_URL=postgresql://",
        ),
        ({"IRIS_MAX_BATCH_FLOWERS": "1001"}, "IRIS_MAX_BATCH_FLOWERS=1001 is larger than"),
        ({"IRIS_MAX_BODY_BYTES": "1000"}, "IRIS_MAX_BODY_BYTES=1000 is too small"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    assert message in _refusal(monkeypatch, **env)


def test_consistent_limits_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_RECORD_STORE_SHARED_REQUIRED", "true")
    monkeypatch.setenv("IRIS_RECORD_STORE_URL", "postgresql://u:p@db/records")
    monkeypatch.setenv("IRIS_RUNNER_PING_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("IRIS_RUNNER_LIVENESS_GRACE_SECONDS", "5")
    monkeypatch.setenv("IRIS_MAX_BATCH_FLOWERS", "10")
    monkeypatch.setenv("IRIS_MAX_BODY_BYTES", "2000")
    assert load_settings().max_body_bytes == 2000


def test_api_keys_are_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_API_KEY", "a-secret-key-0123456789")
    found = load_settings()
    assert found.api_keys == ("a-secret-key-0123456789",)
    assert "a-secret-key" not in repr(found)
