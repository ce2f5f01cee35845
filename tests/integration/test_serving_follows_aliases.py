"""A running `bentoml serve` follows the serving aliases, under load, without a failed request.

Two versions made by the real train.py (logistic regression A, random forest B: their
probabilities differ), one real server on 127.0.0.1. The pipeline's promote and rollback are
what they are to the server: a new aliases file (`write_aliases`). Every answer's
probabilities must be exactly those of the model its `model_tag` names.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from iris_service.inference.model_aliases import ServingAliases, write_aliases
from iris_service.names import CLASS_NAMES, FEATURE_NAMES, MODEL_NAME
from tests.integration.model_support import (
    ALIAS_POLL_S,
    TrainedCopy,
    model_file,
    probabilities_by_tag,
)
from tests.integration.reliability_support import Outcome, TrafficLog, drive
from tests.support import VERSICOLOR
from tools.local_server import LocalServer, ProjectState, bento_server
from tools.report import take_snapshot

pytestmark = pytest.mark.server

SWITCH_LIMIT_S = 30.0
EVERY_WORKER_S = 5.0


@dataclass(frozen=True)
class TwoModels:
    state: ProjectState
    a: str  # logistic regression
    b: str  # random forest

    def name(self, champion: str, challenger: str | None = None) -> None:
        """What `make promote` / `make rollback` leave for the server: the aliases file."""
        write_aliases(MODEL_NAME, ServingAliases(champion, challenger), self.state.bentoml_home)


@pytest.fixture(scope="module")
def models(trained_copy: TrainedCopy) -> TwoModels:
    state, (a, b) = trained_copy("logistic_regression", "random_forest")
    return TwoModels(state, a, b)


@pytest.fixture(scope="module")
def expected(models: TwoModels) -> dict[str, list[float]]:
    """Each version's probabilities for VERSICOLOR, computed outside the server."""
    by_tag = probabilities_by_tag(models.state, [VERSICOLOR])
    assert by_tag[models.a] != by_tag[models.b]
    return {tag: rows[0] for tag, rows in by_tag.items()}


@pytest.fixture(scope="module")
def server(models: TwoModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """Mode none; starts with A as champion (B is `latest`: the file, not latest, decides)."""
    models.name(models.a)
    with bento_server(models.state, tmp_path_factory.mktemp("aliases-logs")) as running:
        yield running


def _serving(server: LocalServer) -> dict:
    answer = requests.get(f"{server.url}/model", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _wait_for_champion(server: LocalServer, tag: str) -> float:
    """Until the API worker that answers GET /model serves `tag`, then one poll interval more
    (with a second of margin), so that every API worker has looked at the file since."""
    started = time.monotonic()
    while _serving(server)["champion"] != tag:
        assert time.monotonic() - started < SWITCH_LIMIT_S, _serving(server)
        time.sleep(0.1)
    time.sleep(ALIAS_POLL_S + 1.0)
    return time.monotonic() - started


def _check_answers(log: TrafficLog, expected: dict[str, list[float]]) -> list[Outcome]:
    """Only 200s, each with the probabilities of the model it names; in completion order."""
    assert dict(log.statuses()) == {200: len(log.outcomes)}, log.statuses()
    for outcome in log.outcomes:
        body = outcome.body
        assert [body["probabilities"][c] for c in CLASS_NAMES] == expected[body["model_tag"]]
    return sorted(log.outcomes, key=lambda o: o.finished_at)


def _switch(answers: list[Outcome], at: float, old: str, new: str) -> tuple[float, int]:
    """(seconds from the aliases write until every API worker answers with `new`, answers by
    `old` sent after the write), after checking: `old` for every request finished before the
    write, `new` for every request sent after the last answer by `old`. Each API worker
    follows the file on its own, so for up to one poll interval some answer with the old
    version and some with the new (each answer naming the model that computed it)."""
    for outcome in answers:
        if outcome.finished_at < at:
            assert outcome.body["model_tag"] == old, outcome.body
    late_old = [o for o in answers if o.started_at > at and o.body["model_tag"] == old]
    switched_at = max((o.finished_at for o in late_old), default=at)
    after = [o for o in answers if o.started_at > switched_at]
    timeline = Counter(
        (round(o.started_at - at), o.body["model_tag"][-4:]) for o in answers if o.started_at > at
    )
    assert after, f"no answer after the switch: {sorted(timeline.items())}"
    for outcome in after:
        assert outcome.body["model_tag"] == new, outcome.body
    return switched_at - at, len(late_old)


async def _until_every_worker_follows(
    log: TrafficLog, at: float, old: str, new: str, limit_s: float = SWITCH_LIMIT_S
) -> None:
    """While the traffic runs: until answers by `new` have come for one poll interval (with a
    second of margin) with no answer by `old` sent in that time, i.e. every API worker the
    traffic reaches has followed the aliases written at `at`. Fails after `limit_s`."""
    quiet_s = ALIAS_POLL_S + 1.0
    while True:
        now = time.monotonic()
        after = [o for o in log.outcomes if o.status == 200 and o.started_at > at]
        last_old = max((o.started_at for o in after if o.body["model_tag"] == old), default=at)
        first_new = min((o.started_at for o in after if o.body["model_tag"] == new), default=now)
        if now - max(last_old, first_new) >= quiet_s:
            return
        assert now - at < limit_s, f"not every worker serves {new} {limit_s} s after the write"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(600)
def test_promote_then_rollback_under_load(
    models: TwoModels, server: LocalServer, expected: dict[str, list[float]]
) -> None:
    """Traffic runs through a promote and then a rollback; each write waits for the awaited
    event (every worker answering with the new champion), so the rollback comes after the
    promote has been followed, within the 30 s limit, not after a fixed window."""
    _wait_for_champion(server, models.a)
    writes: dict[str, float] = {}

    async def scenario() -> TrafficLog:
        stop, log = asyncio.Event(), TrafficLog()
        # Bounded by the clock (both switches' limits and a margin) and by `stop`.
        traffic = asyncio.create_task(
            drive(f"{server.url}/predict", 4, 2 * SWITCH_LIMIT_S + 30, stop=stop, log=log)
        )
        try:
            # Answers by A before the write: the old champion is what served until then.
            while len(log.outcomes) < 20:
                assert not traffic.done(), "the traffic ended before the first write"
                await asyncio.sleep(0.05)
            writes["promote"] = time.monotonic()
            models.name(models.b, models.a)  # promote B
            await _until_every_worker_follows(log, writes["promote"], models.a, models.b)
            writes["rollback"] = time.monotonic()
            models.name(models.a)  # roll back to A
            await _until_every_worker_follows(log, writes["rollback"], models.b, models.a)
        finally:
            stop.set()
        return await traffic

    answers = _check_answers(asyncio.run(scenario()), expected)
    promoted = [o for o in answers if o.finished_at < writes["rollback"]]
    promote_s, during_promote = _switch(promoted, writes["promote"], models.a, models.b)
    rolled_back = [o for o in answers if o.started_at > writes["promote"] + promote_s]
    rollback_s, during_rollback = _switch(rolled_back, writes["rollback"], models.b, models.a)
    # Every API worker serves the new version within 5 s of the write (a 2 s poll).
    assert promote_s < EVERY_WORKER_S and rollback_s < EVERY_WORKER_S, (promote_s, rollback_s)
    tags = Counter(o.body["model_tag"] for o in answers)
    assert tags[models.a] > 0 and tags[models.b] > 0
    print(
        f"\n{len(answers)} requests, all 200 ({dict(tags)}); promote switched in "
        f"{promote_s:.2f} s ({during_promote} answers by the old champion meanwhile), "
        f"rollback in {rollback_s:.2f} s ({during_rollback} meanwhile)"
    )
    # The version in use is visible on GET /model and in /metrics.
    assert _serving(server)["champion"] == models.a
    info = {
        (labels["model_tag"], labels["role"]): value
        for labels, value in take_snapshot(server.url).select("iris_model_info")
    }
    assert info[(models.a, "champion")] == 1 and info[(models.b, "champion")] == 0


@pytest.mark.timeout(300)
def test_a_damaged_or_missing_version_is_refused_while_the_old_one_serves(
    models: TwoModels, server: LocalServer, expected: dict[str, list[float]]
) -> None:
    models.name(models.a)
    _wait_for_champion(server, models.a)
    damaged = model_file(models.state, models.b)
    original = damaged.read_bytes()
    missing = f"{MODEL_NAME}:doesnotexist00"
    log_start = len(server.log())

    followers = len(server.worker_pids())

    async def refused(tag: str) -> None:
        """Until every process that holds a model has logged its refusal of `tag` (bounded)."""
        deadline = time.monotonic() + SWITCH_LIMIT_S
        while server.log()[log_start:].count(f"refused {tag} as champion") < followers:
            assert time.monotonic() < deadline, f"not every process refused {tag}"
            await asyncio.sleep(0.1)

    async def scenario() -> TrafficLog:
        stop, log = asyncio.Event(), TrafficLog()
        traffic = asyncio.create_task(
            drive(f"{server.url}/predict", 4, 2 * SWITCH_LIMIT_S + 30, stop=stop, log=log)
        )
        try:
            while len(log.outcomes) < 20:  # answers before the first write
                assert not traffic.done(), "the traffic ended before the first write"
                await asyncio.sleep(0.05)
            damaged.write_bytes(b"garbage, not an ONNX graph" * 10)
            models.name(models.b)
            await refused(models.b)
            models.name(missing)
            await refused(missing)
            # Two polls more (a claim that nothing happens needs that long): the refusal is
            # not retried while the file is unchanged, and the old champion still serves.
            until = time.monotonic() + 2 * ALIAS_POLL_S + 1.0
            count = len(log.outcomes)
            while time.monotonic() < until or len(log.outcomes) < count + 20:
                assert not traffic.done(), "the traffic ended before the last refusal"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
        return await traffic

    try:
        answers = _check_answers(asyncio.run(scenario()), expected)
    finally:
        damaged.write_bytes(original)
    assert {o.body["model_tag"] for o in answers} == {models.a}
    assert _serving(server)["champion"] == models.a
    new_log = server.log()[log_start:]
    refusals = [line for line in new_log.splitlines() if "refused " in line]
    # Every process that holds a model (each API worker and the runner) follows the file and
    # says so once per change: not retried while the file is unchanged.
    damaged_lines = [line for line in refusals if f"refused {models.b} as champion" in line]
    missing_lines = [line for line in refusals if f"refused {missing} as champion" in line]
    assert len(refusals) == 2 * followers, refusals
    assert len(damaged_lines) == len(missing_lines) == followers, refusals
    for line in damaged_lines:
        assert f"model {models.b} " in line and "damaged" in line, line
        assert f"still serving {models.a}" in line, line
    for line in missing_lines:
        assert f"model {missing} is not in the BentoML store" in line, line
    assert "Traceback" not in new_log
    print(f"\n{len(answers)} requests, all 200 by {models.a}; refusals:\n" + "\n".join(refusals))


@pytest.mark.timeout(300)
def test_a_restarted_runner_serves_what_the_aliases_say(
    models: TwoModels, server: LocalServer
) -> None:
    models.name(models.a)  # not `latest` (B is)
    _wait_for_champion(server, models.a)
    runner = server.worker_pid()
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server.worker_pid() != runner:
                break
        except LookupError:
            pass
        time.sleep(0.2)
    else:
        pytest.fail("the runner was not restarted")
    while time.monotonic() < deadline:
        answer = requests.post(f"{server.url}/predict", json=VERSICOLOR, timeout=10)
        if answer.status_code == 200:
            break
        time.sleep(0.2)
    assert answer.status_code == 200 and answer.json()["model_tag"] == models.a


def _flowers(count: int, seed: int) -> list[dict[str, float]]:
    """Flowers around the versicolor/virginica border (where two models may disagree)."""
    rng = np.random.default_rng(seed)
    low = np.array([5.5, 2.4, 4.2, 1.2])
    high = np.array([7.0, 3.3, 5.4, 1.9])
    rows = (low + rng.random((count, 4)) * (high - low)).round(1)
    return [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in rows]


@pytest.mark.timeout(600)
def test_shadow_counts_match_the_predictions_of_both_models(
    models: TwoModels, tmp_path: Path
) -> None:
    flowers = _flowers(300, seed=11)
    by_tag = probabilities_by_tag(models.state, flowers)
    classes = {tag: [CLASS_NAMES[int(np.argmax(p))] for p in rows] for tag, rows in by_tag.items()}
    confusion = Counter(zip(classes[models.a], classes[models.b], strict=True))
    agree = sum(n for (a, b), n in confusion.items() if a == b)
    models.name(models.a, models.b)
    with bento_server(
        models.state,
        tmp_path,
        IRIS_CHALLENGER_MODE="shadow",
        # nothing is dropped, so each count is exact (drops are counted apart: unit tests)
        IRIS_SHADOW_MAX_ROWS="100000",
    ) as server:
        assert _serving(server)["challenger"] == models.b
        bodies = [json.dumps(flower) for flower in flowers]
        log = asyncio.run(drive(f"{server.url}/predict", 4, 120.0, bodies=bodies))
        assert dict(log.statuses()) == {200: len(flowers)}
        assert {o.body["model_tag"] for o in log.outcomes} == {models.a}  # the champion answers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snapshot = take_snapshot(server.url)
            shadowed = {
                labels["agreement"]: value
                for labels, value in snapshot.select("iris_shadow_predictions_total")
            }
            if sum(shadowed.values()) >= len(flowers):
                break
            time.sleep(0.2)
    assert shadowed == {"agree": agree, "disagree": len(flowers) - agree}, (shadowed, confusion)
    matrix = {
        (labels["champion_class"], labels["challenger_class"]): value
        for labels, value in snapshot.select("iris_shadow_confusion_total")
        if value
    }
    assert matrix == dict(confusion)
    assert {value for _, value in snapshot.select("iris_shadow_skipped_total")} == {0.0}
    print(f"\nshadow: {len(flowers)} requests; agreement {shadowed}; confusion {dict(confusion)}")


@pytest.mark.timeout(600)
def test_canary_share_is_within_binomial_tolerance(
    models: TwoModels, expected: dict[str, list[float]], tmp_path: Path
) -> None:
    share, requests_sent = 0.2, 2000
    models.name(models.a, models.b)
    with bento_server(
        models.state, tmp_path, IRIS_CHALLENGER_MODE="canary", IRIS_CANARY_SHARE=str(share)
    ) as server:
        assert _serving(server)["mode"] == "canary"
        log = asyncio.run(
            drive(f"{server.url}/predict", 8, 180.0, bodies=[json.dumps(VERSICOLOR)] * 2000)
        )
        routed = {
            labels["role"]: value
            for labels, value in take_snapshot(server.url).select("iris_routed_requests_total")
        }
    answers = _check_answers(log, expected)
    assert len(answers) == requests_sent
    by_challenger = sum(1 for o in answers if o.body["model_tag"] == models.b)
    tolerance = 4.5 * math.sqrt(requests_sent * share * (1 - share))
    assert abs(by_challenger - requests_sent * share) < tolerance, by_challenger
    assert routed == {"challenger": by_challenger, "champion": requests_sent - by_challenger}
    print(
        f"\ncanary: {by_challenger} of {requests_sent} answered by the challenger "
        f"({by_challenger / requests_sent:.3f}; configured {share}, ±{tolerance:.0f} allowed)"
    )
