"""MLServer (Seldon) as a benchmark peer: its own pinned environment and its settings files.

MLServer is what teams on KServe or Seldon deploy for scikit-learn. It does not run in the
project's venv (its pins differ, and MLServer 1.7.1 needs uvloop 0.21), so `ensure_venv`
creates one on first use with the project interpreter's `-m venv` and installs
tools/bench/mlserver-requirements.txt (every package pinned). The venv lives in the user's
cache (`~/.cache/iris-service/mlserver-venv-<hash>`, IRIS_CACHE_DIR), named by the hash of
that file and the interpreter: every clone on the machine reuses it (a new clone's
`make test` does not install MLServer again), a changed file makes a new one, and the venvs
of older files are removed.

`write_config` writes the two files `mlserver start <folder>` reads: settings.json (127.0.0.1,
free ports, everything else at MLServer's defaults) and model-settings.json (the MLflow
model's own pickle served by mlserver_sklearn.SKLearnModel, inputs and outputs declared so
that model metadata lists them, and, for the batching variant, adaptive batching on).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from iris_pipeline.paths import TOOLS_DIR, USER_CACHE_DIR
from iris_service.names import FEATURE_NAMES, MODEL_NAME
from tools.local_server import HOST, free_port

REQUIREMENTS = TOOLS_DIR / "bench" / "mlserver-requirements.txt"
MARKER = ".requirements-sha256"
INSTALL_TIMEOUT_S = 1200
# The V2 input name in our payloads; MLServer's scikit-learn runtime takes any single input.
INPUT_NAME = "input-0"


@dataclass(frozen=True)
class Batching:
    """MLServer's adaptive batching: up to `max_batch_size` requests, waiting at most
    `max_batch_time_s` for them (0 and 0 are MLServer's default: off)."""

    max_batch_size: int = 0
    max_batch_time_s: float = 0.0


# The benchmark's mlserver-batch variant: batches of up to 64 requests, 5 ms window.
ADAPTIVE_BATCHING = Batching(64, 0.005)


def requirements_hash(path: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


VENV_PREFIX = "mlserver-venv-"
# The interpreter is part of the name: a venv is bound to the Python that made it.
DEFAULT_VENV = USER_CACHE_DIR / (
    VENV_PREFIX
    + hashlib.sha256(f"{requirements_hash()} {sys.base_prefix}".encode()).hexdigest()[:16]
)


def ensure_venv(venv: Path = DEFAULT_VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The `mlserver` executable of a venv holding exactly `requirements`, created if needed."""
    mlserver = venv / "bin" / "mlserver"
    marker = venv / MARKER
    wanted = requirements_hash(requirements)
    if mlserver.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return mlserver
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--upgrade", "pip"])
    _run([*pip, "-r", str(requirements)])
    if not mlserver.exists():
        raise RuntimeError(f"installing {requirements} gave no {mlserver}")
    marker.write_text(wanted + "\n")
    for old in venv.parent.glob(VENV_PREFIX + "*"):
        if old != venv and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return mlserver


def _run(command: list[str]) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )


def model_file(mlflow_model_dir: Path) -> Path:
    """The pickle of the MLflow model's sklearn flavour (the file MLServer loads)."""
    import yaml

    meta = yaml.safe_load((mlflow_model_dir / "MLmodel").read_text())
    flavour = meta["flavors"]["sklearn"]
    if flavour.get("serialization_format", "pickle") not in ("pickle", "cloudpickle"):
        raise RuntimeError(f"{mlflow_model_dir} is not a pickled sklearn model: {flavour}")
    return mlflow_model_dir / flavour["pickled_model"]


def write_config(folder: Path, mlflow_model_dir: Path, port: int, batching: Batching) -> Path:
    """settings.json and model-settings.json for `mlserver start folder` on 127.0.0.1:port."""
    folder.mkdir(parents=True, exist_ok=True)
    grpc_port, metrics_port = _other_ports(port, 2)
    settings = {
        "host": HOST,
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        # MLServer's defaults are folders under its working directory (the project root).
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
    }
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file(mlflow_model_dir))},
        "inputs": [
            {"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, len(FEATURE_NAMES)]},
        ],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    }
    if batching.max_batch_size > 1:
        model_settings["max_batch_size"] = batching.max_batch_size
        model_settings["max_batch_time"] = batching.max_batch_time_s
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return folder


def _other_ports(taken: int, count: int) -> list[int]:
    """`count` free ports distinct from each other and from `taken` (gRPC and metrics)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port != taken and port not in ports:
            ports.append(port)
    return ports


def command(mlserver: Path, folder: Path) -> list[str]:
    return [str(mlserver), "start", str(folder)]
