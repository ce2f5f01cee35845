"""Labelled feedback as training and evaluation data for `make retrain` and the quality gate.

The prediction store (iris_service/records/store.py: SQLite by default, PostgreSQL when the
service is scaled out; written by POST /feedback) holds every label with the flower's
measurements. Labels are ordered by arrival; the newest HOLDOUT_SHARE of
them are held out: `make retrain` trains on the older ones, and the quality gate (`make
retrain` and `make promote` alike) judges on the gate set plus the held-out ones, so that a
model adapted to a new population can show it, and no model is judged on flowers it was
trained on (the held-out part only ever moves to newer labels as feedback grows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.records.store import RecordStore, describe
from iris_service.settings import settings

HOLDOUT_SHARE = 0.3
# Fewer held-out labels than this would move the gate on a handful of flowers (two labels
# moved a champion's gate macro-F1 by 0.03): below it the gate judges on the gate set alone.
MIN_HELD_OUT_LABELS = 30


@dataclass(frozen=True)
class FeedbackSet:
    """Labelled flowers from the prediction store, oldest label first."""

    x: pd.DataFrame
    y: np.ndarray
    labelled_at: np.ndarray  # unix seconds
    source: str

    def __len__(self) -> int:
        return len(self.y)

    def time_range(self) -> tuple[str, str] | None:
        if not len(self):
            return None
        first, last = (
            datetime.fromtimestamp(float(t), UTC).isoformat(timespec="milliseconds")
            for t in (self.labelled_at.min(), self.labelled_at.max())
        )
        return first, last

    def split_recent(self, share: float = HOLDOUT_SHARE) -> tuple[FeedbackSet, FeedbackSet]:
        """(older labels to train on, the newest `share` held out for the gate)."""
        held = math.ceil(len(self) * share) if len(self) else 0
        cut = len(self) - held
        return self._rows(slice(0, cut)), self._rows(slice(cut, len(self)))

    def _rows(self, rows: slice) -> FeedbackSet:
        x = self.x.iloc[rows].reset_index(drop=True)
        return FeedbackSet(x, self.y[rows], self.labelled_at[rows], self.source)


def _labels(url: str | None) -> list[dict]:
    """Every label of the store at `url` (default: the service's; none when records are off
    or nothing was ever recorded)."""
    url = url or settings.record_store_url
    if url is None:
        return []
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return []
    store = RecordStore(url)
    try:
        store.migrate()
        return list(store.iter_labels())
    finally:
        store.close()


def load_feedback(url: str | None = None) -> FeedbackSet:
    """The labels of the prediction store at `url` (default: the service's) that carry
    measurements (a prediction recorded without inputs gives none), oldest first."""
    usable = sorted(
        (r for r in _labels(url) if r.get("features") and r.get("class_name") in CLASS_NAMES),
        key=lambda r: float(r["ts"]),
    )
    x = pd.DataFrame([r["features"] for r in usable], columns=list(FEATURE_NAMES), dtype=float)
    y = np.array([CLASS_NAMES.index(r["class_name"]) for r in usable], dtype=int)
    labelled_at = np.array([float(r["ts"]) for r in usable], dtype=float)
    return FeedbackSet(x, y, labelled_at, _source(url or settings.record_store_url or "off"))


def _source(url: str) -> str:
    """Where the labels came from: the SQLite file's path (MLflow records it as a local
    dataset source), else the store's URL without its password."""
    if url.startswith("sqlite:///"):
        return str(Path(url[len("sqlite:///") :]))
    return describe(url)


@dataclass(frozen=True)
class EvaluationSet:
    x: np.ndarray
    y: np.ndarray
    gate_flowers: int
    feedback_flowers: int
    # held-out labels left out because there were fewer than MIN_HELD_OUT_LABELS
    feedback_set_aside: int = 0

    def describe(self) -> str:
        if self.feedback_set_aside:
            return (
                f"the gate set ({self.gate_flowers} Iris flowers) alone: only "
                f"{self.feedback_set_aside} held-out feedback labels, fewer than the "
                f"{MIN_HELD_OUT_LABELS} the gate needs to count them"
            )
        if not self.feedback_flowers:
            return f"the gate set ({self.gate_flowers} Iris flowers)"
        return (
            f"the gate set ({self.gate_flowers} Iris flowers) and {self.feedback_flowers} "
            "held-out recent feedback labels"
        )


def evaluation_set(url: str | None = None) -> EvaluationSet:
    """The quality gate's flowers: the fixed gate set plus the held-out recent feedback, when
    there are at least MIN_HELD_OUT_LABELS of them."""
    from iris_pipeline import training

    _, _, x_gate, y_gate = training.gate_set()
    _, held_out = load_feedback(url).split_recent()
    if len(held_out) < MIN_HELD_OUT_LABELS:
        return EvaluationSet(x_gate.to_numpy(), y_gate, len(y_gate), 0, len(held_out))
    x = np.vstack([x_gate.to_numpy(), held_out.x.to_numpy().reshape(-1, len(FEATURE_NAMES))])
    y = np.concatenate([y_gate, held_out.y])
    return EvaluationSet(x, y, len(y_gate), len(held_out))
