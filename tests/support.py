"""Shared test machinery: an isolated project state, a real `bentoml serve`, known flowers."""

from __future__ import annotations

import subprocess

from iris_service.local_server import (
    PROJECT_ROOT,
    VENV_BIN,
    BentoServer,
    ProjectState,
    bento_server,
    free_port,
)

__all__ = [
    "PROJECT_ROOT",
    "SETOSA",
    "VENV_BIN",
    "VERSICOLOR",
    "VIRGINICA",
    "BentoServer",
    "ProjectState",
    "bento_server",
    "ensure_debian_packages",
    "free_port",
]

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSICOLOR = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


def ensure_debian_packages(*packages: str) -> None:
    """Install missing Debian packages with the project's own script (tests never skip)."""
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "ensure-debian-packages.sh"), *packages],
        check=True,
        timeout=900,
    )
