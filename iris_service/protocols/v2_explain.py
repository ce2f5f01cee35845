"""Explanations over the Open Inference Protocol V2: `parameters: {"explain": true}` on an
inference request.

The answer then carries two more outputs beside `predict`/`predict_proba`:
- `explanation`: FP32 [rows, classes, features], each feature's exact Shapley value of each
  class's probability (iris_service/inference/explanations.py);
- `base_value`: FP32 [classes], the mean probability over the model's background sample. It
  is the same for every row (the background is fixed per model version), so it is sent once,
  not repeated per row: base_value[k] + explanation[r, k, :].sum() = predict_proba[r, k].
They are JSON data, or binary with the request's `binary_data_output`. A request with
explain may hold at most MAX_EXPLAIN_FLOWERS rows (400 otherwise, in V2's error shape).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iris_service.inference.explanations import Explanation

EXPLAIN = "explain"
EXPLANATION = "explanation"
BASE_VALUE = "base_value"


class ExplainFlagError(ValueError):
    """`parameters.explain` is present but not a boolean."""


def wants_explanation(parameters: dict[str, Any]) -> bool:
    """Whether the request's parameters ask for an explanation."""
    value = parameters.get(EXPLAIN, False)
    if type(value) is not bool:
        raise ExplainFlagError(f"'parameters.explain' must be true or false, got {value!r}"[:200])
    return value


def explanation_tensors(explanation: Explanation) -> dict[str, tuple[str, np.ndarray]]:
    """The two outputs an explained request adds, by name: (datatype, values)."""
    return {
        EXPLANATION: ("FP32", np.ascontiguousarray(explanation.contributions, dtype="<f4")),
        BASE_VALUE: ("FP32", np.ascontiguousarray(explanation.base_value, dtype="<f4")),
    }
