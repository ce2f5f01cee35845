"""Compiled models: every family converts to ONNX and answers like scikit-learn on Iris; a
model that does not (altered graph, nudged answers, no converter, wrong classes) is refused
with the reason, and left out of the choice of the winner."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

from iris_pipeline import compiling, training
from tests.onnx_graphs import FirstColumnsModel, first_columns_graph, tampered

SEED = 0  # the split of the `data` fixture (tests/unit/conftest.py) uses the same seed


@pytest.fixture(scope="module")
def rows(data: training.Dataset) -> np.ndarray:
    return compiling.equivalence_rows(data)


def _fitted(family: str, data: training.Dataset):
    return training.build_candidate(family, SEED).fit(data.x_train.to_numpy(), data.y_train)


def test_the_checked_rows_are_every_iris_flower(rows: np.ndarray) -> None:
    assert rows.shape == (150, 4)
    assert len(np.unique(rows, axis=0)) == len(np.unique(load_iris().data, axis=0))


@pytest.mark.parametrize("family", list(training.CANDIDATES))
def test_every_family_compiles_to_an_equivalent_onnx_model(
    family: str, data: training.Dataset, rows: np.ndarray
) -> None:
    model = _fitted(family, data)
    compilation = compiling.compile_model(model, rows)
    equivalence = compilation.equivalence
    assert compilation.servable, equivalence.reason
    assert equivalence.passed and equivalence.reason == ""
    assert 0.0 <= equivalence.max_abs_diff <= compiling.MAX_ABS_DIFF
    assert equivalence.rows == 150
    assert compilation.compiled is not None
    predictor = compiling.OnnxPredictor(compilation.compiled)
    probabilities = predictor.predict_proba(rows)
    assert probabilities.dtype == np.float32 and probabilities.shape == (150, 3)
    assert np.array_equal(predictor.predict(rows), np.argmax(model.predict_proba(rows), axis=1))
    assert (
        compilation.compiled.sha256
        == compiling.CompiledModel(compilation.compiled.onnx_bytes).sha256
    )
    print(f"\n{family}: max |dp| {equivalence.max_abs_diff:.2e}")


def test_conversion_is_reproducible(data: training.Dataset, rows: np.ndarray) -> None:
    model = _fitted("random_forest", data)
    first, second = compiling.convert(model, rows), compiling.convert(model, rows)
    assert first.sha256 == second.sha256
    assert (first.input_name, first.probabilities_output, first.opset) == (
        "X",
        "probabilities",
        compiling.TARGET_OPSET,
    )


def test_an_altered_graph_is_refused_with_the_difference(
    data: training.Dataset, rows: np.ndarray
) -> None:
    model = _fitted("logistic_regression", data)
    compiled = compiling.convert(model, rows)
    slightly = compiling.check_equivalence(model, tampered(compiled, (0.0, 2e-5, 0.0)), rows)
    assert not slightly.passed
    assert 2e-5 - 1e-6 < slightly.max_abs_diff < 2e-5 + 1e-6
    assert "max |dp| 2.0" in slightly.reason and "> 1e-05" in slightly.reason
    assert "another class" not in slightly.reason  # the classes still agree
    swapped = compiling.check_equivalence(model, tampered(compiled, (0.0, 0.0, 1.0)), rows)
    assert not swapped.passed
    assert "another class on" in swapped.reason and "max |dp| 1.0" in swapped.reason


def test_near_ties_are_excepted_from_the_class_only() -> None:
    """Rows whose two highest probabilities are within TIE_MARGIN may answer another class;
    beyond it, a flipped class fails even when the probabilities are within MAX_ABS_DIFF."""
    graph = first_columns_graph()
    rows = np.asarray([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.7, 0.0], [0.8, 0.1, 0.1, 0.0]])
    tie = compiling.check_equivalence(FirstColumnsModel(5e-7), graph, rows)
    assert tie.passed, tie.reason
    assert (tie.rows, tie.rows_excepted) == (3, 1)
    beyond_tie = compiling.check_equivalence(FirstColumnsModel(5e-6), graph, rows)
    assert not beyond_tie.passed
    assert beyond_tie.max_abs_diff <= compiling.MAX_ABS_DIFF
    assert beyond_tie.reason == "another class on 1 of 3 rows"
    too_far = compiling.check_equivalence(FirstColumnsModel(5e-5), graph, rows)
    assert not too_far.passed and "max |dp| 5.0" in too_far.reason


def test_a_model_without_a_converter_is_refused_with_the_reason(
    data: training.Dataset, rows: np.ndarray
) -> None:
    model = DummyClassifier().fit(data.x_train.to_numpy(), data.y_train)
    compilation = compiling.compile_model(model, rows)
    assert compilation.compiled is None and not compilation.servable
    assert compilation.equivalence.reason.startswith("skl2onnx cannot convert it")
    assert "DummyClassifier" in compilation.equivalence.reason
    assert math.isnan(compilation.equivalence.max_abs_diff)


def test_a_model_of_other_classes_is_refused(data: training.Dataset, rows: np.ndarray) -> None:
    """Probability columns must be in CLASS_NAMES order: classes 0, 1, 2."""
    two_species = data.y_train != 0
    model = training.build_candidate("logistic_regression", SEED).fit(
        data.x_train.to_numpy()[two_species], data.y_train[two_species]
    )
    compilation = compiling.compile_model(model, rows)
    assert not compilation.servable
    assert "classes are [1, 2]" in compilation.equivalence.reason


def test_a_graph_onnx_runtime_cannot_run_is_refused(
    data: training.Dataset, rows: np.ndarray
) -> None:
    model = _fitted("logistic_regression", data)
    broken = compiling.CompiledModel(b"not an onnx model")
    equivalence = compiling.check_equivalence(model, broken, rows)
    assert not equivalence.passed
    assert equivalence.reason.startswith("ONNX Runtime cannot run it")


def test_a_candidate_records_its_equivalence_and_onnx_latency(data: training.Dataset) -> None:
    result = training.evaluate_candidate("logistic_regression", data, SEED, cv_folds=2)
    assert "sklearn_predict_latency_ms" in result.metrics
    compilation = compiling.compile_candidate(result, data)
    assert result.compilation is compilation and compilation.servable
    metrics = result.metrics
    assert math.isfinite(metrics["predict_latency_ms"]) and metrics["predict_latency_ms"] > 0
    assert metrics["onnx_max_abs_diff"] == compilation.equivalence.max_abs_diff
    assert metrics["onnx_rows_checked"] == 150.0
    assert compiling.servable_candidates([result]) == [result]


def test_a_failed_candidate_is_left_out_and_none_left_is_one_clear_error(
    data: training.Dataset,
) -> None:
    good = training.evaluate_candidate("logistic_regression", data, SEED, cv_folds=2)
    compiling.compile_candidate(good, data)
    unconvertible = DummyClassifier().fit(data.x_train.to_numpy(), data.y_train)
    bad = training.CandidateResult("random_forest", unconvertible, {}, np.zeros((3, 3)))
    compiling.compile_candidate(bad, data)
    assert math.isnan(bad.metrics["predict_latency_ms"])
    assert compiling.servable_candidates([bad, good]) == [good]
    with pytest.raises(compiling.NoServableCandidateError) as raised:
        compiling.servable_candidates([bad])
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("no candidate compiles to an ONNX model equivalent")
    assert "random_forest: skl2onnx cannot convert it" in message
