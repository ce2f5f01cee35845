"""The served code imports only what the Bento installs, and never the pipeline or the tools.

The Bento installs `requirements-serve.txt` alone (bentofile.yaml). Every module of
`iris_service/` and `service.py` is parsed (nothing is imported, so a missing dependency
cannot hide behind an import-time error) and each third-party import must belong to a
distribution pinned in requirements-serve.txt or required by one of them.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tools.serve_requirements import LOCK, canonical, lock_text, serve_closure

SERVED_FILES = sorted([PROJECT_ROOT / "service.py", *(PROJECT_ROOT / "iris_service").rglob("*.py")])
OUR_PACKAGES = {"iris_service"}
NEVER_SERVED = {"iris_pipeline", "tools", "tests"}
# Heavy pipeline and tooling dependencies, named so that a regression reads plainly.
PIPELINE_AND_TOOLS = {
    *("mlflow", "pandas", "matplotlib", "locust", "skops", "fastapi", "requests", "pyspark"),
}


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_served_package_is_found() -> None:
    assert len(SERVED_FILES) > 10, SERVED_FILES  # service.py and the package's modules


@pytest.mark.parametrize("path", SERVED_FILES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_served_module_imports_only_serve_requirements(path: Path) -> None:
    allowed = serve_closure()
    providers = metadata.packages_distributions()
    for name in sorted(_imported_top_levels(path)):
        assert name not in NEVER_SERVED, f"{path.name} imports {name}, which is never packed"
        if name in sys.stdlib_module_names or name in OUR_PACKAGES or name == "__future__":
            continue
        distributions = {canonical(d) for d in providers.get(name, [])}
        assert distributions, f"{path.name} imports {name}, which no installed package provides"
        assert name not in PIPELINE_AND_TOOLS, f"{path.name} imports {name}"
        assert distributions & allowed, (
            f"{path.name} imports {name} ({', '.join(sorted(distributions))}), "
            "which requirements-serve.txt does not install"
        )


def test_the_check_catches_a_pipeline_import(tmp_path: Path) -> None:
    """The check is not vacuous: a module importing mlflow is refused."""
    module = tmp_path / "bad.py"
    module.write_text("import mlflow\nfrom pandas import DataFrame\n")
    assert _imported_top_levels(module) == {"mlflow", "pandas"}
    allowed = serve_closure()
    assert "mlflow" not in allowed and "pandas" not in allowed
    assert {"bentoml", "onnxruntime", "numpy", "starlette"} <= allowed
    # Models are served compiled: neither scikit-learn nor SciPy is in the served set.
    assert not {"scikit-learn", "scipy"} & allowed


def test_spark_stays_out_of_the_served_image() -> None:
    """pyspark (and Java) are for `make score` only: requirements-spark.txt, never the lock."""
    assert "pyspark" not in LOCK.read_text() and "py4j" not in LOCK.read_text()
    assert "pyspark" not in (PROJECT_ROOT / "requirements-serve.txt").read_text()
    assert "pyspark==" in (PROJECT_ROOT / "requirements-spark.txt").read_text()


def test_the_bento_installs_the_locked_closure_of_the_serve_requirements() -> None:
    """requirements-serve.lock is current (`make lock` writes it) and is what bentofile.yaml
    installs, without re-resolving at build time."""
    import yaml

    assert LOCK.read_text() == lock_text(), "requirements-serve.lock is stale: run `make lock`"
    python = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())["python"]
    assert python["requirements_txt"] == LOCK.name
    assert python.get("lock_packages") is False
