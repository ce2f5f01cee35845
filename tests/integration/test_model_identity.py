"""The model an answer names is the model that computed it.

A server runs model A; `train.py` imports model B (another family, so its probabilities
differ) while it serves, and B is made champion in the serving aliases; the runner is killed
and its restart loads B (the alias poll is set to its slowest, so the switch comes from the
restart, not from the follower, though either would have to keep the rule). Under continuous
traffic, every answer's `model_tag` must name the model whose `predict_proba` gives exactly
the answer's probabilities, before, during and after the switch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from iris_service.model_aliases import ServingAliases, write_aliases
from iris_service.settings import CLASS_NAMES, MODEL_NAME
from tests.integration.model_support import probabilities_by_tag, train
from tests.integration.reliability_support import TrafficLog, drive
from tests.support import VERSICOLOR
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server


def _probabilities_by_tag(state: ProjectState) -> dict[str, list[float]]:
    """predict_proba of VERSICOLOR by every stored model, computed outside the server."""
    return {tag: rows[0] for tag, rows in probabilities_by_tag(state, [VERSICOLOR]).items()}


@pytest.mark.timeout(420)
def test_every_answer_names_the_model_that_computed_it(tmp_path: Path) -> None:
    state = ProjectState(tmp_path / "state")
    train(state, "logistic_regression")
    with bento_server(state, tmp_path / "logs", IRIS_ALIAS_POLL_SECONDS="30") as server:
        old_runner = server.worker_pid()

        async def scenario() -> TrafficLog:
            traffic = asyncio.create_task(drive(f"{server.url}/predict", 4, 40.0))
            await asyncio.sleep(2.0)
            model_b = await asyncio.to_thread(train, state, "random_forest")
            write_aliases(MODEL_NAME, ServingAliases(model_b), state.bentoml_home)
            os.kill(old_runner, signal.SIGKILL)
            return await traffic

        log = asyncio.run(scenario())
        assert _restarted(server, old_runner)

    expected = _probabilities_by_tag(state)
    assert len(expected) == 2, expected
    assert expected[sorted(expected)[0]] != expected[sorted(expected)[1]]
    answers = log.with_status(200)
    tags = Counter(outcome.body["model_tag"] for outcome in answers)
    assert set(tags) == set(expected), (tags, expected)  # both models answered
    for outcome in answers:
        body = outcome.body
        probabilities = [body["probabilities"][name] for name in CLASS_NAMES]
        assert probabilities == expected[body["model_tag"]], body
    # Only 200s, or the refusals of a runner that is restarting (never a 500).
    assert set(log.statuses()) <= {200, 503, 504}, log.statuses()
    # Answers are logged in completion order: model A before the kill, model B at the end.
    first, last = answers[0].body["model_tag"], answers[-1].body["model_tag"]
    assert first != last and {first, last} == set(expected), (first, last)
    print(f"\nanswers by model: {dict(tags)}; statuses {dict(log.statuses())}")


def _restarted(server: LocalServer, old_runner: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if server.worker_pid() != old_runner:
                return True
        except LookupError:
            pass
        time.sleep(0.2)
    return False
