"""Routing between champion and challenger, and the shadow predictions' bookkeeping.

The runner calls are small async functions that answer like the runner (probabilities and a
fingerprint column), so the counts can be checked exactly; the integration tests do the same
against a real `bentoml serve`.
"""

from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import pytest
from prometheus_client import REGISTRY

from iris_service.challenger import ChallengerRouter, answered_by_challenger, shadow_outcomes
from iris_service.model_loading import NO_MODEL

CHAMPION_FP, CHALLENGER_FP = 11.0, 22.0


def answer(rows: np.ndarray, fingerprint: float, class_of_row) -> np.ndarray:
    """One-hot probabilities of class_of_row(row), and the fingerprint."""
    out = np.zeros((len(rows), 4))
    for i, row in enumerate(rows):
        out[i, class_of_row(row)] = 1.0
    out[:, -1] = fingerprint
    return out


async def champion(rows: np.ndarray) -> np.ndarray:
    return answer(rows, CHAMPION_FP, lambda row: int(row[0]) % 3)


async def challenger(rows: np.ndarray) -> np.ndarray:
    # agrees with the champion except on rows whose first value is 4 (class 1 vs 2)
    return answer(rows, CHALLENGER_FP, lambda row: 2 if int(row[0]) == 4 else int(row[0]) % 3)


async def no_challenger(rows: np.ndarray) -> np.ndarray:
    out = np.full((len(rows), 4), np.nan)
    out[:, -1] = NO_MODEL
    return out


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("mode", ["none", "shadow"])
def test_only_canary_routes_to_the_challenger(mode: str) -> None:
    rng = random.Random(1)
    assert not any(answered_by_challenger(rng, mode, 1.0) for _ in range(100))


def test_canary_share_bounds_and_seeded_draw() -> None:
    rng = random.Random(1)
    assert not any(answered_by_challenger(rng, "canary", 0.0) for _ in range(1000))
    assert all(answered_by_challenger(rng, "canary", 1.0) for _ in range(1000))
    draws, share = 20_000, 0.2
    rng = random.Random(7)
    picked = sum(answered_by_challenger(rng, "canary", share) for _ in range(draws))
    tolerance = 4.5 * math.sqrt(draws * share * (1 - share))
    assert abs(picked - draws * share) < tolerance, picked
    again = random.Random(7)
    first = [answered_by_challenger(again, "canary", share) for _ in range(50)]
    again = random.Random(7)
    assert first == [answered_by_challenger(again, "canary", share) for _ in range(50)]


def test_shadow_outcomes_compare_classes_per_flower() -> None:
    rows = np.array([[0.0], [4.0], [2.0]])
    outcomes = shadow_outcomes(asyncio.run(champion(rows)), asyncio.run(challenger(rows)))
    assert outcomes == [
        ("setosa", "setosa"),
        ("versicolor", "virginica"),
        ("virginica", "virginica"),
    ]


def test_canary_answers_carry_the_challenger_and_are_counted() -> None:
    router = ChallengerRouter("canary", champion, challenger, canary_share=0.3, seed=3)
    before = {r: sample("iris_routed_requests_total", role=r) for r in ("champion", "challenger")}

    async def run() -> list[float]:
        return [float((await router.predict(np.array([[1.0]])))[0, -1]) for _ in range(2000)]

    fingerprints = asyncio.run(run())
    by_challenger = fingerprints.count(CHALLENGER_FP)
    assert by_challenger + fingerprints.count(CHAMPION_FP) == 2000
    assert abs(by_challenger - 600) < 4.5 * math.sqrt(2000 * 0.3 * 0.7), by_challenger
    counted = {
        r: sample("iris_routed_requests_total", role=r) - before[r]
        for r in ("champion", "challenger")
    }
    assert counted == {"champion": 2000 - by_challenger, "challenger": by_challenger}


def test_canary_without_a_challenger_is_answered_by_the_champion() -> None:
    asked: list[int] = []

    async def absent(rows: np.ndarray) -> np.ndarray:
        asked.append(len(rows))
        return await no_challenger(rows)

    router = ChallengerRouter("canary", champion, absent, canary_share=1.0, absent_backoff_s=60)

    async def run() -> list[float]:
        return [float((await router.predict(np.array([[1.0]])))[0, -1]) for _ in range(10)]

    assert asyncio.run(run()) == [CHAMPION_FP] * 10
    assert asked == [1]  # not asked again during the back-off


def test_shadow_counts_agreement_and_confusion_off_the_answer_path() -> None:
    router = ChallengerRouter("shadow", champion, challenger)
    agree0 = sample("iris_shadow_predictions_total", agreement="agree")
    disagree0 = sample("iris_shadow_predictions_total", agreement="disagree")
    cell0 = sample(
        "iris_shadow_confusion_total", champion_class="versicolor", challenger_class="virginica"
    )
    values = [0.0, 1.0, 2.0, 4.0, 4.0, 3.0, 5.0, 4.0]

    async def run() -> list[float]:
        fps = [float((await router.predict(np.array([[v]])))[0, -1]) for v in values]
        await router.drain()
        return fps

    assert asyncio.run(run()) == [CHAMPION_FP] * len(values)  # the champion answers
    assert sample("iris_shadow_predictions_total", agreement="disagree") - disagree0 == 3
    assert sample("iris_shadow_predictions_total", agreement="agree") - agree0 == 5
    assert (
        sample(
            "iris_shadow_confusion_total",
            champion_class="versicolor",
            challenger_class="virginica",
        )
        - cell0
        == 3
    )


def test_shadow_drops_when_saturated_and_never_delays_the_answer() -> None:
    async def run() -> tuple[int, float, float]:
        release = asyncio.Event()

        async def slow_challenger(rows: np.ndarray) -> np.ndarray:
            await release.wait()
            return await challenger(rows)

        router = ChallengerRouter("shadow", champion, slow_challenger, max_shadow_in_flight=3)
        dropped0 = sample("iris_shadow_skipped_total", reason="saturated")
        agree0 = sample("iris_shadow_predictions_total", agreement="agree")
        for _ in range(10):  # answered while every shadow prediction is still blocked
            assert (await router.predict(np.array([[1.0]])))[0, -1] == CHAMPION_FP
        in_flight = router.shadow_in_flight
        release.set()
        await router.drain()
        return (
            in_flight,
            sample("iris_shadow_skipped_total", reason="saturated") - dropped0,
            sample("iris_shadow_predictions_total", agreement="agree") - agree0,
        )

    in_flight, dropped, agreed = asyncio.run(run())
    assert (in_flight, dropped, agreed) == (3, 7, 3)


def test_a_failed_shadow_prediction_is_counted_not_raised() -> None:
    async def failing(rows: np.ndarray) -> np.ndarray:
        raise ConnectionError("runner gone")

    router = ChallengerRouter("shadow", champion, failing)
    failed0 = sample("iris_shadow_skipped_total", reason="failed")

    async def run() -> float:
        fp = float((await router.predict(np.array([[1.0], [2.0]])))[0, -1])
        await router.drain()
        return fp

    assert asyncio.run(run()) == CHAMPION_FP
    assert sample("iris_shadow_skipped_total", reason="failed") - failed0 == 2
    assert router.shadow_in_flight == 0
