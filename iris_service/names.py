"""The names of the problem: the registered model, the features and classes, and the range of a
plausible measurement.

Reads no environment, so that the pipeline and the tools can import these names without
the service's settings.
"""

from __future__ import annotations

MODEL_NAME = "iris-classifier"
FEATURE_NAMES: tuple[str, ...] = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASS_NAMES: tuple[str, ...] = ("setosa", "versicolor", "virginica")
# The largest plausible measurement of each feature, in cm (every value must be in (0, bound]).
UPPER_BOUNDS_CM: dict[str, float] = {
    "sepal_length": 20,
    "sepal_width": 15,
    "petal_length": 20,
    "petal_width": 10,
}
