"""Fixtures shared by the integration tests beyond those of tests/conftest.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.container_support import Image, built_image
from tests.integration.model_support import TrainedCopy, train
from tools.local_server import ProjectState


@pytest.fixture(scope="session")
def image(trained_state: ProjectState) -> Iterator[Image]:
    """The OCI image of the current tree, built once for every container test."""
    with built_image(trained_state) as built:
        yield built


@pytest.fixture(scope="session")
def trained_copy(tmp_path_factory: pytest.TempPathFactory) -> TrainedCopy:
    """`trained_copy("logistic_regression", "random_forest")`: a state of its own whose
    BentoML store holds one version per family, made by the real train.py (one run per family,
    in that order). Keyed by the families: each list is trained once per session, and every
    caller gets a fresh copy of that store to change as it likes (aliases, damaged files).

    Only the BentoML store is copied (the copy's MLflow store is empty): for tests that serve
    and switch versions, not for those that run the registry's lifecycle."""
    trained: dict[tuple[str, ...], tuple[ProjectState, tuple[str, ...]]] = {}

    def copy(*families: str) -> tuple[ProjectState, tuple[str, ...]]:
        if families not in trained:
            source = ProjectState(tmp_path_factory.mktemp("trained-" + "-".join(families)))
            trained[families] = (source, tuple(train(source, family) for family in families))
        source, tags = trained[families]
        state = ProjectState(tmp_path_factory.mktemp("copy-" + "-".join(families)))
        shutil.copytree(source.bentoml_home, state.bentoml_home, symlinks=True)
        return state, tags

    return copy
