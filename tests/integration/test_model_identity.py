"""The model an answer names is the model that computed it.

A server runs model A; model B (another family, so its probabilities differ; trained by the
real train.py before, once per session) arrives in the BentoML store while it serves, moved in
whole as an import leaves it, and B is made champion in the serving aliases; the runner is killed
too, and restarts. Every process follows the aliases on its own, so for a moment the API
workers and the runner may serve different versions. Under continuous traffic (one flower,
and batches the runner computes), every answer's `model_tag` must name the model whose
compiled form gives exactly the answer's probabilities, before, during and after the switch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from iris_service.inference.model_aliases import ServingAliases, write_aliases
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from tests.integration.model_support import ALIAS_POLL_S, TrainedCopy, probabilities_by_tag
from tests.integration.reliability_support import TrafficLog, drive
from tests.support import VERSICOLOR
from tools.local_server import LocalServer, ProjectState, bento_server

pytestmark = pytest.mark.server

FLOWER = [VERSICOLOR[name] for name in FEATURE_NAMES]


def _probabilities_by_tag(state: ProjectState) -> dict[str, list[float]]:
    """predict_proba of VERSICOLOR by every stored model, computed outside the server."""
    return {tag: rows[0] for tag, rows in probabilities_by_tag(state, [VERSICOLOR]).items()}


@pytest.mark.timeout(480)
def test_every_answer_names_the_model_that_computed_it(
    trained_copy: TrainedCopy, tmp_path: Path
) -> None:
    state, (model_a, model_b) = trained_copy("logistic_regression", "random_forest")
    store = state.bentoml_home / "models" / MODEL_NAME
    held_back = tmp_path / "import" / model_b.split(":")[1]
    held_back.parent.mkdir()
    # Until the scenario "imports" it, B is outside the store and A is the latest and champion.
    (store / model_b.split(":")[1]).rename(held_back)
    (store / "latest").write_text(model_a.split(":")[1])
    write_aliases(MODEL_NAME, ServingAliases(model_a), state.bentoml_home)
    with bento_server(state, tmp_path / "logs") as server:
        old_runner = server.worker_pid()

        async def scenario() -> TrafficLog:
            stop = asyncio.Event()
            traffic_log = TrafficLog()
            traffic = asyncio.create_task(
                drive(f"{server.url}/predict", 4, 240.0, stop=stop, log=traffic_log)
            )
            while len(traffic_log.outcomes) < 50:  # answers by A before B arrives
                assert not traffic.done(), "the traffic ended before B arrived"
                await asyncio.sleep(0.05)
            # B arrives whole (one rename, as BentoML's import moves a finished model in).
            held_back.rename(store / held_back.name)
            (store / "latest").write_text(held_back.name)
            write_aliases(MODEL_NAME, ServingAliases(model_b), state.bentoml_home)
            written_at = time.monotonic()
            os.kill(old_runner, signal.SIGKILL)
            # Traffic goes on until the restarted runner has answered for a while (bounded).
            assert await asyncio.to_thread(_restarted, server, old_runner)
            await asyncio.to_thread(server.wait_ready, 90)
            # Until every worker serves B (bounded).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _all_on(traffic_log, model_b, written_at):
                await asyncio.sleep(0.1)
            stop.set()
            return await traffic

        log = asyncio.run(scenario())
        _v2_serves_only_the_served_version(server, served=log.with_status(200)[-1].body)

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


def _v2_serves_only_the_served_version(server: LocalServer, served: dict) -> None:
    """V2 `{version}` names a version the service holds: the served one infers, a held one
    that is not served is refused with 503, an unknown one is 404, in the protocol's shape."""
    serving = served["model_tag"].partition(":")[2]
    held = requests.get(f"{server.url}/v2/models/{MODEL_NAME}", timeout=10).json()["versions"]
    assert serving in held and len(held) == 2, held
    other = next(version for version in held if version != serving)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": FLOWER}]}
    base = f"{server.url}/v2/models/{MODEL_NAME}/versions"
    answer = requests.post(f"{base}/{serving}/infer", json=body, timeout=10)
    assert answer.status_code == 200, (answer.text, server.log_tail())
    assert answer.json()["model_version"] == serving, answer.text
    for version, status in ((other, 503), ("no-such-version", 404)):
        refused = requests.post(f"{base}/{version}/infer", json=body, timeout=10)
        assert refused.status_code == status, refused.text
        assert set(refused.json()) == {"error"} and version in refused.json()["error"]
    metadata = requests.get(f"{base}/{other}", timeout=10)
    assert metadata.status_code == 200 and metadata.json()["versions"] == [other]


def _all_on(log: TrafficLog, new: str, written_at: float) -> bool:
    """200 answers by `new`, and none by another model sent for a poll interval (+1 s): each
    API worker follows the aliases on its own poll, so one that the traffic reaches less
    (or not at all) may serve the old model for up to an interval after the others."""
    after = [o for o in log.outcomes if o.status == 200 and o.started_at > written_at]
    by_new = sum(o.body["model_tag"] == new for o in after)
    others = [o.started_at for o in after if o.body["model_tag"] != new]
    return by_new >= 200 and time.monotonic() - max(others, default=written_at) > ALIAS_POLL_S + 1


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
