"""The served code imports only what the Bento installs, and never the pipeline or the tools.

The Bento installs `requirements-serve.txt` alone (bentofile.yaml). Every module of
`iris_service/` and `service.py` is parsed (nothing is imported, so a missing dependency
cannot hide behind an import-time error) and each third-party import must belong to a
distribution pinned in requirements-serve.txt or required by one of them.
"""

from __future__ import annotations

import ast
import functools
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


@functools.cache
def _served_set() -> tuple[frozenset[str], dict[str, list[str]]]:
    """(the serve closure, the installed distributions of each top-level name): read once for
    the module's fifty-odd parametrized checks (each read walks every installed package)."""
    return frozenset(serve_closure()), dict(metadata.packages_distributions())


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
    allowed, providers = _served_set()
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


# The rooms of the served package and the rooms each may import (iris_service/*/__init__.py
# say why; docs/architecture.md draws them). "base" is the package's own top-level modules
# (settings, names, background, errors). An import that points up is a design change: draw it there.
ROOMS: dict[str, set[str]] = {
    "base": set(),
    "monitoring": {"base"},
    "inference": {"base", "monitoring"},
    "records": {"base", "monitoring"},
    "http": {"base", "monitoring", "inference", "records"},
    "protocols": {"base", "monitoring", "inference", "records", "http"},
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "base"


def _package_imports(path: Path) -> set[str]:
    """Every iris_service module `path` imports, at the top or inside a function."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the rooms are read from absolute ones")
        if isinstance(node, ast.ImportFrom) and node.module == "iris_service":
            modules.update(f"iris_service.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iris_service."):
            modules.add(node.module or "")
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("iris_service."))
    return modules


def _upward_imports(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "iris_service").rglob("*.py")):
        if "grpc_generated" in path.parts:
            continue
        own = _room(".".join(path.relative_to(root).with_suffix("").parts))
        for module in sorted(_package_imports(path)):
            if _room(module) != own and _room(module) not in ROOMS[own]:
                found.append(f"{path.relative_to(root)} ({own}) imports {module}")
    return found


def test_every_served_module_lives_in_a_room() -> None:
    loose = {p.stem for p in (PROJECT_ROOT / "iris_service").glob("*.py")}
    assert loose == {"__init__", "settings", "names", "background", "errors"}, loose
    for room in ROOMS.keys() - {"base"}:
        assert (PROJECT_ROOT / "iris_service" / room / "__init__.py").is_file(), room


def test_imports_between_rooms_only_point_down() -> None:
    assert _upward_imports(PROJECT_ROOT) == []


def test_the_room_check_catches_an_upward_import(tmp_path: Path) -> None:
    """Not vacuous: inference importing the HTTP layer, even inside a function, is found."""
    (tmp_path / "iris_service" / "inference").mkdir(parents=True)
    (tmp_path / "iris_service" / "inference" / "core.py").write_text(
        "def f():\n    from iris_service.http import errors\n"
    )
    assert _upward_imports(tmp_path) == [
        "iris_service/inference/core.py (inference) imports iris_service.http"
    ]
