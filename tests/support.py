"""Shared test machinery: known flowers and the project's own installer of Debian tools.

Servers are started with tools.local_server (the one way the tests, the benchmark, the load
test and the report run a served instance).
"""

from __future__ import annotations

import subprocess

from iris_pipeline.paths import TOOLS_DIR

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSICOLOR = {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}


def ensure_debian_packages(*packages: str) -> None:
    """Install missing Debian packages with the project's own script (tests never skip)."""
    subprocess.run(
        ["bash", str(TOOLS_DIR / "ensure-debian-packages.sh"), *packages], check=True, timeout=900
    )
