"""The rule every entry point follows for its stores (iris_pipeline/paths.py)."""

from __future__ import annotations

from iris_pipeline.paths import DEFAULT_BENTOML_HOME, DEFAULT_MLFLOW_URI, use_project_stores


def test_unset_stores_are_the_projects() -> None:
    env: dict[str, str] = {}
    assert use_project_stores(env) is None
    assert env["BENTOML_HOME"] == str(DEFAULT_BENTOML_HOME)
    assert env["MLFLOW_TRACKING_URI"] == DEFAULT_MLFLOW_URI


def test_stores_named_in_the_environment_win() -> None:
    env = {"BENTOML_HOME": "/b", "MLFLOW_TRACKING_URI": "sqlite:////m.db"}
    assert use_project_stores(env) is None
    assert env["BENTOML_HOME"] == "/b" and env["MLFLOW_TRACKING_URI"] == "sqlite:////m.db"


def test_naming_only_one_store_is_warned_about() -> None:
    env = {"MLFLOW_TRACKING_URI": "sqlite:////m.db"}
    warning = use_project_stores(env)
    assert warning is not None and "only MLFLOW_TRACKING_URI is set" in warning
    assert env["BENTOML_HOME"] == str(DEFAULT_BENTOML_HOME)
