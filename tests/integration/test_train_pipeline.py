"""train.py end to end against a real MLflow SQLite store and a real BentoML model store."""

import hashlib
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from mlflow.tracking import MlflowClient

from iris_pipeline import compiling, tracking, training
from iris_pipeline.paths import PROJECT_ROOT
from iris_service.names import FEATURE_NAMES
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


def test_every_candidate_is_compiled_checked_and_logged_as_onnx(store: ProjectState) -> None:
    """Each run records its ONNX equivalence and holds the ONNX model (MLflow's onnx flavour)
    that answers like the run's scikit-learn model; the tie-break latency is ONNX Runtime's."""
    client = MlflowClient(store.mlflow_uri)
    experiment = client.get_experiment_by_name("iris-classifier")
    _, _, x_gate, _ = training.gate_set()
    for run in client.search_runs([experiment.experiment_id]):
        metrics, run_id = run.data.metrics, run.info.run_id
        assert run.data.tags["onnx_equivalent"] == "true", run.data.tags
        assert 0.0 <= metrics["onnx_max_abs_diff"] <= compiling.MAX_ABS_DIFF
        assert metrics["onnx_rows_checked"] == 150
        # Both latencies are recorded; which is faster is a measurement (`make bench`: FastAPI
        # with scikit-learn beside FastAPI with ONNX Runtime), not a pass/fail check here.
        assert metrics["predict_latency_ms"] > 0 and metrics["sklearn_predict_latency_ms"] > 0
        info = mlflow.models.get_model_info(f"runs:/{run_id}/{tracking.ONNX_ARTIFACT}")
        assert "onnx" in info.flavors
        onnx_model = mlflow.onnx.load_model(f"runs:/{run_id}/{tracking.ONNX_ARTIFACT}")
        compiled = compiling.CompiledModel(onnx_model.SerializeToString())
        sklearn_model = mlflow.sklearn.load_model(f"runs:/{run_id}/model")
        rows = x_gate.to_numpy()
        answered = compiling.OnnxPredictor(compiled).predict_proba(rows)
        assert np.max(np.abs(answered - sklearn_model.predict_proba(rows))) <= 1e-5


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


def test_the_bentoml_model_holds_the_checked_onnx_model_beside_the_mlflow_model(
    store: ProjectState,
) -> None:
    """The contract the service relies on: model.onnx at the root, named and checksummed in
    the metadata, answering like the scikit-learn model kept in mlflow_model/."""
    bento_model = _bento_model(store)
    metadata = bento_model.info.metadata
    folder = Path(bento_model.path)
    onnx_bytes = (folder / "model.onnx").read_bytes()
    assert metadata["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert metadata["onnx_input"] == "X"
    assert metadata["onnx_probabilities_output"] == "probabilities"
    assert metadata["onnx_opset"] == compiling.TARGET_OPSET
    equivalence = metadata["onnx_equivalence"]
    assert set(equivalence) == {"passed", "max_abs_diff", "rows"}
    assert equivalence["passed"] is True and equivalence["rows"] == 150
    assert 0.0 <= equivalence["max_abs_diff"] <= compiling.MAX_ABS_DIFF
    for key in ("class_names", "feature_names", "metrics", "mlflow_run_id", "model_file_sha256"):
        assert key in metadata
    mlflow_model = folder / "mlflow_model"
    sklearn_flavour = yaml.safe_load((mlflow_model / "MLmodel").read_text())["flavors"]["sklearn"]
    pickled = (mlflow_model / sklearn_flavour["pickled_model"]).read_bytes()
    assert metadata["model_file_sha256"] == hashlib.sha256(pickled).hexdigest()

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    _, _, x_gate, _ = training.gate_set()
    rows = x_gate.to_numpy()
    (probabilities,) = session.run(
        [metadata["onnx_probabilities_output"]], {metadata["onnx_input"]: rows.astype("float32")}
    )
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(rows), 3)
    expected = mlflow.sklearn.load_model(str(mlflow_model)).predict_proba(rows)
    assert np.max(np.abs(probabilities - expected)) <= 1e-5

    client = MlflowClient(store.mlflow_uri)
    version = client.get_model_version(
        "iris-classifier", bento_model.info.labels["mlflow_registered_version"]
    )
    assert version.tags["onnx_equivalent"] == "true"
    assert float(version.tags["onnx_max_abs_diff"]) == equivalence["max_abs_diff"]
    assert version.tags["onnx_sha256"] == metadata["onnx_sha256"]


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
