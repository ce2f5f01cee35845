"""train.py end to end against a real MLflow SQLite store and a real BentoML model store."""

import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from iris_pipeline.paths import PROJECT_ROOT
from iris_service.settings import FEATURE_NAMES
from tools.local_server import ProjectState


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_describes_the_options() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0
    for option in ("--experiment-name", "--candidates", "--seed", "--if-missing", "--label-noise"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--candidates", "xgboost"), "unknown candidate"),
        (("--test-size", "0.9"), "--test-size"),
        (("--seed", "abc"), "invalid int"),
        (("--label-noise", "1.5"), "--label-noise"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    result = _run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def store(trained_state: ProjectState):
    bentoml_home = str(trained_state.bentoml_home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", bentoml_home)
        mlflow.set_tracking_uri(trained_state.mlflow_uri)
        yield trained_state
        mlflow.set_tracking_uri(None)


def _bento_model(state: ProjectState):
    from bentoml._internal.models.model import ModelStore

    return ModelStore(state.bentoml_home / "models").get("iris-classifier:latest")


def test_every_candidate_is_a_tracked_run(store: ProjectState) -> None:
    client = MlflowClient(store.mlflow_uri)
    experiment = client.get_experiment_by_name("iris-classifier")
    runs = client.search_runs([experiment.experiment_id])
    families = {run.data.tags["model_family"] for run in runs}
    assert families == {"logistic_regression", "random_forest", "svm", "gradient_boosting"}
    for run in runs:
        for metric in ("cv_macro_f1_mean", "cv_accuracy_mean", "test_macro_f1", "test_accuracy"):
            assert 0.5 < run.data.metrics[metric] <= 1.0
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "feature_statistics.json"} <= artifacts
        model = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
        assert model.signature is not None and model.saved_input_example_info is not None


def test_bentoml_model_is_the_best_runs_model(store: ProjectState) -> None:
    client = MlflowClient(store.mlflow_uri)
    bento_model = _bento_model(store)
    labels = bento_model.info.labels
    run = client.get_run(labels["mlflow_run_id"])
    assert run.data.tags["selected"] == "true"
    assert run.data.tags["model_family"] == labels["model_family"]
    assert labels["test_macro_f1"] == f"{run.data.metrics['test_macro_f1']:.4f}"
    experiment = client.get_experiment_by_name("iris-classifier")
    best_f1 = max(
        r.data.metrics["test_macro_f1"] for r in client.search_runs([experiment.experiment_id])
    )
    assert run.data.metrics["test_macro_f1"] == best_f1
    registered = client.get_model_version("iris-classifier", labels["mlflow_registered_version"])
    assert registered.run_id == labels["mlflow_run_id"]
    stats = bento_model.info.metadata["feature_statistics"]
    assert set(stats) == set(FEATURE_NAMES)


def test_if_missing_does_not_train_again(store: ProjectState) -> None:
    before = _bento_model(store).tag
    result = store.train("--if-missing")
    assert result.returncode == 0, result.stderr
    assert "is in the BentoML store; not training" in result.stdout
    assert _bento_model(store).tag == before


@pytest.mark.timeout(300)
def test_the_output_reads_as_a_report_not_as_errors(tmp_path) -> None:
    """Every line of a training says something the user needs: the stores, one row per
    candidate, how the winner was chosen, its role; no library warning."""
    state = ProjectState(tmp_path / "state")
    result = state.train("--candidates", "logistic_regression", "svm", "--cv-folds", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Stores: MLflow {state.mlflow_uri}, BentoML {state.bentoml_home}" in output
    assert "Chosen: " in output and "(next: " in output
    assert "Version 1 is the champion (the registry had none yet)." in output
    for noise in ("WARNING", "UserWarning", "warnings.warn", "has no artifacts", "interpreted"):
        assert noise not in output, noise
