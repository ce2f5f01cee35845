"""The test scheduler of `make test` (tests/scheduling.py): what runs in one process, in
which order, and the refusal of a shared fixture used outside its group."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from iris_pipeline.paths import PROJECT_ROOT
from tests import scheduling


@dataclass
class FakeItem:
    """What the scheduling functions read of a collected test."""

    nodeid: str
    fixturenames: tuple[str, ...] = ()


def test_every_listed_module_exists() -> None:
    listed = [*scheduling.HEAVY_FIRST]
    for modules in scheduling.SHARED_FIXTURE_MODULES.values():
        listed += modules
    assert [path for path in listed if not (PROJECT_ROOT / path).is_file()] == []


def test_a_module_is_its_own_scope_unless_it_shares_a_fixture() -> None:
    assert scheduling.scope_of("tests/unit/test_auth.py::test_x[a]") == "tests/unit/test_auth.py"
    assert scheduling.scope_of("tests/integration/test_container.py::test_prediction") == "image"
    restarts = "tests/integration/test_container_restarts.py::test_a"
    assert scheduling.scope_of(restarts) == "image"


def test_units_first_then_the_heavy_modules_then_file_order() -> None:
    names = [
        "tests/integration/test_a.py::t1",
        f"{scheduling.HEAVY_FIRST[1]}::t",
        "tests/unit/test_b.py::t",
        f"{scheduling.HEAVY_FIRST[0]}::t",
        "tests/integration/test_a.py::t2",
        "tests/unit/test_a.py::t",
    ]
    items = [FakeItem(name) for name in names]
    scheduling.order(items)  # type: ignore[arg-type]
    assert [item.nodeid for item in items] == [
        "tests/unit/test_b.py::t",
        "tests/unit/test_a.py::t",
        f"{scheduling.HEAVY_FIRST[0]}::t",
        f"{scheduling.HEAVY_FIRST[1]}::t",
        "tests/integration/test_a.py::t1",
        "tests/integration/test_a.py::t2",
    ]


def test_a_shared_fixture_outside_its_group_is_refused() -> None:
    listed = FakeItem("tests/integration/test_container.py::t", ("image", "tmp_path"))
    scheduling.check_shared_fixtures([listed])  # type: ignore[list-item]
    stray = FakeItem("tests/integration/test_new.py::t", ("image",))
    with pytest.raises(pytest.UsageError, match=r"test_new\.py to SHARED_FIXTURE_MODULES"):
        scheduling.check_shared_fixtures([listed, stray])  # type: ignore[list-item]
