"""The names of the problem: the registered model, the features and classes, the range of a
plausible measurement, and the routes that predict.

Reads no environment, so that the pipeline and the tools can import these names without
the service's settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate

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

# The routes that predict: measured, guarded, logged (health, metrics and docs are not).
# A `*` stands for a path parameter: the Open Inference Protocol's
# /v2/models/<name>[/versions/<version>]/infer. See RoutePatterns.
PREDICTION_PATHS: tuple[str, ...] = (
    "/predict",
    "/predict_batch",
    "/explain",
    "/invocations",
    "/v2/models/*/infer",
)


class RoutePatterns:
    """A set of routes: exact paths, and patterns where `*` matches any characters.

    `path in routes` is what the middlewares ask (a set lookup first, one regular expression
    only for paths that are not exact); `label(path)` names the route in metrics, so that a
    path parameter (a model name a client made up) never becomes a new metric series.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self.exact = frozenset(p for p in patterns if "*" not in p)
        self.wildcards = tuple(p for p in patterns if "*" in p)
        self._regexes = tuple(re.compile(translate(p)) for p in self.wildcards)

    def label(self, path: str) -> str | None:
        """The route `path` belongs to (itself or its pattern), or None."""
        if path in self.exact:
            return path
        for pattern, regex in zip(self.wildcards, self._regexes, strict=True):
            if regex.match(path):
                return pattern
        return None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.label(path) is not None
