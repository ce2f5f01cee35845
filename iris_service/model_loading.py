"""Load the scikit-learn estimator out of a BentoML model imported from MLflow.

`bentoml.mlflow.import_model` stores the MLflow model directory under `mlflow_model/`.
Importing MLflow (or skops) costs seconds of cold start, so the runner reads the MLmodel
file and loads the sklearn flavour itself. Pickled files are unpickled only after their
SHA-256 matches the one training recorded in the model's metadata.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .settings import CLASS_NAMES, FEATURE_NAMES


class ModelUnavailableError(RuntimeError):
    """The model is missing from the store or cannot be loaded: one clear line for operators."""


@dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    tag: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]


def _how_to_create(tag: str) -> str:
    return (
        f"model {tag} is not in the BentoML store (BENTOML_HOME); create it with "
        f"`make train` (or `python train.py --model-name {tag.split(':')[0]}`)"
    )


def stored_model(tag: str) -> Any:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound:
        raise ModelUnavailableError(_how_to_create(tag)) from None


def load_sklearn_estimator(mlflow_model_dir: Path, expected_sha256: str | None = None) -> Any:
    try:
        flavour = yaml.safe_load((mlflow_model_dir / "MLmodel").read_text())["flavors"]["sklearn"]
        model_bytes = (mlflow_model_dir / flavour["pickled_model"]).read_bytes()
        serialization = flavour.get("serialization_format", "pickle")
    except Exception as exc:
        raise ModelUnavailableError(
            f"cannot read the MLflow model in {mlflow_model_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    if expected_sha256 and hashlib.sha256(model_bytes).hexdigest() != expected_sha256:
        raise ModelUnavailableError(
            f"model file in {mlflow_model_dir} does not match its recorded SHA-256 "
            "(corrupt or altered); re-create it with `make train`"
        )
    try:
        if serialization == "skops":
            import skops.io

            return skops.io.loads(model_bytes, trusted=flavour.get("skops_trusted_types") or [])
        return pickle.loads(model_bytes)
    except Exception as exc:
        raise ModelUnavailableError(
            f"cannot load the model in {mlflow_model_dir}: {type(exc).__name__}: {exc}"
        ) from exc


def load_model(bento_model: Any) -> LoadedModel:
    """Load the estimator of a stored BentoML model and check it answers like an Iris model."""
    metadata = bento_model.info.metadata
    estimator = load_sklearn_estimator(
        Path(bento_model.path_of("mlflow_model")), metadata.get("model_file_sha256")
    )
    class_names = tuple(metadata.get("class_names", CLASS_NAMES))
    feature_names = tuple(metadata.get("feature_names", FEATURE_NAMES))
    if not hasattr(estimator, "predict_proba") or len(getattr(estimator, "classes_", ())) != len(
        class_names
    ):
        raise ModelUnavailableError(
            f"model {bento_model.tag} is not a {len(class_names)}-class probabilistic classifier"
        )
    return LoadedModel(estimator, str(bento_model.tag), class_names, feature_names)
