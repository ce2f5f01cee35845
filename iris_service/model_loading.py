"""Load the scikit-learn estimator out of a BentoML model imported from MLflow.

`bentoml.mlflow.import_model` stores the MLflow model directory under `mlflow_model/`.
Importing MLflow (or skops) costs seconds of cold start, so the runner reads the MLmodel
file and loads the sklearn flavour itself. Pickled files are unpickled only after their
SHA-256 matches the one training recorded in the model's metadata.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from bentoml.exceptions import BentoMLException

from .settings import CLASS_NAMES, FEATURE_NAMES


class ModelUnavailableError(BentoMLException, RuntimeError):
    """The model is missing from the store or cannot be loaded: one clear line for operators.

    A BentoMLException, so that `bentoml serve` prints it as one line
    (`Error: [serve] serve failed: ...`) and exits 1 instead of a traceback.
    """


def model_fingerprint(tag: str) -> float:
    """A number that names a stored model version: the first 52 bits of the SHA-256 of its
    tag, exact in a float64. The runner returns it beside every row it computes, so the API
    worker knows which model computed an answer (see served_models.ModelDirectory)."""
    return float(int(hashlib.sha256(tag.encode()).hexdigest()[:13], 16))


# The fingerprint of "no model": the runner's answer when asked for a challenger it does not
# hold (no tag has it: a fingerprint of 0 would need 52 zero bits of SHA-256).
NO_MODEL = 0.0
# A typical versicolor flower, in FEATURE_NAMES order: the smoke prediction of a loaded model.
SMOKE_FLOWER = (5.9, 2.8, 4.3, 1.3)


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    tag: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def fingerprint(self) -> float:
        return model_fingerprint(self.tag)


def model_answer(model: LoadedModel, measurements: np.ndarray) -> np.ndarray:
    """Probabilities of `model` for rows of measurements and, as last column, its fingerprint:
    the shape of every answer the API worker gets (from the runner or its local copy)."""
    probabilities = model.estimator.predict_proba(measurements)
    fingerprints = np.full((len(probabilities), 1), model.fingerprint)
    return np.hstack([probabilities, fingerprints])


def _how_to_create(tag: str) -> str:
    return (
        f"`make train` (or `python train.py --model-name {str(tag).split(':')[0]}`) "
        f"with the same BENTOML_HOME"
    )


def _store_location() -> str:
    return os.environ.get("BENTOML_HOME", "~/bentoml")


def _missing(tag: str) -> str:
    return (
        f"model {tag} is not in the BentoML store (BENTOML_HOME={_store_location()}); "
        f"create it with {_how_to_create(tag)}"
    )


def stored_model(tag: str) -> Any:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound:
        raise ModelUnavailableError(_missing(tag)) from None


def _read_verified(mlflow_model_dir: Path, expected_sha256: str | None) -> tuple[bytes, dict]:
    """The serialized estimator's bytes and its MLmodel flavour, checksum verified."""
    try:
        flavour = yaml.safe_load((mlflow_model_dir / "MLmodel").read_text())["flavors"]["sklearn"]
        model_bytes = (mlflow_model_dir / flavour["pickled_model"]).read_bytes()
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {_tag_of(mlflow_model_dir)} cannot be read from {mlflow_model_dir} "
            f"({type(exc).__name__}); the stored model is damaged: re-create it with "
            f"{_how_to_create(_tag_of(mlflow_model_dir))}"
        ) from exc
    if expected_sha256 and hashlib.sha256(model_bytes).hexdigest() != expected_sha256:
        raise ModelUnavailableError(
            f"model {_tag_of(mlflow_model_dir)} is damaged: its file does not match the "
            f"SHA-256 recorded at training (corrupt or altered); re-create it with "
            f"{_how_to_create(_tag_of(mlflow_model_dir))}"
        )
    return model_bytes, flavour


def load_sklearn_estimator(mlflow_model_dir: Path, expected_sha256: str | None = None) -> Any:
    model_bytes, flavour = _read_verified(mlflow_model_dir, expected_sha256)
    serialization = flavour.get("serialization_format", "pickle")
    if serialization != "pickle":
        # skops and cloudpickle are not installed in the Bento (requirements-serve.txt).
        raise ModelUnavailableError(
            f"model {_tag_of(mlflow_model_dir)} is saved as {serialization!r}, which this "
            f"service does not load (pickle only); re-create it with "
            f"{_how_to_create(_tag_of(mlflow_model_dir))}"
        )
    try:
        return pickle.loads(model_bytes)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelUnavailableError(
            f"model {_tag_of(mlflow_model_dir)} cannot be loaded from {mlflow_model_dir} "
            f"({type(exc).__name__}: {first_line}); "
            f"the stored model is damaged: re-create it with "
            f"{_how_to_create(_tag_of(mlflow_model_dir))}"
        ) from exc


def _tag_of(mlflow_model_dir: Path) -> str:
    """<store>/models/<name>/<version>/mlflow_model -> name:version."""
    return f"{mlflow_model_dir.parent.parent.name}:{mlflow_model_dir.parent.name}"


def load_model(bento_model: Any) -> LoadedModel:
    """Load the estimator of a stored BentoML model and check it answers like an Iris model."""
    metadata = bento_model.info.metadata
    estimator = load_sklearn_estimator(
        Path(bento_model.path_of("mlflow_model")), metadata.get("model_file_sha256")
    )
    class_names, feature_names = check_schema(str(bento_model.tag), metadata)
    if not hasattr(estimator, "predict_proba") or len(getattr(estimator, "classes_", ())) != len(
        class_names
    ):
        raise ModelUnavailableError(
            f"model {bento_model.tag} is not a {len(class_names)}-class probabilistic classifier"
        )
    _smoke_predict(str(bento_model.tag), estimator, len(class_names))
    return LoadedModel(estimator, str(bento_model.tag), class_names, feature_names)


def _smoke_predict(tag: str, estimator: Any, classes: int) -> None:
    """One prediction before the model may serve: it must give one probability per class,
    finite and summing to 1 (an estimator that unpickles but cannot predict is refused)."""
    try:
        probabilities = np.asarray(estimator.predict_proba(np.array([SMOKE_FLOWER])))
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelUnavailableError(
            f"model {tag} fails a test prediction ({type(exc).__name__}: {first_line})"
        ) from exc
    if (
        probabilities.shape != (1, classes)
        or not np.isfinite(probabilities).all()
        or abs(float(probabilities.sum()) - 1.0) > 1e-6
    ):
        raise ModelUnavailableError(
            f"model {tag} gives no valid probabilities for a test flower: {probabilities!r}"
        )


def load_stored_model(tag: str) -> LoadedModel:
    """`load_model` of the stored version `tag` (missing: ModelUnavailableError)."""
    return load_model(stored_model(tag))


def check_schema(tag: str, metadata: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The model's class and feature names, which must be the ones the API's schema declares
    (settings.CLASS_NAMES, settings.FEATURE_NAMES): a model trained on other columns or
    classes, or stored without them, would answer every request wrongly or not at all."""
    for key, expected in (("class_names", CLASS_NAMES), ("feature_names", FEATURE_NAMES)):
        found = tuple(metadata.get(key) or ())
        if found != expected:
            raise ModelUnavailableError(
                f"model {tag} has {key} {list(found)}, but the service's schema declares "
                f"{list(expected)}; re-create it with {_how_to_create(tag)}"
            )
    return CLASS_NAMES, FEATURE_NAMES


def checked_model_reference(tag: str) -> Any:
    """`bentoml.models.BentoModel(tag)`, after checking the model is stored and intact.

    Called at import of the service modules, which `bentoml serve` does in its own process
    before it starts any worker: a missing or damaged model stops the server there with one
    line and exit status 1, instead of a runner worker that crashes and is restarted forever.
    The check reads the file and its SHA-256 but does not unpickle it, so processes that
    never predict (the supervisor, the API workers) do not import scikit-learn: that keeps
    their start-up and memory small. A model without a recorded checksum is loaded once.
    """
    import bentoml

    reference = bentoml.models.BentoModel(tag)
    stored = reference.stored
    if stored is None:
        raise ModelUnavailableError(_missing(tag))
    check_schema(str(stored.tag), stored.info.metadata)
    checksum = stored.info.metadata.get("model_file_sha256")
    if checksum:
        _read_verified(Path(stored.path_of("mlflow_model")), checksum)
    else:
        load_model(stored)
    return reference
