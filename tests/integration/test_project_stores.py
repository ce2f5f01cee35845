"""Every entry point resolves the project's stores the same way, whoever starts it, and a
champion whose model the BentoML store lost is restored, never replaced without the gate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from iris_pipeline.paths import DEFAULT_BENTOML_HOME, DEFAULT_MLFLOW_URI, PROJECT_ROOT
from iris_service.inference.model_aliases import read_aliases
from iris_service.names import MODEL_NAME
from tools.local_server import ProjectState

pytestmark = pytest.mark.timeout(600)

SMALL = ("--candidates", "logistic_regression", "--cv-folds", "2")
EXIT_REFUSED = 3
STORE_VARIABLES = ("BENTOML_HOME", "MLFLOW_TRACKING_URI", "BENTOML_CONFIG")
PRINT_STORES = (
    "from bentoml._internal.configuration.containers import BentoMLContainer\n"
    "from iris_pipeline import tracking\n"
    "print(BentoMLContainer.bentoml_home.get())\n"
    "print(tracking.tracking_uri())\n"
)


def _stores_seen_by(entry_module: str, **env: str) -> list[str]:
    """The BentoML home and MLflow URI that `entry_module` ends up with, started by a plain
    `python` (no make) with `env` on top of an environment that names no store."""
    clean = {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", f"import {entry_module}\n{PRINT_STORES}"],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.split()


@pytest.mark.parametrize("entry", ["train", "iris_pipeline.lifecycle", "tools.report"])
def test_an_entry_point_started_without_make_uses_the_project_stores(entry: str) -> None:
    assert _stores_seen_by(entry) == [str(DEFAULT_BENTOML_HOME), DEFAULT_MLFLOW_URI]


def test_stores_named_in_the_environment_win(tmp_path) -> None:
    home, uri = str(tmp_path / "home"), f"sqlite:///{tmp_path / 'm.db'}"
    assert _stores_seen_by("train", BENTOML_HOME=home, MLFLOW_TRACKING_URI=uri) == [home, uri]


def test_a_champion_lost_from_the_bentoml_store_is_restored_not_replaced(tmp_path) -> None:
    state = ProjectState(tmp_path / "state")
    first = state.train(*SMALL, "--seed", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    champion_tag = read_aliases(MODEL_NAME, state.bentoml_home).champion
    assert champion_tag is not None
    shutil.rmtree(state.bentoml_home / "models")  # a wiped store, a new machine, CI

    noisy = state.train(*SMALL, "--seed", "7", "--label-noise", "0.4")
    output = noisy.stdout + noisy.stderr
    assert noisy.returncode == 0, output
    assert f"Restored the champion's model {champion_tag}" in output
    assert "Version 2 is the challenger" in output
    client = MlflowClient(state.mlflow_uri)
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    aliases = read_aliases(MODEL_NAME, state.bentoml_home)
    assert aliases.champion == champion_tag
    name, version = champion_tag.split(":")
    assert (state.bentoml_home / "models" / name / version / "model.yaml").is_file()

    refused = state.lifecycle("promote")
    assert refused.returncode == EXIT_REFUSED, refused.stdout + refused.stderr
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
