"""A reproducible shifted population of Iris flowers, for the feedback loop's demonstration.

The story: a second greenhouse sends its flowers to the service, and its calliper reads petal
widths PETAL_WIDTH_BIAS_CM too wide. Its setosa and virginica still look like Iris's; its
versicolor (petal width about 1.3 cm, read as about 2.1 cm) now look like virginica to a model
trained on Iris, so about a third of its flowers are misclassified, while petal width drifts.
No Iris flower has a versicolor's petal length (about 4.3 cm) with a petal width of 2 cm, so a
model retrained on the labelled greenhouse flowers can learn them without giving up the
original ones: the quality gate can pass it.

How it is made (seeded, so every run draws the same flowers): rows drawn with replacement from
the 150 Iris flowers, every measurement moved by Gaussian noise (sd NOISE_CM) and rounded to
0.1 cm as Iris is; in the shifted population, the versicolor rows' petal width gets the bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iris_service.names import CLASS_NAMES, FEATURE_NAMES

SHIFTED_CLASS = "versicolor"
SHIFTED_FEATURE = "petal_width"
PETAL_WIDTH_BIAS_CM = 0.8
NOISE_CM = 0.05


@dataclass(frozen=True)
class Population:
    flowers: list[dict[str, float]]  # the measurements a client sends
    classes: list[str]  # the true class of each flower (what feedback reports)


def draw(count: int, seed: int, shifted: bool) -> Population:
    """`count` flowers: Iris as it is, or the greenhouse with the biased calliper."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(iris.target), count)
    data = iris.data[rows] + rng.normal(0.0, NOISE_CM, (count, len(FEATURE_NAMES)))
    targets = iris.target[rows]
    if shifted:
        biased = targets == CLASS_NAMES.index(SHIFTED_CLASS)
        data[biased, FEATURE_NAMES.index(SHIFTED_FEATURE)] += PETAL_WIDTH_BIAS_CM
    data = np.clip(data.round(1), 0.1, None)
    flowers = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in data]
    return Population(flowers, [CLASS_NAMES[t] for t in targets])
