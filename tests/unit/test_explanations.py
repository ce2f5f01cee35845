"""Exact Shapley explanations (iris_service/inference/explanations.py): additivity on the compiled
(ONNX) model of every family and class, the symmetry and dummy axioms and the permutation
definition on constructed functions, and the logistic regression's closed form in logit
space; plus the pipeline's background sample."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from iris_pipeline import compiling, training
from iris_pipeline.explanation_background import (
    BACKGROUND_ROWS,
    background_document,
    background_sample,
)
from iris_service.inference import explanations
from iris_service.names import CLASS_NAMES, FEATURE_NAMES

SEED = 0  # the split of the `data` fixture (tests/unit/conftest.py) uses the same seed


@pytest.fixture(scope="module")
def background(data: training.Dataset) -> np.ndarray:
    return background_sample(data.x_train)


@pytest.fixture(scope="module")
def flowers(data: training.Dataset) -> np.ndarray:
    return data.x_test.to_numpy(dtype=np.float64)[:12]


def _fitted(family: str, data: training.Dataset):
    return training.build_candidate(family, SEED).fit(data.x_train.to_numpy(), data.y_train)


def _onnx_predict(model, data: training.Dataset) -> explanations.Predict:
    """The family's compiled model as the service runs it: float32 in, float64 out."""
    compilation = compiling.compile_model(model, compiling.equivalence_rows(data))
    assert compilation.compiled is not None, compilation.equivalence.reason
    predictor = compiling.OnnxPredictor(compilation.compiled)
    return lambda rows: predictor.predict_proba(rows).astype(np.float64)


@pytest.mark.parametrize("family", list(training.CANDIDATES))
def test_base_plus_contributions_is_the_predicted_probability_of_every_class(
    family: str, data: training.Dataset, background: np.ndarray, flowers: np.ndarray
) -> None:
    predict = _onnx_predict(_fitted(family, data), data)
    explained = explanations.explain(predict, flowers, background)
    assert explained.contributions.shape == (len(flowers), len(CLASS_NAMES), len(FEATURE_NAMES))
    assert explained.base_value.shape == (len(CLASS_NAMES),)
    assert explained.background_rows == len(background) == BACKGROUND_ROWS
    assert np.allclose(explained.base_value, predict(background).mean(axis=0), atol=1e-12)
    rebuilt = explained.base_value[None, :] + explained.contributions.sum(axis=2)
    assert np.abs(rebuilt - predict(flowers)).max() <= 1e-6
    assert np.abs(rebuilt - explained.probabilities).max() <= 1e-6
    # Something is explained: the flowers are not all at the base value.
    assert np.abs(explained.contributions).max() > 0.05


def _toy_predict(weights: np.ndarray) -> explanations.Predict:
    """Two-class softmax of a nonlinear function of the features (interactions included)."""

    def predict(rows: np.ndarray) -> np.ndarray:
        score = rows @ weights + 0.7 * rows[:, 0] * rows[:, 1] - 0.3 * rows[:, 1] ** 2
        first = 1.0 / (1.0 + np.exp(-score))
        return np.stack([first, 1.0 - first], axis=1)

    return predict


def test_a_feature_the_model_ignores_gets_nothing() -> None:
    rng = np.random.default_rng(1)
    predict = _toy_predict(np.array([0.5, -0.4, 0.9, 0.0]))  # the 4th feature is unused
    explained = explanations.explain(predict, rng.normal(size=(5, 4)), rng.normal(size=(20, 4)))
    assert np.abs(explained.contributions[:, :, 3]).max() < 1e-14  # float64 rounding only
    assert np.all(np.abs(explained.contributions[:, :, 2]) > 1e-3)


def test_symmetric_features_get_equal_contributions() -> None:
    """Features 0 and 1 play the same role (a symmetric function, a background closed under
    swapping them, a flower with equal values): their Shapley values are equal."""
    rng = np.random.default_rng(2)

    def predict(rows: np.ndarray) -> np.ndarray:
        score = np.tanh(rows[:, 0] + rows[:, 1]) + rows[:, 0] * rows[:, 1] + 0.4 * rows[:, 2]
        first = 1.0 / (1.0 + np.exp(-score))
        return np.stack([first, 1.0 - first], axis=1)

    half = rng.normal(size=(10, 4))
    background = np.vstack([half, half[:, [1, 0, 2, 3]]])
    flower = np.array([[0.8, 0.8, -0.5, 1.0]])
    explained = explanations.explain(predict, flower, background)
    phi = explained.contributions[0]
    assert np.allclose(phi[:, 0], phi[:, 1], atol=1e-12)
    assert np.abs(phi[:, 0]).min() > 1e-3 and np.abs(phi[:, 3]).max() < 1e-14


def test_the_values_are_the_mean_marginal_contribution_over_every_feature_order() -> None:
    """Shapley's own definition, by brute force over the 24 orders of four features."""
    rng = np.random.default_rng(3)
    predict = _toy_predict(np.array([0.3, -1.1, 0.6, 0.25]))
    background, flower = rng.normal(size=(7, 4)), rng.normal(size=(1, 4))

    def value(coalition: set[int]) -> np.ndarray:
        mixed = background.copy()
        for feature in coalition:
            mixed[:, feature] = flower[0, feature]
        return predict(mixed).mean(axis=0)

    expected = np.zeros((2, 4))
    orders = list(permutations(range(4)))
    for order in orders:
        seen: set[int] = set()
        for feature in order:
            expected[:, feature] += value(seen | {feature}) - value(seen)
            seen.add(feature)
    expected /= len(orders)
    explained = explanations.explain(predict, flower, background)
    assert np.allclose(explained.contributions[0], expected, atol=1e-12)


def test_the_shapley_matrix_weights_sum_as_the_definition_says() -> None:
    matrix = explanations.shapley_matrix(4)
    assert matrix.shape == (4, 16)
    # Each feature: +1 on the full coalition's share, -1 on the empty one's, overall 0.
    assert np.allclose(matrix.sum(axis=1), 0.0)
    assert np.allclose(matrix.sum(axis=0)[[0, 15]], [-1.0, 1.0])


def _closed_form(pipeline, flowers: np.ndarray, background: np.ndarray) -> np.ndarray:
    """coef/scale * (x - background mean) of the scaled pipeline, [rows, classes, features];
    the coefficients centred over the classes (the logit space's own constant; scikit-learn's
    L2-penalised multinomial coefficients already sum to zero over the classes)."""
    scaler, regression = pipeline[0], pipeline[-1]
    coef = regression.coef_ - regression.coef_.mean(axis=0, keepdims=True)
    slopes = coef / scaler.scale_[None, :]  # [classes, features]
    return slopes[None, :, :] * (flowers - background.mean(axis=0))[:, None, :]


def test_logistic_regression_logit_values_are_its_closed_form(
    data: training.Dataset, background: np.ndarray, flowers: np.ndarray
) -> None:
    pipeline = _fitted("logistic_regression", data)
    assert np.abs(pipeline[-1].coef_.sum(axis=0)).max() < 1e-6
    expected = _closed_form(pipeline, flowers, background)
    exact = explanations.explain(
        pipeline.predict_proba, flowers, background, output=explanations.LOGIT
    )
    assert np.abs(exact.contributions - expected).max() < 1e-8
    # The served (ONNX, float32) model gives the same up to float32 rounding.
    served = explanations.explain(
        _onnx_predict(pipeline, data), flowers, background, output=explanations.LOGIT
    )
    assert np.abs(served.contributions - expected).max() < 1e-3
    assert np.abs(expected).max() > 1.0  # the comparison is not between zeros


def test_bad_shapes_and_output_spaces_are_refused() -> None:
    predict = _toy_predict(np.ones(4))
    with pytest.raises(ValueError, match="do not match"):
        explanations.explain(predict, np.ones((1, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="no rows"):
        explanations.explain(predict, np.ones((1, 4)), np.ones((0, 4)))
    with pytest.raises(ValueError, match="output"):
        explanations.explain(predict, np.ones((1, 4)), np.ones((5, 4)), output="margin")


def test_the_background_is_a_fixed_sample_of_training_rows(data: training.Dataset) -> None:
    sample = background_sample(data.x_train)
    assert sample.shape == (BACKGROUND_ROWS, len(FEATURE_NAMES))
    assert np.array_equal(sample, background_sample(data.x_train))  # repeatable
    training_rows = {tuple(row) for row in data.x_train.to_numpy(dtype=np.float64)}
    assert all(tuple(row) in training_rows for row in sample)
    assert len(background_sample(data.x_train.iloc[:10])) == 10  # fewer rows: all of them
    document = background_document(sample)
    assert document["feature_names"] == list(FEATURE_NAMES) and len(document["rows"]) == 50
