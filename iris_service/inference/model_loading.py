"""Load a stored model version in its compiled form (ONNX) and check it before it serves.

The pipeline stores every version in the BentoML store with `model.onnx` at the root of its
folder (converted from scikit-learn with skl2onnx and checked for equivalence at training)
and its MLflow model under `mlflow_model/` (for MLflow-side tools; never read here beyond
the MLmodel text). The service runs the ONNX graph with ONNX Runtime: no file is unpickled
at serving time, so a model file cannot run code in the server, and the served set needs
neither scikit-learn nor SciPy. The file's SHA-256 must match the one training recorded.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bentoml.exceptions import BentoMLException

from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.settings import bentoml_home

ONNX_FILE = "model.onnx"
# The explanations' background sample (iris_pipeline/explanation_background.py), beside
# model.onnx; metadata `explanation_background` records its rows and SHA-256. A version
# without them serves, and explaining it answers 409.
BACKGROUND_FILE = "explanation_background.json"
BACKGROUND_METADATA = "explanation_background"
# A typical versicolor flower, in FEATURE_NAMES order: the smoke prediction of a loaded model.
SMOKE_FLOWER = (5.9, 2.8, 4.3, 1.3)
# Rows of the timing run that measures a model's cost per row when it is loaded.
_TIMING_ROWS = 256


class ModelUnavailableError(BentoMLException, RuntimeError):
    """The model is missing from the store or cannot be loaded: one clear line for operators.

    A BentoMLException, so that `bentoml serve` prints it as one line
    (`Error: [serve] serve failed: ...`) and exits 1 instead of a traceback.
    """


@dataclass(frozen=True)
class ModelVersion:
    """A model version, from the store to the answer that names it: its tag, classes and
    metadata (CompiledModel adds what it needs to predict)."""

    tag: str
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(compare=False, repr=False)
    path: str | None = field(default=None, compare=False)  # the model's folder in the store

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]


@dataclass(frozen=True)
class CompiledModel(ModelVersion):
    """A served model version with its ONNX Runtime session, ready to predict."""

    session: Any = field(default=None, compare=False, repr=False)
    input_name: str = field(default="X", compare=False)
    output_name: str = field(default="probabilities", compare=False)
    # Seconds one row costs in a large batch (measured at load): the core uses it to decide
    # which batches are worth the runner hop.
    seconds_per_row: float = field(default=0.0, compare=False)
    # The explanations' background sample, float64 [rows, features]; None: not stored.
    background: np.ndarray | None = field(default=None, compare=False, repr=False)

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities (float64, CLASS_NAMES order) for rows of the four measurements."""
        features = np.ascontiguousarray(rows, dtype=np.float32)
        (probabilities,) = self.session.run([self.output_name], {self.input_name: features})
        return probabilities.astype(np.float64, copy=False)


def _how_to_create(tag: str) -> str:
    return (
        f"`make train` (or `python train.py --model-name {str(tag).split(':')[0]}`) "
        f"with the same BENTOML_HOME"
    )


def _missing(tag: str) -> str:
    home = bentoml_home()
    return (
        f"model {tag} is not in the BentoML store (BENTOML_HOME={home}); "
        f"create it with {_how_to_create(tag)}"
    )


def stored_model(tag: str) -> Any:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound:
        raise ModelUnavailableError(_missing(tag)) from None


def check_schema(tag: str, metadata: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The model's class and feature names, which must be the ones the API's schema declares
    (names.CLASS_NAMES, names.FEATURE_NAMES): a model trained on other columns or
    classes, or stored without them, would answer every request wrongly or not at all."""
    for key, expected in (("class_names", CLASS_NAMES), ("feature_names", FEATURE_NAMES)):
        found = tuple(metadata.get(key) or ())
        if found != expected:
            raise ModelUnavailableError(
                f"model {tag} has {key} {list(found)}, but the service's schema declares "
                f"{list(expected)}; re-create it with {_how_to_create(tag)}"
            )
    return CLASS_NAMES, FEATURE_NAMES


def model_version(stored: Any) -> ModelVersion:
    """The answer-side view of a stored version (no session: nothing is loaded)."""
    tag = str(stored.tag)
    metadata = dict(stored.info.metadata)
    class_names, _ = check_schema(tag, metadata)
    path = getattr(stored, "path", None)
    return ModelVersion(tag, class_names, metadata, str(path) if path is not None else None)


def _verified_onnx(stored: Any) -> bytes:
    """The bytes of the version's model.onnx, checked against the SHA-256 training recorded."""
    tag = str(stored.tag)
    expected = stored.info.metadata.get("onnx_sha256")
    if not expected:
        raise ModelUnavailableError(
            f"model {tag} has no compiled (ONNX) form; re-create it with {_how_to_create(tag)}"
        )
    try:
        content = Path(stored.path_of(ONNX_FILE)).read_bytes()
    except OSError as exc:
        raise ModelUnavailableError(
            f"model {tag} cannot be read ({type(exc).__name__}); the stored model is damaged: "
            f"re-create it with {_how_to_create(tag)}"
        ) from exc
    if hashlib.sha256(content).hexdigest() != expected:
        raise ModelUnavailableError(
            f"model {tag} is damaged: its ONNX file does not match the SHA-256 recorded at "
            f"training (corrupt or altered); re-create it with {_how_to_create(tag)}"
        )
    return content


def _background(stored: Any) -> np.ndarray | None:
    """The version's background sample, checked against the SHA-256 training recorded; None
    when the version was stored without one."""
    tag = str(stored.tag)
    record = stored.info.metadata.get(BACKGROUND_METADATA)
    if not record:
        return None
    try:
        content = Path(stored.path_of(BACKGROUND_FILE)).read_bytes()
        if hashlib.sha256(content).hexdigest() != record.get("sha256"):
            raise ValueError("SHA-256 differs from the one recorded at training")
        document = json.loads(content)
        if tuple(document["feature_names"]) != FEATURE_NAMES:
            raise ValueError("its features are not the service's")
        rows = np.array(document["rows"], dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES) or not len(rows):
            raise ValueError(f"shape {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError("it holds values that are not finite")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailableError(
            f"model {tag} has a damaged explanation background ({exc}); "
            f"re-create it with {_how_to_create(tag)}"
        ) from exc
    return rows


def _session(tag: str, content: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread per call: the service's parallelism is its workers, one per CPU.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            content, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {tag} cannot be loaded by ONNX Runtime ({type(exc).__name__}); "
            f"re-create it with {_how_to_create(tag)}"
        ) from exc


def _checked(model: CompiledModel) -> CompiledModel:
    """One prediction before the model may serve (probabilities per class, finite, summing to
    1), and the timing of a larger batch for its cost per row."""
    try:
        probabilities = model.predict_proba(np.array([SMOKE_FLOWER]))
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {model.tag} fails a test prediction ({type(exc).__name__})"
        ) from exc
    if (
        probabilities.shape != (1, len(model.class_names))
        or not np.isfinite(probabilities).all()
        or abs(float(probabilities.sum()) - 1.0) > 1e-5
    ):
        raise ModelUnavailableError(
            f"model {model.tag} gives no valid probabilities for a test flower"
        )
    rows = np.tile(np.array(SMOKE_FLOWER), (_TIMING_ROWS, 1))
    model.predict_proba(rows)  # warm-up
    started = time.perf_counter()
    model.predict_proba(rows)
    seconds_per_row = (time.perf_counter() - started) / _TIMING_ROWS
    object.__setattr__(model, "seconds_per_row", seconds_per_row)
    return model


def load_model(stored: Any) -> CompiledModel:
    """The compiled model of a stored version, verified, loaded and test-predicted."""
    info = model_version(stored)
    metadata = info.metadata
    session = _session(info.tag, _verified_onnx(stored))
    # Training records the graph's input and probability output beside its SHA-256.
    input_name = str(metadata.get("onnx_input"))
    output_name = str(metadata.get("onnx_probabilities_output"))
    if input_name not in {graph_input.name for graph_input in session.get_inputs()}:
        raise ModelUnavailableError(
            f"model {info.tag} has no ONNX input {input_name!r}; "
            f"re-create it with {_how_to_create(info.tag)}"
        )
    if output_name not in {output.name for output in session.get_outputs()}:
        raise ModelUnavailableError(
            f"model {info.tag} has no ONNX output {output_name!r}; "
            f"re-create it with {_how_to_create(info.tag)}"
        )
    model = CompiledModel(
        info.tag,
        info.class_names,
        metadata,
        info.path,
        session=session,
        input_name=input_name,
        output_name=output_name,
        background=_background(stored),
    )
    return _checked(model)


def load_stored_model(tag: str) -> CompiledModel:
    """`load_model` of the stored version `tag` (missing: ModelUnavailableError)."""
    return load_model(stored_model(tag))


def checked_model_reference(tag: str) -> Any:
    """`bentoml.models.BentoModel(tag)`, after checking the model is stored and intact.

    Called at import of the service modules, which `bentoml serve` does in its own process
    before it starts any worker: a missing or damaged model stops the server there with one
    line and exit status 1, instead of workers that crash and are restarted forever. The
    check reads the ONNX file and its SHA-256 but builds no session.
    """
    import bentoml

    reference = bentoml.models.BentoModel(tag)
    stored = reference.stored
    if stored is None:
        raise ModelUnavailableError(_missing(tag))
    check_schema(str(stored.tag), stored.info.metadata)
    _verified_onnx(stored)
    return reference
