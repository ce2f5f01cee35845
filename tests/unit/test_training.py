import time

import numpy as np
import pytest

from iris_pipeline import training
from iris_service.names import FEATURE_NAMES


def test_split_is_stratified_and_reproducible() -> None:
    first, second = training.load_dataset(seed=3), training.load_dataset(seed=3)
    assert list(first.x_train.columns) == list(FEATURE_NAMES)
    assert first.x_train.equals(second.x_train)
    assert len(first.x_test) == 24  # 20 % of the 120 flowers outside the gate set
    assert np.bincount(first.y_test).tolist() == [8, 8, 8]


def test_the_gate_set_is_fixed_and_never_trained_or_selected_on() -> None:
    first, other_seed = training.load_dataset(seed=3), training.load_dataset(seed=11, test_size=0.3)
    assert first.x_gate.equals(other_seed.x_gate)
    assert np.array_equal(first.y_gate, other_seed.y_gate)
    assert np.bincount(first.y_gate).tolist() == [10, 10, 10]
    gate_rows = set(first.x_gate.index)
    assert not gate_rows & set(first.x_train.index)
    assert not gate_rows & set(first.x_test.index)
    assert len(gate_rows | set(first.x_train.index) | set(first.x_test.index)) == 150


def test_label_noise_corrupts_exactly_that_share_of_training_labels_only() -> None:
    clean, noisy = training.load_dataset(seed=5), training.load_dataset(seed=5, label_noise=0.4)
    changed = clean.y_train != noisy.y_train
    assert changed.sum() == round(0.4 * len(clean.y_train))
    assert set(noisy.y_train[changed]) <= {0, 1, 2}
    assert np.array_equal(clean.y_test, noisy.y_test)
    assert np.array_equal(clean.y_gate, noisy.y_gate)
    again = training.load_dataset(seed=5, label_noise=0.4)
    assert np.array_equal(noisy.y_train, again.y_train)
    with pytest.raises(ValueError, match="between 0 and 1"):
        training.corrupt_labels(clean.y_train, 1.5, seed=0)


def test_unknown_candidate_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="logistic_regression"):
        training.build_candidate("xgboost", seed=0)


def test_evaluation_is_reproducible_for_a_seed() -> None:
    data = training.load_dataset(seed=0)
    first = training.evaluate_candidate("random_forest", data, seed=0, cv_folds=3)
    second = training.evaluate_candidate("random_forest", data, seed=0, cv_folds=3)
    for key in ("cv_macro_f1_mean", "test_macro_f1", "test_accuracy"):
        assert first.metrics[key] == second.metrics[key]
    assert first.metrics["test_macro_f1"] > 0.85
    assert first.confusion.sum() == len(data.y_test)
    assert 0.0 < first.metrics["sklearn_predict_latency_ms"] < 1000.0
    assert "predict_latency_ms" not in first.metrics  # set when compiled


def _result(family: str, test_f1: float, cv_f1: float, latency: float) -> training.CandidateResult:
    metrics = {"test_macro_f1": test_f1, "cv_macro_f1_mean": cv_f1, "predict_latency_ms": latency}
    return training.CandidateResult(family, model=None, metrics=metrics, confusion=np.zeros(1))


def test_selection_prefers_f1_then_cv_then_speed() -> None:
    """Speed is `predict_latency_ms`: ONNX Runtime's, what serves (test_compiling.py)."""
    best_f1 = _result("a", 0.97, 0.90, 9.0)
    assert training.select_best([_result("b", 0.96, 0.99, 0.1), best_f1]) is best_f1
    steadier = _result("c", 0.97, 0.95, 9.0)
    assert training.select_best([best_f1, steadier]) is steadier
    faster = _result("d", 0.97, 0.95, 0.5)
    assert training.select_best([steadier, faster]) is faster
    with pytest.raises(ValueError):
        training.select_best([])


def test_feature_statistics_describe_each_feature() -> None:
    data = training.load_dataset(seed=0)
    stats = training.feature_statistics(data.x_train)
    assert set(stats) == set(FEATURE_NAMES)
    petal = stats["petal_length"]
    assert petal["count"] == len(data.x_train)
    assert petal["min"] <= petal["quantiles"][5] <= petal["max"]
    assert petal["quantiles"] == sorted(petal["quantiles"])
    assert abs(petal["mean"] - float(data.x_train["petal_length"].mean())) < 1e-12


def _result(family: str, test_f1: float, cv_f1: float, latency_ms: float):
    metrics = {
        "test_macro_f1": test_f1,
        "cv_macro_f1_mean": cv_f1,
        "predict_latency_ms": latency_ms,
    }
    return training.CandidateResult(family, None, metrics, None)


def test_the_choice_says_which_criterion_decided() -> None:
    tied = [_result("a_lr", 1.0, 0.9361, 0.4), _result("b_svm", 1.0, 0.9353, 1.5)]
    best = training.select_best(tied)
    assert best.family == "a_lr"
    assert training.explain_choice(tied, best) == (
        "2 candidates tie on test macro-F1 1.0000, so a_lr has the highest cross-validated "
        "macro-F1: 0.9361 (next: b_svm, 0.9353)."
    )
    clear = [_result("a_lr", 0.9, 0.99, 0.4), _result("b_svm", 1.0, 0.8, 1.5)]
    assert training.explain_choice(clear, clear[1]).startswith(
        "b_svm has the highest test macro-F1: 1.0000 (next: a_lr, 0.9000)"
    )
    faster = [_result("a_lr", 1.0, 0.9, 0.4), _result("b_svm", 1.0, 0.9, 1.5)]
    assert "a_lr has the lowest single-row predict time: 0.40 ms" in training.explain_choice(
        faster, training.select_best(faster)
    )
    assert training.explain_choice(tied[:1], tied[0]) == "a_lr is the only candidate."


class _Counted:
    """A model whose predict_proba takes `seconds` and is counted."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def predict_proba(self, row: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)
        return np.zeros((len(row), 3))


def test_single_row_latency_is_bounded_in_time_for_a_slow_model() -> None:
    slow = _Counted(0.05)
    median_ms = training.single_row_latency_ms(slow, np.zeros((1, 4)), budget_s=0.2)
    assert slow.calls == 1 + 11  # the warm-up, then the minimum once the budget is spent
    assert 50 <= median_ms < 500
    fast = _Counted(0.0)
    training.single_row_latency_ms(fast, np.zeros((1, 4)), repeats=200, budget_s=10)
    assert fast.calls == 1 + 200
