"""Exact Shapley values of a model's class outputs, over a background sample.

Why exact: Iris has four features, so every coalition of features (2**4 = 16 of them) can be
evaluated outright; no sampling, no approximation, the same for every model family, since
only the model's `predict_proba` is called (the served ONNX model; no scikit-learn needed).

The value of a coalition S for a flower x is interventional: the mean model output over the
background rows with the features in S set to x's values (the others keep the background
row's). Then, for feature i of n,

    phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S))

and the base value is v(empty) = the mean output over the background. Additivity holds by
construction: base + sum_i phi_i = v(all) = the model's output for x.

Output spaces: "probability" (what the service answers) and "logit", the centred log
probability log p_k - mean_j log p_j, which for a multinomial logistic regression is its
linear margin up to a constant (the closed form the unit tests check against).

Pure numpy, no I/O: every transport (the /explain route, V2, a future gRPC servicer) reaches
it through `InferenceCore.explain`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from math import factorial

import numpy as np

PROBABILITY, LOGIT = "probability", "logit"
OUTPUT_SPACES = (PROBABILITY, LOGIT)
# Keeps log(0) finite in logit space (a tree model can give a class probability of 0).
_LOGIT_FLOOR = 1e-12

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Explanation:
    """The Shapley explanation of some rows: `base_value + contributions.sum(axis=2)` equals
    the model's output for each row (`outputs`, in `output` space)."""

    probabilities: np.ndarray  # float64 [rows, classes], the model's answer for the rows
    base_value: np.ndarray  # float64 [classes]: the mean output over the background
    contributions: np.ndarray  # float64 [rows, classes, features]
    background_rows: int
    output: str = PROBABILITY


@cache
def coalitions(features: int) -> np.ndarray:
    """Every coalition of `features` features as a boolean mask, [2**features, features]."""
    codes = np.arange(2**features)[:, None]
    return (codes >> np.arange(features)[None, :]) & 1 == 1


@cache
def shapley_matrix(features: int) -> np.ndarray:
    """M [features, 2**features] with phi = M @ v (v: one value per coalition).

    Coalition S adds weight w(|S| - 1) to each feature in S (as S = T + i) and takes weight
    w(|S|) from each feature outside it (as T), w(s) = s! (n - s - 1)! / n!.
    """
    masks = coalitions(features)
    sizes = masks.sum(axis=1)
    n = features

    def weight(size: np.ndarray) -> np.ndarray:
        return np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in size])

    inside = weight(np.maximum(sizes - 1, 0))[:, None] * masks
    outside = weight(np.minimum(sizes, n - 1))[:, None] * ~masks
    return (inside - outside).T


def _in_space(probabilities: np.ndarray, output: str) -> np.ndarray:
    if output == PROBABILITY:
        return probabilities
    logs = np.log(np.maximum(probabilities, _LOGIT_FLOOR))
    return logs - logs.mean(axis=-1, keepdims=True)


def explain(
    predict: Predict, rows: np.ndarray, background: np.ndarray, output: str = PROBABILITY
) -> Explanation:
    """Exact interventional Shapley values of `predict` for `rows` [rows, features].

    `predict` maps [m, features] to class probabilities [m, classes]; it is called twice: once
    for `rows` (the answer) and once for every (row, coalition, background row) at once,
    rows * 2**features * len(background) rows in all (100 rows, 50 background rows: 80,000).
    """
    if output not in OUTPUT_SPACES:
        raise ValueError(f"output must be one of {OUTPUT_SPACES}, got {output!r}")
    rows = np.asarray(rows, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    if rows.ndim != 2 or background.ndim != 2 or rows.shape[1] != background.shape[1]:
        raise ValueError(f"rows {rows.shape} and background {background.shape} do not match")
    if len(background) == 0:
        raise ValueError("the background has no rows")
    count, features = rows.shape
    masks = coalitions(features)  # [C, F]
    # [rows, C, B, F]: the background row, with the coalition's features taken from the row.
    mixed = np.where(masks[None, :, None, :], rows[:, None, None, :], background[None, None])
    outputs = predict(mixed.reshape(-1, features))
    classes = outputs.shape[1]
    values = _in_space(outputs, output).reshape(count, len(masks), len(background), classes)
    coalition_values = values.mean(axis=2)  # [rows, C, classes]
    contributions = np.einsum("fc,rck->rkf", shapley_matrix(features), coalition_values)
    return Explanation(
        probabilities=np.asarray(predict(rows), dtype=np.float64),
        base_value=coalition_values[0, 0].copy(),  # the empty coalition: row-independent
        contributions=contributions,
        background_rows=len(background),
        output=output,
    )
