"""The served code imports only what the Bento installs, and never the pipeline or the tools.

The Bento installs `requirements-serve.txt` alone (bentofile.yaml). Every module of
`iris_service/` and `service.py` is parsed (nothing is imported, so a missing dependency
cannot hide behind an import-time error) and each third-party import must belong to a
distribution pinned in requirements-serve.txt or required by one of them.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from iris_pipeline.paths import PROJECT_ROOT

SERVED_FILES = sorted([PROJECT_ROOT / "service.py", *(PROJECT_ROOT / "iris_service").rglob("*.py")])
OUR_PACKAGES = {"iris_service"}
NEVER_SERVED = {"iris_pipeline", "tools", "tests"}
# Heavy pipeline and tooling dependencies, named so that a regression reads plainly.
PIPELINE_AND_TOOLS = {"mlflow", "pandas", "matplotlib", "locust", "skops", "fastapi", "requests"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _serve_distributions() -> set[str]:
    """requirements-serve.txt's pins and everything they require, transitively (as installed)."""
    pending = [
        Requirement(line.split("#")[0].strip()).name
        for line in (PROJECT_ROOT / "requirements-serve.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    seen: set[str] = set()
    while pending:
        name = _canonical(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


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
    allowed = _serve_distributions()
    providers = metadata.packages_distributions()
    for name in sorted(_imported_top_levels(path)):
        assert name not in NEVER_SERVED, f"{path.name} imports {name}, which is never packed"
        if name in sys.stdlib_module_names or name in OUR_PACKAGES or name == "__future__":
            continue
        distributions = {_canonical(d) for d in providers.get(name, [])}
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
    allowed = _serve_distributions()
    assert "mlflow" not in allowed and "pandas" not in allowed
    assert {"bentoml", "scikit-learn", "numpy", "starlette"} <= allowed
