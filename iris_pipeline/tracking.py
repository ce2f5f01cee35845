"""MLflow tracking and the hand-over of the chosen MLflow run to the BentoML model store."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iris_pipeline.paths import DEFAULT_MLFLOW_DIR, DEFAULT_MLFLOW_URI
from iris_service.settings import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME

if TYPE_CHECKING:
    import bentoml

    from .feedback_data import FeedbackSet
    from .training import CandidateResult, Dataset


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an embedded SQLite store inside the project
    (iris_pipeline.paths.use_project_stores)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    if uri == DEFAULT_MLFLOW_URI:
        DEFAULT_MLFLOW_DIR.mkdir(parents=True, exist_ok=True)
    return uri


def ensure_experiment(name: str) -> str:
    """Experiment id for `name`; artifacts of a local SQLite store stay under state/mlflow."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri().startswith("sqlite:///"):
        db_path = Path(tracking_uri().removeprefix("sqlite:///"))
        artifact_location = (db_path.parent / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def _confusion_matrix_png(result: CandidateResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay(result.confusion, display_labels=list(CLASS_NAMES)).plot(
        ax=axes, colorbar=False
    )
    axes.set_title(f"{result.family} (held-out test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def log_candidate(
    result: CandidateResult,
    data: Dataset,
    stats: dict[str, Any],
    experiment_id: str,
    feedback: FeedbackSet | None = None,
) -> str:
    """One MLflow run per candidate: params, metrics, confusion matrix, statistics, model.

    The model is saved as a pickle, not MLflow's default skops: importing skops.io takes
    about 8 s (it walks scikit-learn to build its trusted-type list), which alone would
    break the 5 s cold-start budget. Pickle is only safe for files you trust: the service
    loads nothing but models this script wrote into its own store, and verifies their
    SHA-256 (recorded at import) before unpickling.
    """
    import mlflow
    from mlflow.models import infer_signature

    with mlflow.start_run(experiment_id=experiment_id, run_name=result.family) as run:
        mlflow.set_tags({"model_family": result.family, "dataset": "iris"})
        mlflow.log_params(result.params)
        mlflow.log_metrics(result.metrics)
        with tempfile.TemporaryDirectory() as scratch:
            png = Path(scratch) / "confusion_matrix.png"
            _confusion_matrix_png(result, png)
            mlflow.log_artifact(str(png))
        mlflow.log_dict(stats, "feature_statistics.json")
        if feedback is not None:
            log_feedback_dataset(feedback)
        example = data.x_train.iloc[:3]
        with quiet_model_logging():
            info = mlflow.sklearn.log_model(
                result.model,
                name="model",
                signature=infer_signature(example, result.model.predict_proba(example.to_numpy())),
                input_example=example,
                pyfunc_predict_fn="predict_proba",
                serialization_format="pickle",
            )
        result.model_uri = info.model_uri
        return run.info.run_id


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def quiet_model_logging() -> Iterator[None]:
    """Silence the two messages every candidate's `log_model` printed although nothing is
    wrong, and only those:

    - MLflow's WARNING that pickle can run code when loaded: the choice is deliberate and
      guarded (log_candidate's docstring), so repeating it per candidate reads as an error;
    - scikit-learn's "X has feature names, but ... was fitted without feature names": MLflow
      checks the input example (a DataFrame, for the signature's column names) against the
      model, which is fitted on arrays because the service sends arrays.
    """
    sklearn_logger = logging.getLogger("mlflow.sklearn")
    pickle_note = _DropMessage("Saving scikit-learn models in the pickle")
    sklearn_logger.addFilter(pickle_note)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="X has feature names, but", category=UserWarning
            )
            yield
    finally:
        sklearn_logger.removeFilter(pickle_note)


def log_feedback_dataset(feedback: FeedbackSet) -> None:
    """The labelled feedback a run trained on, as an MLflow dataset input (its size, digest
    and schema in the run's inputs) with its size and time range as parameters."""
    import mlflow

    frame = feedback.x.assign(class_name=[CLASS_NAMES[c] for c in feedback.y])
    with warnings.catch_warnings():
        # A local path matches two of MLflow's source kinds; it says so and picks the local
        # file one, which is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        dataset = mlflow.data.from_pandas(
            frame, source=feedback.source, name="feedback", targets="class_name"
        )
    mlflow.log_input(dataset, context="training")
    time_range = feedback.time_range()
    mlflow.log_params(
        {
            "feedback_labels": len(feedback),
            "feedback_first_label": time_range[0] if time_range else "none",
            "feedback_last_label": time_range[1] if time_range else "none",
        }
    )


def register_best(best: CandidateResult, registered_name: str = MODEL_NAME) -> str:
    """Register the chosen run's model in the MLflow model registry; returns its version."""
    import mlflow

    # The logged model's own URI: `runs:/<id>/model` makes MLflow print that the run has no
    # artifacts at that path before resolving it to the same model.
    version = mlflow.register_model(
        best.model_uri or f"runs:/{best.run_id}/model",
        registered_name,
        tags={"model_family": best.family},
    )
    mlflow.MlflowClient().set_tag(best.run_id, "selected", "true")
    return str(version.version)


def log_gate_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """The chosen model's figures on the gate set, logged (as gate_*) after the choice."""
    from mlflow import MlflowClient

    for key, value in metrics.items():
        MlflowClient(tracking_uri()).log_metric(run_id, f"gate_{key}", value)


def import_into_bentoml(
    best: CandidateResult,
    stats: dict[str, Any],
    registered_version: str,
    experiment_name: str,
    bento_model_name: str = MODEL_NAME,
    gate_macro_f1: float | None = None,
) -> bentoml.Model:
    """Copy that MLflow run's model into the BentoML store, labelled with its lineage."""
    assert best.run_id is not None
    return import_run_model(
        best.run_id,
        best.family,
        best.metrics,
        stats,
        registered_version,
        experiment_name,
        bento_model_name,
        gate_macro_f1,
    )


def import_run_model(
    run_id: str,
    family: str,
    metrics: dict[str, float],
    stats: dict[str, Any],
    registered_version: str,
    experiment_name: str,
    bento_tag: str = MODEL_NAME,
    gate_macro_f1: float | None = None,
) -> bentoml.Model:
    """Copy a run's model into the BentoML store as `bento_tag` (a name gets a new version;
    a full `name:version` restores that very tag, see iris_pipeline/restore.py)."""
    import bentoml

    labels = {
        "mlflow_run_id": run_id,
        "model_family": family,
        "test_macro_f1": f"{metrics['test_macro_f1']:.4f}",
        "test_accuracy": f"{metrics['test_accuracy']:.4f}",
        "cv_macro_f1": f"{metrics['cv_macro_f1_mean']:.4f}",
        "mlflow_registered_version": registered_version,
    }
    if gate_macro_f1 is not None:
        labels["gate_macro_f1"] = f"{gate_macro_f1:.4f}"
    metadata = {
        "mlflow_run_id": run_id,
        "mlflow_experiment": experiment_name,
        "mlflow_tracking_uri": tracking_uri(),
        "model_family": family,
        "metrics": metrics,
        "feature_names": list(FEATURE_NAMES),
        "class_names": list(CLASS_NAMES),
        "feature_statistics": json.loads(json.dumps(stats)),
    }
    model_uri = f"runs:/{run_id}/model"
    metadata["model_file_sha256"] = _model_file_sha256(model_uri)
    return bentoml.mlflow.import_model(
        bento_tag, model_uri=model_uri, labels=labels, metadata=metadata
    )


def _model_file_sha256(model_uri: str) -> str:
    """Checksum of the serialized estimator, checked by the service before loading it."""
    import hashlib

    import mlflow
    import yaml

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=scratch))
        flavour = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
        return hashlib.sha256((local / flavour["pickled_model"]).read_bytes()).hexdigest()


def model_in_store(tag: str) -> bool:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True
