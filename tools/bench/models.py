"""The benchmark's own trained models, in an isolated BentoML home and MLflow store.

Each model family is trained with `train.py --candidates <family> --model-name <name>`, so
the shipped service, the FastAPI baseline and `mlflow models serve` all serve the very same
MLflow run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.local_server import ProjectState

# Model family -> name in the benchmark's BentoML store.
MODEL_NAMES: dict[str, str] = {
    "logistic_regression": "iris-lr",
    "random_forest": "iris-rf",
}
SHORT_NAMES: dict[str, str] = {"logistic_regression": "lr", "random_forest": "rf"}


@dataclass(frozen=True)
class BenchModel:
    family: str
    tag: str  # BentoML tag, e.g. iris-lr:abc123
    mlflow_model_dir: Path  # the MLflow model directory inside the BentoML model
    mlflow_run_id: str

    @property
    def short(self) -> str:
        return SHORT_NAMES.get(self.family, self.family)

    @property
    def mlflow_uri(self) -> str:
        return f"runs:/{self.mlflow_run_id}/model"


def ensure_trained(state: ProjectState, family: str, timeout: float = 600) -> BenchModel:
    """Train `family` into the state unless it is already there; describe the stored model."""
    name = MODEL_NAMES[family]
    result = state.train(
        "--candidates", family, "--model-name", name, "--if-missing", timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"training {family} failed:\n{result.stdout}\n{result.stderr}")
    return describe(state, name, family)


def describe(state: ProjectState, name: str, family: str) -> BenchModel:
    """Read the stored model's tag, directory and MLflow run id (in a clean subprocess,
    because BENTOML_HOME is read once per process)."""
    script = (
        "import json, bentoml\n"
        f"m = bentoml.models.get({name + ':latest'!r})\n"
        "print(json.dumps({'tag': str(m.tag), 'dir': m.path_of('mlflow_model'),"
        " 'run': m.info.metadata.get('mlflow_run_id')}))\n"
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
    return BenchModel(family, info["tag"], Path(info["dir"]), info["run"])
