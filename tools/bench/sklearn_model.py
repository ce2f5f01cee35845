"""The scikit-learn estimator of a stored model, for the peers that serve it as users would."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import yaml


def load_sklearn_estimator(mlflow_model_dir: Path) -> Any:
    """The MLflow model's estimator, unpickled as its sklearn flavour names it (what a FastAPI
    user does with their own trusted model file; the service itself loads ONNX only)."""
    flavour = yaml.safe_load((mlflow_model_dir / "MLmodel").read_text())["flavors"]["sklearn"]
    return pickle.loads((mlflow_model_dir / flavour["pickled_model"]).read_bytes())
