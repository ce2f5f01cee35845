"""Feedback as data for `make retrain` and the quality gate, and the seeded shifted
population of the loop's demonstration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iris_pipeline import feedback_data, training
from iris_pipeline.population import PETAL_WIDTH_BIAS_CM, draw
from iris_service.names import CLASS_NAMES, FEATURE_NAMES
from iris_service.records.store import RecordStore, sqlite_url
from tests.support import SETOSA, VERSICOLOR

pytestmark = pytest.mark.timeout(60)


def _write(path: Path, records: list[dict]) -> str:
    """A prediction store at `path` holding `records` as labels; its URL."""
    url = sqlite_url(path)
    store = RecordStore(url)
    store.migrate()
    store.add_labels(records)
    store.close()
    return url


def _label(ts: float, flower: dict | None, true: str) -> dict:
    return {
        "ts": ts,
        "key": f"k{ts}",
        "request_id": f"k{ts}",
        "server_request_id": f"k{ts}",
        "class_name": true,
        "predicted": true,
        "correct": True,
        "model_tag": "iris-classifier:v1",
        "predicted_at": ts,
        "endpoint": "/predict",
        "features": flower,
    }


def test_labels_are_read_in_arrival_order_and_those_without_measurements_skipped(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path / "records.db",
        [
            _label(30.0, VERSICOLOR, "versicolor"),
            _label(10.0, SETOSA, "setosa"),
            _label(20.0, None, "setosa"),  # recorded with IRIS_RECORD_INPUTS=false
        ],
    )
    feedback = feedback_data.load_feedback(path)
    assert len(feedback) == 2
    assert feedback.y.tolist() == [CLASS_NAMES.index("setosa"), CLASS_NAMES.index("versicolor")]
    assert list(feedback.x.columns) == list(FEATURE_NAMES)
    assert feedback.x.iloc[1].to_dict() == VERSICOLOR
    assert feedback.time_range() == (
        "1970-01-01T00:00:10.000+00:00",
        "1970-01-01T00:00:30.000+00:00",
    )


def test_the_newest_share_is_held_out(tmp_path: Path) -> None:
    records = [_label(float(t), SETOSA, "setosa") for t in range(10)]
    feedback = feedback_data.load_feedback(_write(tmp_path / "f.db", records))
    train, held_out = feedback.split_recent(0.3)
    assert (len(train), len(held_out)) == (7, 3)
    assert train.labelled_at.max() < held_out.labelled_at.min()
    assert held_out.labelled_at.tolist() == [7.0, 8.0, 9.0]


def test_no_store_means_no_labels_and_the_gate_set_alone(tmp_path: Path) -> None:
    missing = sqlite_url(tmp_path / "none.db")
    assert len(feedback_data.load_feedback(missing)) == 0
    assert feedback_data.load_feedback(missing).time_range() is None
    evaluation = feedback_data.evaluation_set(missing)
    _, _, x_gate, y_gate = training.gate_set()
    assert evaluation.feedback_flowers == 0 and evaluation.gate_flowers == len(y_gate) == 30
    assert np.array_equal(evaluation.x, x_gate.to_numpy())


def _labels(tmp_path: Path, count: int) -> str:
    shifted = draw(count, seed=5, shifted=True)
    records = [
        _label(float(t), flower, name)
        for t, (flower, name) in enumerate(zip(shifted.flowers, shifted.classes, strict=True))
    ]
    return _write(tmp_path / "f.db", records)


def test_the_gate_judges_on_the_gate_set_plus_the_held_out_labels(tmp_path: Path) -> None:
    evaluation = feedback_data.evaluation_set(_labels(tmp_path, 100))
    assert (evaluation.gate_flowers, evaluation.feedback_flowers) == (30, 30)
    assert evaluation.x.shape == (60, 4) and evaluation.y.shape == (60,)
    last = [draw(100, seed=5, shifted=True).flowers[-1][name] for name in FEATURE_NAMES]
    assert evaluation.x[-1].tolist() == last
    assert "30 held-out recent feedback labels" in evaluation.describe()


def test_below_the_minimum_of_held_out_labels_the_gate_set_judges_alone(tmp_path: Path) -> None:
    evaluation = feedback_data.evaluation_set(_labels(tmp_path, 20))
    _, _, x_gate, _ = training.gate_set()
    assert (evaluation.feedback_flowers, evaluation.feedback_set_aside) == (0, 6)
    assert np.array_equal(evaluation.x, x_gate.to_numpy())
    assert feedback_data.MIN_HELD_OUT_LABELS == 30
    assert "alone: only 6 held-out feedback labels, fewer than the 30" in evaluation.describe()


def test_retraining_data_adds_the_labels_before_the_split() -> None:
    extra = draw(40, seed=3, shifted=True)
    x = training.pd.DataFrame(extra.flowers, columns=list(FEATURE_NAMES))
    y = np.array([CLASS_NAMES.index(c) for c in extra.classes])
    plain, with_feedback = training.load_dataset(1), training.load_dataset(1, extra=(x, y))
    assert len(with_feedback.x_train) + len(with_feedback.x_test) == 120 + 40
    assert len(plain.x_train) + len(plain.x_test) == 120
    assert np.array_equal(with_feedback.x_gate.to_numpy(), plain.x_gate.to_numpy())


def test_the_shifted_population_is_seeded_and_biases_only_versicolor_petal_width() -> None:
    assert draw(50, seed=1, shifted=True) == draw(50, seed=1, shifted=True)
    plain, shifted = draw(300, seed=2, shifted=False), draw(300, seed=2, shifted=True)
    assert plain.classes == shifted.classes
    for before, after, name in zip(plain.flowers, shifted.flowers, shifted.classes, strict=True):
        moved = {f for f in FEATURE_NAMES if before[f] != after[f]}
        if name == "versicolor":
            assert moved == {"petal_width"}
            assert after["petal_width"] - before["petal_width"] == pytest.approx(
                PETAL_WIDTH_BIAS_CM
            )
        else:
            assert not moved
    assert all(value >= 0.1 for flower in shifted.flowers for value in flower.values())


def test_a_model_trained_on_iris_misses_the_shifted_versicolor() -> None:
    data = training.load_dataset(42)
    model = training.build_candidate("logistic_regression", 42).fit(
        data.x_train.to_numpy(), data.y_train
    )
    for shifted, most_right in ((False, True), (True, False)):
        population = draw(200, seed=7, shifted=shifted)
        rows = np.array([[f[n] for n in FEATURE_NAMES] for f in population.flowers])
        versicolor = np.array([c == "versicolor" for c in population.classes])
        right = model.predict(rows[versicolor]) == CLASS_NAMES.index("versicolor")
        assert bool(right.mean() > 0.8) == most_right, right.mean()
