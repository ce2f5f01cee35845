"""Fixtures shared by the integration tests beyond those of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.container_support import Image, built_image
from tools.local_server import ProjectState


@pytest.fixture(scope="session")
def image(trained_state: ProjectState) -> Iterator[Image]:
    """The OCI image of the current tree, built once for every container test."""
    with built_image(trained_state) as built:
        yield built
