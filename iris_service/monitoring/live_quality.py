"""Live quality: how right each model version is on the flowers whose true class came back.

For every model version (the BentoML tag that made the predictions), a sliding window of its
last `window` labelled predictions, in the order the labels arrived. From it:
accuracy (share predicted right), recall of each true class present in the window, the
number of labels in the window and the median delay from prediction to label. The labels
come from the prediction store (iris_service/records/store.py), which every API worker (and
every replica sharing a PostgreSQL store) follows, so every worker computes the same
figures; they are published as Prometheus gauges (iris_live_accuracy{model_version} and the
others in metrics.py) after each change, and answered as JSON on GET /live_quality.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from iris_service.monitoring import metrics


@dataclass(frozen=True)
class Label:
    predicted: str
    true: str
    delay_s: float


@dataclass(frozen=True)
class WindowSummary:
    labelled: int
    accuracy: float
    recall: dict[str, float]
    median_delay_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "labelled": self.labelled,
            "accuracy": round(self.accuracy, 6),
            "recall": {name: round(value, 6) for name, value in self.recall.items()},
            "median_delay_s": round(self.median_delay_s, 3),
        }


def summarise(labels: Sequence[Label], class_names: Sequence[str]) -> WindowSummary | None:
    """The window's figures, or None for an empty window."""
    if not labels:
        return None
    correct = sum(label.predicted == label.true for label in labels)
    recall = {}
    for name in class_names:
        of_class = [label for label in labels if label.true == name]
        if of_class:
            recall[name] = sum(label.predicted == name for label in of_class) / len(of_class)
    return WindowSummary(
        labelled=len(labels),
        accuracy=correct / len(labels),
        recall=recall,
        median_delay_s=statistics.median(label.delay_s for label in labels),
    )


class LiveQuality:
    def __init__(self, window: int, class_names: Sequence[str]) -> None:
        if window <= 0:
            raise ValueError("the live quality window must be positive")
        self.window = window
        self.class_names = tuple(class_names)
        self._labels: dict[str, deque[Label]] = {}
        # Labels are added in the feedback desk's thread while the event loop may publish.
        self._lock = threading.Lock()

    def add(self, record: Mapping[str, Any]) -> None:
        """One feedback log record."""
        delay = max(float(record["ts"]) - float(record["predicted_at"]), 0.0)
        label = Label(record["predicted"], record["class_name"], delay)
        with self._lock:
            labels = self._labels.get(record["model_tag"])
            if labels is None:
                labels = self._labels[record["model_tag"]] = deque(maxlen=self.window)
            labels.append(label)

    def summary(self, model_tag: str) -> WindowSummary | None:
        with self._lock:
            labels = list(self._labels.get(model_tag, ()))
        return summarise(labels, self.class_names)

    def summaries(self) -> dict[str, WindowSummary]:
        """Every model version's figures (versions with labels only)."""
        with self._lock:
            windows = {tag: list(labels) for tag, labels in self._labels.items()}
        found = {tag: summarise(labels, self.class_names) for tag, labels in windows.items()}
        return {tag: summary for tag, summary in found.items() if summary is not None}

    def report(self) -> dict[str, dict[str, Any]]:
        """{model tag: its window's figures}."""
        return {tag: summary.as_dict() for tag, summary in self.summaries().items()}

    def publish(self) -> None:
        """Set the gauges of every model version with labels."""
        for tag, summary in self.summaries().items():
            metrics.LIVE_ACCURACY.labels(tag).set(summary.accuracy)
            metrics.LIVE_LABELLED.labels(tag).set(summary.labelled)
            metrics.LIVE_LABEL_DELAY_SECONDS.labels(tag).set(summary.median_delay_s)
            for name, value in summary.recall.items():
                metrics.LIVE_RECALL.labels(tag, name).set(value)


def live_quality_route(
    quality_of: Callable[[], LiveQuality],
    catch_up: Callable[[], Awaitable[None]] | None = None,
) -> Route:
    """GET /live_quality: each model version's live window ({"window", "models": {tag: ...}}),
    after `catch_up()` (the labels other workers recorded)."""

    async def live_quality(_: Request) -> JSONResponse:
        if catch_up is not None:
            await catch_up()
        quality = quality_of()
        return JSONResponse({"window": quality.window, "models": quality.report()})

    return Route("/live_quality", live_quality, methods=["GET"])
