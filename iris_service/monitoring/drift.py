"""Data drift: do the flowers the service sees still look like the training flowers?

Method: the Population Stability Index (PSI) of each feature, over a sliding window of the
most recent live flowers, against the training distribution stored with the model
(`metadata["feature_statistics"]`, written by training: the deciles of every feature).

- Bins: the distinct training deciles q10..q90 cut each feature into (up to) ten bins,
  (-inf, q10], (q10, q20], ..., (q90, +inf). A bin's expected share is the exact share of
  training flowers in it, stored by training as `bin_cut_points` / `bin_shares`: Iris
  measurements repeat (0.1 cm steps), so a decile's own value can hold far more than 10 %
  (26 of 150 sepal widths are exactly 3.0 cm), and assuming 10 % per bin would report drift
  (PSI ~0.12) for the training data itself.
- Score: PSI = sum over bins of (actual - expected) * ln(actual / expected), both shares
  floored at 1e-4 so an empty bin gives a large but finite score. Rules of thumb:
  < 0.1 no drift, 0.1-0.25 moderate drift, >= 0.25 significant drift. With a window of n
  flowers and k bins, sampling noise alone gives about (k - 1) / n (0.01 for 1000 flowers),
  so no score is published before the window holds `min_flowers` flowers.
- Cost on the request path: per request, whatever its number of flowers, one vectorised
  `searchsorted` per feature over at most nine cut points and one `bincount` per feature
  to update the counts from a ring buffer of bin indices (a batch of 1,000 flowers costs
  about what one flower does); the scores (4 features x 10 bins) are recomputed when
  `publish_every` flowers have come since the last time (at most once per request) and on
  GET /drift.
- Processes: each API worker keeps its own window (BentoML workers share no memory). The
  Prometheus gauges use multiprocess_mode="livemax": /metrics shows, per feature, the
  highest score among the live workers; GET /drift answers for the worker that served it.
  The service's event loop is single-threaded, so the monitor needs no lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_service.monitoring import metrics

SHARE_FLOOR = 1e-4
MODERATE_DRIFT = 0.1
SIGNIFICANT_DRIFT = 0.25


def drift_level(psi: float) -> str:
    if psi >= SIGNIFICANT_DRIFT:
        return "significant"
    if psi >= MODERATE_DRIFT:
        return "moderate"
    return "none"


@dataclass(frozen=True)
class FeatureBins:
    """The training distribution of one feature, as bins and their expected shares."""

    name: str
    cut_points: tuple[float, ...]  # strictly increasing; bin i is (cut[i-1], cut[i]]
    expected: tuple[float, ...]  # share of training flowers per bin; len(cut_points) + 1

    @classmethod
    def from_statistics(cls, name: str, statistics: Mapping[str, Any]) -> FeatureBins:
        cuts = tuple(float(cut) for cut in statistics["bin_cut_points"])
        shares = tuple(float(share) for share in statistics["bin_shares"])
        if len(shares) != len(cuts) + 1 or list(cuts) != sorted(set(cuts)):
            raise ValueError(f"{name}: bin_shares needs one more entry than bin_cut_points")
        return cls(name, cuts, shares)

    def bin_of(self, value: float) -> int:
        return bisect_left(self.cut_points, value)


def population_stability_index(counts: Sequence[int], expected: Sequence[float]) -> float:
    total = sum(counts)
    if total == 0:
        return 0.0
    psi = 0.0
    for count, expected_share in zip(counts, expected, strict=True):
        actual = max(count / total, SHARE_FLOOR)
        reference = max(expected_share, SHARE_FLOOR)
        psi += (actual - reference) * math.log(actual / reference)
    return psi


class DriftMonitor:
    """Bin counts of the last `window` flowers, per feature, kept in a ring buffer."""

    def __init__(
        self,
        features: Sequence[FeatureBins],
        window: int = 1000,
        min_flowers: int = 200,
        publish_every: int = 50,
        publish: Callable[[DriftMonitor], None] | None = None,
    ) -> None:
        if window <= 0 or min_flowers <= 0 or publish_every <= 0:
            raise ValueError("window, min_flowers and publish_every must be positive")
        self.features = tuple(features)
        self.window = window
        self.min_flowers = min(min_flowers, window)
        self.publish_every = publish_every
        self._publish = publish
        self._counts = [np.zeros(len(feature.expected), np.int64) for feature in self.features]
        self._cuts = [np.asarray(feature.cut_points, np.float64) for feature in self.features]
        self._ring = np.zeros((window, len(self.features)), np.intp)  # bin per (slot, feature)
        self._next_slot = 0
        self._filled = 0
        self._since_publish = 0
        self.observed_total = 0

    @classmethod
    def from_model_metadata(
        cls, metadata: Mapping[str, Any], feature_names: Sequence[str], **options: Any
    ) -> DriftMonitor:
        """A monitor for the stored statistics; with none stored, one that observes nothing."""
        statistics = metadata.get("feature_statistics") or {}
        if not all(name in statistics for name in feature_names):
            return cls([], **options)
        bins = [FeatureBins.from_statistics(name, statistics[name]) for name in feature_names]
        return cls(bins, **options)

    @property
    def enabled(self) -> bool:
        return bool(self.features)

    @property
    def flowers_in_window(self) -> int:
        return self._filled

    def observe(self, row: Sequence[float]) -> None:
        """Count one flower (its measurements in the order of `features`)."""
        self.observe_many([row])

    def observe_many(self, rows: Sequence[Sequence[float]] | np.ndarray) -> None:
        """Count flowers (rows of measurements in the order of `features`), oldest first.

        Vectorised: the bins of all rows in one `searchsorted` per feature, the ring and the
        counts updated with one `bincount` per feature, whatever the number of rows.
        """
        if not self.features:
            return
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.features))
        total = len(rows)
        if total == 0:
            return
        bins = np.column_stack(
            [np.searchsorted(cuts, rows[:, index]) for index, cuts in enumerate(self._cuts)]
        )
        kept = bins[-self.window :]  # older rows of a batch leave the window within it
        slots = (self._next_slot + total - len(kept) + np.arange(len(kept))) % self.window
        if total >= self.window:
            occupied = np.zeros(0, np.intp)  # every slot is overwritten: forget them all
            for counts in self._counts:
                counts[:] = 0
        else:
            occupied = slots if self._filled == self.window else slots[slots < self._filled]
        for index, counts in enumerate(self._counts):
            size = len(counts)
            counts -= np.bincount(self._ring[occupied, index], minlength=size)
            counts += np.bincount(kept[:, index], minlength=size)
        self._ring[slots] = kept
        self._next_slot = (self._next_slot + total) % self.window
        self._filled = min(self.window, self._filled + total)
        self.observed_total += total
        self._since_publish += total
        if self._since_publish >= self.publish_every:
            self._since_publish %= self.publish_every  # once per batch, same cadence
            if self._publish is not None:
                self._publish(self)

    def scores(self) -> dict[str, float] | None:
        """PSI per feature, or None while the window holds fewer than `min_flowers`."""
        if not self.features or self._filled < self.min_flowers:
            return None
        return {
            feature.name: population_stability_index(counts.tolist(), feature.expected)
            for feature, counts in zip(self.features, self._counts, strict=True)
        }

    def report(self) -> dict[str, Any]:
        """The JSON answer of GET /drift."""
        scores = self.scores()
        if not self.features:
            status = "unavailable"
        elif scores is None:
            status = "warming_up"
        else:
            status = "ok"
        features: dict[str, Any] = {}
        for feature, counts in zip(self.features, self._counts, strict=True):
            psi = None if scores is None else round(scores[feature.name], 6)
            features[feature.name] = {
                "psi": psi,
                "level": None if psi is None else drift_level(psi),
                "expected_shares": [round(share, 4) for share in feature.expected],
                "window_shares": [
                    round(count / max(self._filled, 1), 4) for count in counts.tolist()
                ],
            }
        max_psi = None if scores is None else round(max(scores.values()), 6)
        return {
            "method": "population stability index over the training deciles",
            "status": status,
            "max_psi": max_psi,
            "level": None if max_psi is None else drift_level(max_psi),
            "thresholds": {"moderate": MODERATE_DRIFT, "significant": SIGNIFICANT_DRIFT},
            "window_size": self.window,
            "flowers_in_window": self._filled,
            "min_flowers": self.min_flowers,
            "observed_total": self.observed_total,
            "features": features,
        }


def publish_to_prometheus(monitor: DriftMonitor) -> None:
    """Set the drift gauges of this worker (see metrics.DRIFT_PSI)."""
    metrics.DRIFT_WINDOW_FLOWERS.set(monitor.flowers_in_window)
    scores = monitor.scores()
    if scores is not None:
        for name, psi in scores.items():
            metrics.DRIFT_PSI.labels(name).set(psi)


def drift_route(monitor_of: Callable[[], DriftMonitor]) -> Route:
    """GET /drift, answered with `monitor_of().report()`."""

    async def drift(_: Request) -> JSONResponse:
        monitor = monitor_of()
        publish_to_prometheus(monitor)
        return JSONResponse(monitor.report())

    return Route("/drift", drift, methods=["GET"])


def drift_app(monitor_of: Callable[[], DriftMonitor]) -> Starlette:
    """A small ASGI app answering GET /drift."""
    return Starlette(routes=[drift_route(monitor_of)])
