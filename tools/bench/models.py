"""The benchmark's own trained models, in an isolated BentoML home and MLflow store.

Each model family is trained with `train.py --candidates <family> --model-name <name>`, so
every server under test serves the very same model files (the MLflow model directory inside
the BentoML model). "shipped" is the model users get: the one `make train` chose, copied from
the user's store (`$BENTOML_HOME`, state/bentoml by default) when it is there, otherwise
trained into the benchmark's state exactly as `make train` does (every default candidate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.paths import DEFAULT_BENTOML_HOME, VENV_BIN
from iris_service.names import MODEL_NAME
from tools.local_server import ProjectState

SHIPPED = "shipped"
# Model family -> name in the benchmark's BentoML store.
# Every family `make train` trains (iris_pipeline/training.py CANDIDATES), then the shipped one.
MODEL_NAMES: dict[str, str] = {
    "logistic_regression": "iris-lr",
    "random_forest": "iris-rf",
    "svm": "iris-svm",
    "gradient_boosting": "iris-gb",
    SHIPPED: MODEL_NAME,
}
FAMILIES: tuple[str, ...] = tuple(name for name in MODEL_NAMES if name != SHIPPED)
SHORT_NAMES: dict[str, str] = {
    "logistic_regression": "lr",
    "random_forest": "rf",
    "svm": "svm",
    "gradient_boosting": "gb",
}
# The compiled model at the root of every stored version's folder
# (iris_service/inference/model_loading.py).
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class BenchModel:
    family: str  # the benchmark's name for it: a candidate family, or "shipped"
    tag: str  # BentoML tag, e.g. iris-lr:abc123
    mlflow_model_dir: Path  # the MLflow model directory inside the BentoML model
    mlflow_run_id: str
    estimator: str = ""  # the candidate family the model is (for "shipped": what was chosen)
    model_dir: Path | None = None  # the BentoML model folder (its model.onnx is served)

    @property
    def short(self) -> str:
        return SHORT_NAMES.get(self.family, self.family)

    @property
    def onnx_path(self) -> Path:
        """The compiled model the service, the minimal BentoML peer and FastAPI + ONNX
        Runtime load: the same file for all three."""
        folder = self.model_dir or self.mlflow_model_dir.parent
        return folder / ONNX_FILE

    @property
    def mlflow_uri(self) -> str:
        """The model directory itself: the same files as the other servers load (and valid
        for a model copied from the user's store, whose run is not in the benchmark's store)."""
        return str(self.mlflow_model_dir)


def ensure_trained(state: ProjectState, family: str, timeout: float = 600) -> BenchModel:
    """Train `family` into the state unless it is already there; describe the stored model."""
    name = MODEL_NAMES[family]
    if family == SHIPPED:
        copy_from_user_store(state, name)
        args = ("--model-name", name, "--if-missing")  # all default candidates, as `make train`
    else:
        args = ("--candidates", family, "--model-name", name, "--if-missing")
    result = state.train(*args, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"training {family} failed:\n{result.stdout}\n{result.stderr}")
    return describe(state, name, family)


def user_store_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or DEFAULT_BENTOML_HOME)


def copy_from_user_store(state: ProjectState, name: str) -> bool:
    """Copy `name:latest` from the user's BentoML store into the benchmark's (export, import);
    False when the user's store has no such model or it is the benchmark's store itself."""
    source = user_store_home()
    if source.resolve() == state.bentoml_home.resolve() or not (source / "models" / name).is_dir():
        return False
    bentoml = str(VENV_BIN / "bentoml")
    with tempfile.TemporaryDirectory(prefix="bench-model-") as scratch:
        archive = str(Path(scratch) / f"{name}.bentomodel")
        exported = subprocess.run(
            [bentoml, "models", "export", f"{name}:latest", archive],
            env=state.env(BENTOML_HOME=str(source)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if exported.returncode != 0:
            return False
        imported = subprocess.run(
            [bentoml, "models", "import", archive],
            env=state.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    # Already present (an earlier benchmark copied it) is fine too.
    return imported.returncode == 0 or "already exists" in imported.stdout + imported.stderr


def describe(state: ProjectState, name: str, family: str) -> BenchModel:
    """Read the stored model's tag, directory and MLflow run id (in a clean subprocess,
    because BENTOML_HOME is read once per process)."""
    script = (
        "import json, bentoml\n"
        f"m = bentoml.models.get({name + ':latest'!r})\n"
        "print(json.dumps({'tag': str(m.tag), 'dir': m.path_of('mlflow_model'), 'path': m.path,"
        " 'run': m.info.metadata.get('mlflow_run_id'),"
        " 'estimator': m.info.metadata.get('model_family')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=state.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    estimator = info.get("estimator") or family
    return BenchModel(
        family, info["tag"], Path(info["dir"]), info["run"], estimator, Path(info["path"])
    )
