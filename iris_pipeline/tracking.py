"""MLflow tracking and the hand-over of the chosen MLflow run to the BentoML model store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iris_pipeline.explanation_background import (
    BACKGROUND_FILE,
    background_document,
    background_sample,
)
from iris_pipeline.paths import DEFAULT_MLFLOW_DIR, DEFAULT_MLFLOW_URI
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME

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
    """One MLflow run per candidate: params, metrics, confusion matrix, statistics, the
    scikit-learn model (`model`) and its compiled form (`onnx_model`, log_compilation).

    The scikit-learn model is saved as a pickle, not MLflow's default skops (importing
    skops.io takes about 8 s): it is for MLflow-side consumers (`mlflow models serve`, the
    benchmark's peers), which load only models this pipeline wrote. The service never
    unpickles anything: it runs the ONNX model.
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
        mlflow.log_dict(background_document(background_sample(data.x_train)), BACKGROUND_FILE)
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
                pip_requirements=_pinned("scikit-learn", "numpy", "scipy", "pandas"),
            )
        result.model_uri = info.model_uri
        log_compilation(result)
        return run.info.run_id


ONNX_ARTIFACT = "onnx_model"


def log_compilation(result: CandidateResult) -> None:
    """In the active run: whether the candidate compiled to an equivalent ONNX model (tags
    `onnx_equivalent`, `onnx_refusal`; metrics `onnx_max_abs_diff`, `onnx_rows_*`, set by
    compiling.compile_candidate) and, when it did, the ONNX model as the MLflow model
    `onnx_model` (the ONNX flavour: `mlflow.onnx.load_model` or pyfunc can load it)."""
    import mlflow

    compilation = result.compilation
    if compilation is None:
        return
    equivalence = compilation.equivalence
    tags = {"onnx_equivalent": str(equivalence.passed).lower()}
    if not equivalence.passed:
        tags["onnx_refusal"] = equivalence.reason[:5000]
    mlflow.set_tags(tags)
    compiled = compilation.compiled
    if compiled is None:
        return
    import onnx

    mlflow.onnx.log_model(
        onnx.load_from_string(compiled.onnx_bytes),
        name=ONNX_ARTIFACT,
        signature=_onnx_signature(),
        pip_requirements=_pinned("onnx", "onnxruntime"),
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        metadata={"sha256": compiled.sha256, "opset": compiled.opset},
    )


def _onnx_signature() -> Any:
    """Input `X` float32 [rows, features]; outputs `label` int64 [rows] and `probabilities`
    float32 [rows, classes] (compiling.convert checks these names)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from .compiling import INPUT_NAME, LABEL_OUTPUT, PROBABILITIES_OUTPUT

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(FEATURE_NAMES)), INPUT_NAME)]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.int64), (-1,), LABEL_OUTPUT),
                TensorSpec(np.dtype(np.float32), (-1, len(CLASS_NAMES)), PROBABILITIES_OUTPUT),
            ]
        ),
    )


def _pinned(*distributions: str) -> list[str]:
    """Exact pins (the installed versions) of what a logged model needs to run; MLflow adds
    itself. Given, because MLflow would otherwise infer them by loading the model in a
    subprocess: about 5 s per logged model, most of a small training."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


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
        # A database URL (PostgreSQL) is no source MLflow can resolve: the run's code is
        # named instead, and the store in the feedback_store parameter.
        source = None if "://" in feedback.source else feedback.source
        dataset = mlflow.data.from_pandas(
            frame, source=source, name="feedback", targets="class_name"
        )
    mlflow.log_input(dataset, context="training")
    time_range = feedback.time_range()
    mlflow.log_params(
        {
            "feedback_labels": len(feedback),
            "feedback_store": feedback.source,
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
        tags={"model_family": best.family, **onnx_version_tags(best)},
    )
    mlflow.MlflowClient().set_tag(best.run_id, "selected", "true")
    return str(version.version)


def onnx_version_tags(best: CandidateResult) -> dict[str, str]:
    """The registry version's record of its compiled model (gate.compiled_check reads it)."""
    if best.compilation is None or best.compilation.compiled is None:
        return {"onnx_equivalent": "false"}
    equivalence, compiled = best.compilation.equivalence, best.compilation.compiled
    return {
        "onnx_equivalent": str(equivalence.passed).lower(),
        "onnx_max_abs_diff": repr(equivalence.max_abs_diff),
        "onnx_sha256": compiled.sha256,
    }


def log_gate_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """The chosen model's figures on the gate set, logged (as gate_*) after the choice."""
    from mlflow import MlflowClient

    for key, value in metrics.items():
        MlflowClient(tracking_uri()).log_metric(run_id, f"gate_{key}", value)


MLFLOW_MODEL_DIR = "mlflow_model"


def import_into_bentoml(
    best: CandidateResult,
    stats: dict[str, Any],
    registered_version: str,
    experiment_name: str,
    bento_model_name: str = MODEL_NAME,
    gate_macro_f1: float | None = None,
) -> bentoml.Model:
    """A new version of the BentoML model from the chosen run (import_run_model), after
    checking that the candidate compiled to an equivalent ONNX model."""
    compilation = best.compilation
    if compilation is None or compilation.compiled is None or not compilation.servable:
        reason = compilation.equivalence.reason if compilation else "it was not compiled"
        raise ValueError(f"{best.family} has no equivalent ONNX model ({reason})")
    assert best.run_id is not None
    compiled = compilation.compiled
    return import_run_model(
        best.run_id,
        best.family,
        best.metrics,
        stats,
        registered_version,
        experiment_name,
        bento_model_name,
        gate_macro_f1,
        onnx={
            "onnx_sha256": compiled.sha256,
            "onnx_input": compiled.input_name,
            "onnx_probabilities_output": compiled.probabilities_output,
            "onnx_opset": compiled.opset,
            "onnx_equivalence": compilation.equivalence.as_metadata(),
        },
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
    onnx: dict[str, Any] | None = None,
) -> bentoml.Model:
    """A BentoML model `bento_tag` (a name gets a new version; a full `name:version` restores
    that very tag, see iris_pipeline/restore.py) holding the run's two models as MLflow
    logged them:

    - `model.onnx` at its root: the compiled model, the only file the service loads;
    - `mlflow_model/`: the MLflow model directory (MLmodel and the scikit-learn pickle), for
      MLflow-side consumers and the `/invocations` flavour information;
    - `explanation_background.json`: the run's background sample for explanations, when the
      run logged one (runs older than explanations did not: their version serves without).

    The metadata names what the service needs to run `model.onnx` (`onnx_input`,
    `onnx_probabilities_output`: float32 [rows, classes] in CLASS_NAMES order, `onnx_opset`)
    and how to trust it (`onnx_sha256`, `onnx_equivalence`). `onnx` is that record as
    training checked it; without it (a restore) it is read back from the run's own record.
    """
    import bentoml
    import mlflow

    from iris_service.inference.model_loading import BACKGROUND_METADATA

    from .compiling import ONNX_FILE

    labels = {
        "mlflow_run_id": run_id,
        "model_family": family,
        "test_macro_f1": f"{metrics['test_macro_f1']:.4f}",
        "test_accuracy": f"{metrics['test_accuracy']:.4f}",
        "cv_macro_f1": f"{metrics['cv_macro_f1_mean']:.4f}",
        "mlflow_registered_version": registered_version,
        "runtime": "onnx",
    }
    if gate_macro_f1 is not None:
        labels["gate_macro_f1"] = f"{gate_macro_f1:.4f}"
    with tempfile.TemporaryDirectory() as scratch:
        mlflow_model = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run_id}/model", dst_path=str(Path(scratch) / "sklearn")
            )
        )
        onnx_model = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run_id}/{ONNX_ARTIFACT}", dst_path=str(Path(scratch) / "onnx")
            )
        )
        onnx_bytes = (onnx_model / ONNX_FILE).read_bytes()
        record = onnx or _onnx_record_of_run(run_id, onnx_bytes)
        if hashlib.sha256(onnx_bytes).hexdigest() != record["onnx_sha256"]:
            raise RuntimeError(
                f"the ONNX model logged in MLflow run {run_id} is not the one whose "
                "equivalence was checked (SHA-256 differs)"
            )
        background = _run_background(run_id, Path(scratch) / "background")
        metadata = {
            "mlflow_run_id": run_id,
            "mlflow_experiment": experiment_name,
            "mlflow_tracking_uri": tracking_uri(),
            "model_family": family,
            "metrics": metrics,
            "feature_names": list(FEATURE_NAMES),
            "class_names": list(CLASS_NAMES),
            "feature_statistics": json.loads(json.dumps(stats)),
            **record,
            "model_file_sha256": _model_file_sha256(mlflow_model),
        }
        if background is not None:
            metadata[BACKGROUND_METADATA] = {
                "rows": len(json.loads(background)["rows"]),
                "sha256": hashlib.sha256(background).hexdigest(),
            }
        with bentoml.models.create(bento_tag, labels=labels, metadata=metadata) as bento_model:
            shutil.copytree(mlflow_model, bento_model.path_of(MLFLOW_MODEL_DIR))
            Path(bento_model.path_of(ONNX_FILE)).write_bytes(onnx_bytes)
            if background is not None:
                Path(bento_model.path_of(BACKGROUND_FILE)).write_bytes(background)
    return bentoml.models.get(bento_model.tag)


def _run_background(run_id: str, scratch: Path) -> bytes | None:
    """The bytes of the run's logged background sample; None for a run without one."""
    import mlflow
    from mlflow import MlflowClient

    names = {artifact.path for artifact in MlflowClient(tracking_uri()).list_artifacts(run_id)}
    if BACKGROUND_FILE not in names:
        return None
    path = mlflow.artifacts.download_artifacts(
        f"runs:/{run_id}/{BACKGROUND_FILE}", dst_path=str(scratch)
    )
    return Path(path).read_bytes()


def _onnx_record_of_run(run_id: str, onnx_bytes: bytes) -> dict[str, Any]:
    """The ONNX record of a run as training logged it (tags `onnx_equivalent`, metrics
    `onnx_max_abs_diff`, `onnx_rows_checked`); a run whose ONNX model was not equivalent
    cannot be restored into the store the service loads from."""
    import onnx
    from mlflow import MlflowClient

    from .compiling import INPUT_NAME, PROBABILITIES_OUTPUT

    run = MlflowClient(tracking_uri()).get_run(run_id)
    if run.data.tags.get("onnx_equivalent") != "true":
        raise ValueError(f"run {run_id} has no equivalent ONNX model; it cannot be served")
    metrics = run.data.metrics
    opset = max(
        (
            entry.version
            for entry in onnx.load_from_string(onnx_bytes).opset_import
            if entry.domain in ("", "ai.onnx")
        ),
        default=0,
    )
    return {
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "onnx_input": INPUT_NAME,
        "onnx_probabilities_output": PROBABILITIES_OUTPUT,
        "onnx_opset": int(opset),
        "onnx_equivalence": {
            "passed": True,
            "max_abs_diff": float(metrics.get("onnx_max_abs_diff", 0.0)),
            "rows": int(metrics.get("onnx_rows_checked", 0)),
        },
    }


def _model_file_sha256(mlflow_model: Path) -> str:
    """Checksum of the serialized scikit-learn estimator in an MLflow model directory."""
    import yaml

    flavour = yaml.safe_load((mlflow_model / "MLmodel").read_text())["flavors"]["sklearn"]
    return hashlib.sha256((mlflow_model / flavour["pickled_model"]).read_bytes()).hexdigest()


def model_in_store(tag: str) -> bool:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(tag)
    except NotFound:
        return False
    return True
