"""The background sample explanations are computed over, chosen from the training rows.

A fixed sample of at most BACKGROUND_ROWS training flowers (seeded, so the same training data
always gives the same sample): the coalition values of the service's Shapley explanations
(iris_service/inference/explanations.py) are means over it, and its mean output is the base value of
every explanation. Fifty rows keep one explanation at 16 * 50 = 800 model rows; the
pipeline logs the sample in each candidate's MLflow run and the chosen run's sample goes
into the BentoML model folder beside `model.onnx` (iris_pipeline/tracking.py), where the
service reads it (iris_service/inference/model_loading.py, BACKGROUND_FILE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from iris_service.inference.model_loading import BACKGROUND_FILE
from iris_service.names import FEATURE_NAMES

if TYPE_CHECKING:
    import pandas as pd

BACKGROUND_ROWS = 50
BACKGROUND_SEED = 20261203

__all__ = ["BACKGROUND_FILE", "BACKGROUND_ROWS", "background_document", "background_sample"]


def background_sample(
    features: pd.DataFrame, size: int = BACKGROUND_ROWS, seed: int = BACKGROUND_SEED
) -> np.ndarray:
    """At most `size` rows of `features` (FEATURE_NAMES order), drawn without replacement
    with `seed`, in their original order."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    values = features[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    if len(values) <= size:
        return values.copy()
    chosen = np.sort(np.random.default_rng(seed).choice(len(values), size, replace=False))
    return values[chosen]


def background_document(rows: np.ndarray) -> dict[str, Any]:
    """The JSON document of a background (what BACKGROUND_FILE holds)."""
    return {
        "feature_names": list(FEATURE_NAMES),
        "source": "training split",
        "seed": BACKGROUND_SEED,
        "rows": np.asarray(rows, dtype=np.float64).tolist(),
    }
