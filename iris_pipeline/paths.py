"""Where the project keeps its files and its generated state: one definition for the
pipeline, the tools and the tests (the served package never needs the project's layout)."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Generated state (git-ignored): MLflow store, BentoML home, container store, benchmark models.
STATE_DIR = PROJECT_ROOT / "state"
REPORTS_DIR = PROJECT_ROOT / "reports"
CONFIGURATION = PROJECT_ROOT / "configuration.yaml"
LOCUSTFILE = PROJECT_ROOT / "locustfile.py"
TOOLS_DIR = PROJECT_ROOT / "tools"
DEFAULT_MLFLOW_DIR = STATE_DIR / "mlflow"
DEFAULT_BENTOML_HOME = STATE_DIR / "bentoml"
# Console scripts (bentoml, mlflow, uvicorn, locust) of the interpreter that runs us.
VENV_BIN = Path(sys.executable).parent
