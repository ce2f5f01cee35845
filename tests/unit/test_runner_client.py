"""The runner call: retried once on a stale pooled connection, given up before BentoML's 504.

What a failed call costs (nothing: the core computes the rows) is tested in
tests/unit/test_inference.py with every exception the call raises.
"""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest

from iris_service.inference import runner_client


async def test_a_stale_connection_is_retried_once_and_only_once() -> None:
    calls: list[int] = []

    async def flaky(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 1:
            raise aiohttp.ServerDisconnectedError()
        return rows

    assert (await runner_client.call_with_retry(flaky, np.ones((2, 4)))).shape == (2, 4)
    assert calls == [2, 2]

    async def dead(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        raise aiohttp.ServerDisconnectedError()

    calls.clear()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await runner_client.call_with_retry(dead, np.ones((1, 4)))
    assert calls == [1, 1]


def test_a_runner_call_gives_up_before_bentomls_own_504() -> None:
    """BentoML's own 504 (its `traffic.timeout`) has another shape and no request id: the
    core gives up a runner call (and computes the rows itself) well before it."""
    import yaml

    from iris_pipeline.paths import PROJECT_ROOT
    from iris_service.settings import API_TIMEOUT_SECONDS, settings

    services = yaml.safe_load((PROJECT_ROOT / "configuration.yaml").read_text())["services"]
    assert services["IrisClassifier"]["traffic"]["timeout"] == API_TIMEOUT_SECONDS
    assert 0 < settings.runner_call_timeout_seconds <= API_TIMEOUT_SECONDS - 3
