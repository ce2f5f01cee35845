"""Where the project keeps its files and its generated state: one definition for the
pipeline, the tools and the tests (the served package never needs the project's layout)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Generated state (git-ignored): MLflow store, BentoML home, container store, benchmark models.
STATE_DIR = PROJECT_ROOT / "state"
REPORTS_DIR = PROJECT_ROOT / "reports"
# Tools the project makes for itself, keyed by their content and shared by every clone on the
# machine (like pip's cache): MLServer's venv, the container base image's archive.
USER_CACHE_DIR = Path(os.environ.get("IRIS_CACHE_DIR", Path.home() / ".cache" / "iris-service"))
CONFIGURATION = PROJECT_ROOT / "configuration.yaml"
LOCUSTFILE = PROJECT_ROOT / "locustfile.py"
TOOLS_DIR = PROJECT_ROOT / "tools"
DEFAULT_MLFLOW_DIR = STATE_DIR / "mlflow"
DEFAULT_BENTOML_HOME = STATE_DIR / "bentoml"
# Console scripts (bentoml, mlflow, uvicorn, locust) of the interpreter that runs us.
VENV_BIN = Path(sys.executable).parent
DEFAULT_MLFLOW_URI = f"sqlite:///{DEFAULT_MLFLOW_DIR / 'mlflow.db'}"

# The two stores, and the rule every entry point follows (train.py, `python -m
# iris_pipeline.lifecycle`, the tools, the Makefile): a value set in the environment wins;
# what is not set is the project's own store under state/.
STORE_DEFAULTS = {
    "BENTOML_HOME": str(DEFAULT_BENTOML_HOME),
    "MLFLOW_TRACKING_URI": DEFAULT_MLFLOW_URI,
}
SPLIT_STORES_WARNING = (
    "warning: only {given} is set in the environment; {missing} falls back to the project's "
    "store ({default}). Set both or neither, or the registry and the model store disagree."
)


def use_project_stores(environ: dict[str, str] | None = None) -> str | None:
    """Fill in the stores the environment does not name, before bentoml or mlflow is
    imported (both read their store once). Returns a warning when only one of the two was
    named: the registry would then point at models the other store does not hold."""
    env = os.environ if environ is None else environ
    given = [name for name in STORE_DEFAULTS if env.get(name)]
    for name, default in STORE_DEFAULTS.items():
        if not env.get(name):
            env[name] = default
    env.setdefault("BENTOML_CONFIG", str(CONFIGURATION))
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    if len(given) == 1:
        (missing,) = (name for name in STORE_DEFAULTS if name not in given)
        return SPLIT_STORES_WARNING.format(
            given=given[0], missing=missing, default=STORE_DEFAULTS[missing]
        )
    return None
