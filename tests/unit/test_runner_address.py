"""The start-up checks of the API tier's --depends (iris_service/inference/runner_address.py); the
real start-http-server runs them in tests/integration/test_tier_start_checks.py."""

from __future__ import annotations

import pytest

from iris_service.inference.runner_address import (
    RunnerAddressError,
    check_depends,
    check_url,
    parse_depends,
)

DEPENDENCIES = ["IrisModelRunner"]


def test_parse_depends_reads_name_equals_url() -> None:
    assert parse_depends(["IrisModelRunner=http://runner:3000"]) == {
        "IrisModelRunner": "http://runner:3000"
    }
    with pytest.raises(RunnerAddressError, match="not <Service>=<url>"):
        parse_depends(["http://runner:3000"])


@pytest.mark.parametrize(
    "url", ["http://iris-model-runner:3000", "https://r.example:443", "tcp://10.0.0.5:3000"]
)
def test_remote_urls_with_host_and_port_are_accepted(url: str) -> None:
    check_url(url, resolve=False)


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:3000", "http://runner", "file:///tmp/runner.sock", "http://:3000", "http://r:x"],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(RunnerAddressError, match="malformed"):
        check_url(url, resolve=False)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(RunnerAddressError, match="does not resolve"):
        check_url("http://no-such-runner.invalid:3000")
    check_url("http://127.0.0.1:9")  # resolves; refusing connections is not checked


def test_unknown_or_missing_names_are_refused() -> None:
    with pytest.raises(RunnerAddressError, match="does not depend on"):
        check_depends("IrisClassifier", {"IrisModelRuner": "http://r:3000"}, DEPENDENCIES)
    with pytest.raises(RunnerAddressError, match="needs --depends IrisModelRunner"):
        check_depends("IrisClassifier", {}, DEPENDENCIES)
    # The whole Bento (no --service-name) builds its runner as its own process: nothing needed.
    check_depends("", {}, DEPENDENCIES)
    check_depends("IrisClassifier", {"IrisModelRunner": "http://r:3000"}, DEPENDENCIES, False)
