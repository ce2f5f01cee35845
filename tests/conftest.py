"""Session fixtures: one trained model in an isolated store, one real server. The Hypothesis
profile every property test runs under. And the order and sharing of the tests between the
processes of `make test` (tests/scheduling.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests import scheduling
from tools.local_server import LocalServer, ProjectState, bento_server

# Property tests are seeded: the same examples on every run and machine (derandomize), no
# example database carried between runs, no deadline on a shared 2-core machine, so a run
# fails or passes for the code alone. HYPOTHESIS_PROFILE=explore draws new random examples
# (more of them) to look for new failures by hand.
settings.register_profile("seeded", derandomize=True, database=None, deadline=None)
settings.register_profile(
    "explore", derandomize=False, database=None, deadline=None, max_examples=1000
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first, then the longest integration modules (tests/scheduling.py); and no
    shared session fixture made twice."""
    scheduling.check_shared_fixtures(items)
    scheduling.order(items)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """A module, or the modules sharing a costly fixture, run whole in one test process."""
    return scheduling.ByModuleAndSharedFixture(config, log)


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
