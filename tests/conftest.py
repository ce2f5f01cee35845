"""Session fixtures: one trained model in an isolated store, one real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.local_server import LocalServer, ProjectState, bento_server


@pytest.fixture(scope="session")
def trained_state(tmp_path_factory: pytest.TempPathFactory) -> ProjectState:
    """Runs the real train.py once: MLflow SQLite store + BentoML store in a temp dir."""
    state = ProjectState(tmp_path_factory.mktemp("project-state"))
    result = state.train()
    assert result.returncode == 0, result.stdout + result.stderr
    return state


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(trained_state: ProjectState, server_logs: Path) -> Iterator[LocalServer]:
    """The shipped service under a real `bentoml serve`, shared by read-only tests."""
    with bento_server(trained_state, server_logs) as running:
        yield running
