"""Drift scores (iris_service/monitoring/drift.py) against the statistics training stores."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

from iris_pipeline import training
from iris_service.monitoring import drift
from iris_service.names import FEATURE_NAMES


@pytest.fixture(scope="module")
def statistics() -> dict:
    return training.feature_statistics(training.load_dataset(seed=42).x_train)


def _monitor(statistics: dict, **options: int) -> drift.DriftMonitor:
    metadata = {"feature_statistics": statistics}
    return drift.DriftMonitor.from_model_metadata(metadata, FEATURE_NAMES, **options)


def test_training_bins_hold_every_training_flower(statistics: dict) -> None:
    for name in FEATURE_NAMES:
        bins = drift.FeatureBins.from_statistics(name, statistics[name])
        assert len(bins.expected) == len(bins.cut_points) + 1
        assert sum(bins.expected) == pytest.approx(1.0)
        assert list(bins.cut_points) == sorted(set(bins.cut_points))


def test_the_training_data_itself_has_zero_drift(statistics: dict) -> None:
    data = training.load_dataset(seed=42)
    monitor = _monitor(statistics, window=len(data.x_train), min_flowers=50)
    monitor.observe_many(data.x_train.to_numpy().tolist())
    assert monitor.scores() == pytest.approx(dict.fromkeys(FEATURE_NAMES, 0.0), abs=1e-9)


def test_in_distribution_traffic_scores_low_and_shifted_traffic_high(statistics: dict) -> None:
    iris = load_iris().data
    rng = np.random.default_rng(7)
    monitor = _monitor(statistics, window=1000)
    monitor.observe_many(iris[rng.integers(0, len(iris), 1000)].tolist())
    normal = monitor.scores()
    assert normal is not None and max(normal.values()) < drift.MODERATE_DRIFT, normal

    shifted = iris[rng.integers(0, len(iris), 1000)].copy()
    shifted[:, 2] += 1.5  # petal length
    monitor.observe_many(shifted.tolist())  # replaces the whole window
    scores = monitor.scores()
    assert scores is not None
    assert scores["petal_length"] > drift.SIGNIFICANT_DRIFT
    assert scores["sepal_length"] < drift.MODERATE_DRIFT  # unchanged features stay low
    report = monitor.report()
    assert report["level"] == "significant" and report["flowers_in_window"] == 1000


def test_the_window_slides(statistics: dict) -> None:
    monitor = _monitor(statistics, window=10, min_flowers=5)
    for _ in range(25):
        monitor.observe([5.1, 3.5, 1.4, 0.2])
    assert monitor.flowers_in_window == 10 and monitor.observed_total == 25
    report = monitor.report()
    for feature in report["features"].values():
        assert sum(feature["window_shares"]) == pytest.approx(1.0)
        assert max(feature["window_shares"]) == 1.0  # one flower repeated: one bin


def test_no_score_before_the_window_holds_enough_flowers(statistics: dict) -> None:
    monitor = _monitor(statistics, window=100, min_flowers=20)
    monitor.observe_many([[5.1, 3.5, 1.4, 0.2]] * 19)
    assert monitor.scores() is None
    assert monitor.report()["status"] == "warming_up"
    monitor.observe([5.1, 3.5, 1.4, 0.2])
    assert monitor.report()["status"] == "ok"


def test_models_without_statistics_get_a_monitor_that_observes_nothing() -> None:
    monitor = drift.DriftMonitor.from_model_metadata({}, FEATURE_NAMES)
    monitor.observe([5.1, 3.5, 1.4, 0.2])
    assert not monitor.enabled and monitor.report()["status"] == "unavailable"


def test_psi_of_known_shares() -> None:
    assert drift.population_stability_index([5, 5], [0.5, 0.5]) == 0.0
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert drift.population_stability_index([9, 1], [0.5, 0.5]) == pytest.approx(expected)
    assert drift.drift_level(0.05) == "none" and drift.drift_level(0.3) == "significant"


def test_scores_are_published_every_n_flowers_at_most_once_per_batch(statistics: dict) -> None:
    published: list[int] = []
    monitor = _monitor(
        statistics, publish_every=10, publish=lambda m: published.append(m.observed_total)
    )
    for _ in range(25):
        monitor.observe([5.1, 3.5, 1.4, 0.2])
    assert published == [10, 20]
    # A batch publishes once, after all its flowers; the cadence continues from there.
    monitor.observe_many([[5.1, 3.5, 1.4, 0.2]] * 32)
    assert published == [10, 20, 57]
    for _ in range(3):
        monitor.observe([5.1, 3.5, 1.4, 0.2])
    assert published == [10, 20, 57, 60]


async def test_drift_endpoint_answers_the_report(statistics: dict) -> None:
    monitor = _monitor(statistics, window=50, min_flowers=10)
    monitor.observe_many([[6.3, 3.3, 6.0, 2.5]] * 20)
    app = drift.drift_app(lambda: monitor)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.get("/drift")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and set(body["features"]) == set(FEATURE_NAMES)
    assert body["max_psi"] > drift.SIGNIFICANT_DRIFT  # one flower repeated is not Iris


def _window_counts_by_hand(
    monitor: drift.DriftMonitor, flowers: list[list[float]]
) -> list[list[int]]:
    """Bin counts of the last `window` flowers, one bisect per value (the definition)."""
    window = flowers[-monitor.window :]
    counts = [[0] * len(feature.expected) for feature in monitor.features]
    for flower in window:
        for index, feature in enumerate(monitor.features):
            counts[index][feature.bin_of(flower[index])] += 1
    return counts


@pytest.mark.parametrize("batch_sizes", [(1,) * 30, (3, 7, 1, 9, 4), (25,), (6, 40, 2), (11, 13)])
def test_batches_count_exactly_like_single_flowers(
    statistics: dict, batch_sizes: tuple[int, ...]
) -> None:
    """observe_many (vectorised) leaves the window the flowers one by one would leave,
    whatever the batches: smaller than the window, wrapping around it, larger than it."""
    iris = load_iris().data
    rng = np.random.default_rng(sum(batch_sizes))
    monitor = _monitor(statistics, window=10, min_flowers=5)
    seen: list[list[float]] = []
    for size in batch_sizes:
        batch = iris[rng.integers(0, len(iris), size)].tolist()
        monitor.observe_many(batch)
        seen.extend(batch)
        expected = _window_counts_by_hand(monitor, seen)
        assert [counts.tolist() for counts in monitor._counts] == expected
        assert monitor.flowers_in_window == min(10, len(seen))
        assert monitor.observed_total == len(seen)
