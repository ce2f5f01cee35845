"""How `make test` shares the tests between its processes (pytest-xdist, `-n`).

A module runs whole in one process, so its module fixtures (a server, a trained story) are
made once; the modules that share a costly session fixture (SHARED_FIXTURE_MODULES) run in
the same process, so that fixture is made once per run. xdist's own `--dist loadgroup` would
say this with marks, but pytest 9 no longer lets it rename the tests it groups (the node id
became read-only structure), so the grouping is this scheduler's (`pytest_xdist_make_scheduler`
in tests/conftest.py): xdist's scope scheduling with the scope computed here.

The order: unit tests first (a unit failure shows in the first minutes), then the integration
modules that take longest (HEAVY_FIRST: a process that starts one late would finish alone
after the other is done), then the rest in file order. The list is a scheduling hint only: a
module missing from it costs time, never a wrong result.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

INTEGRATION = "tests/integration/"
SHARED_FIXTURE_MODULES: dict[str, tuple[str, ...]] = {
    "image": tuple(
        f"{INTEGRATION}{name}.py"
        for name in ("test_container", "test_container_restarts", "test_container_tiers")
    ),
    "trained_copy": tuple(
        f"{INTEGRATION}{name}.py"
        for name in ("test_model_identity", "test_serving_follows_aliases")
    ),
}
HEAVY_FIRST = tuple(
    f"{INTEGRATION}{name}.py"
    for name in (
        "test_batch_scoring",
        "test_model_lifecycle",
        "test_feedback_loop",
        "test_bench_smoke",
        "test_compiled_models",
        "test_container",
        "test_serving_follows_aliases",
        "test_api_key_at_start",
    )
)
_GROUP_OF_MODULE = {
    module: group for group, modules in SHARED_FIXTURE_MODULES.items() for module in modules
}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def scope_of(nodeid: str) -> str:
    """What runs in one process: the module, or the group of modules sharing a fixture."""
    module = module_of(nodeid)
    return _GROUP_OF_MODULE.get(module, module)


def check_shared_fixtures(items: list[pytest.Item]) -> None:
    """A test that uses a shared fixture from a module not in its group would make the
    fixture a second time in another process: refuse to run until the module is listed."""
    for item in items:
        module = module_of(item.nodeid)
        for fixture, modules in SHARED_FIXTURE_MODULES.items():
            if fixture in item.fixturenames and module not in modules:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the session fixture {fixture!r}: add {module} to "
                    f"SHARED_FIXTURE_MODULES[{fixture!r}] in tests/scheduling.py"
                )


def order(items: list[pytest.Item]) -> None:
    """Unit tests, then HEAVY_FIRST's modules, then the rest; file order otherwise (stable)."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        module = module_of(item.nodeid)
        if not module.startswith(INTEGRATION):
            return (0, 0)
        if module in HEAVY_FIRST:
            return (1, HEAVY_FIRST.index(module))
        return (2, 0)

    items.sort(key=rank)


class ByModuleAndSharedFixture(LoadScopeScheduling):
    """xdist's scope scheduling (a scope runs whole in one process, scopes handed out in
    collection order) with scope_of's scopes."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)
