"""Flowers as one float64 array [N, 4], checked with the same rules as the Pydantic schema.

The protocol routes (V2 tensors, MLflow scoring) and the batch route receive many flowers at
once; checking them as one array costs a few vectorised comparisons instead of one Pydantic
object per flower. The rules are those of `schemas.IrisFeatures`: every value a finite number
in (0, bound] (names.UPPER_BOUNDS_CM), between 1 and MAX_BATCH_FLOWERS flowers.
"""

from __future__ import annotations

import numpy as np

from iris_service.names import FEATURE_NAMES, UPPER_BOUNDS_CM
from iris_service.settings import settings

MAX_BATCH_FLOWERS = settings.max_batch_flowers  # read once: checked per request

UPPER_BOUNDS = np.array([UPPER_BOUNDS_CM[name] for name in FEATURE_NAMES], dtype=np.float64)


class InvalidFlowers(ValueError):
    """The flowers break a rule; the message says which value, for the client."""


def check_count(count: int) -> None:
    """Refuse a number of flowers out of [1, MAX_BATCH_FLOWERS] (before anything is built)."""
    if not 1 <= count <= MAX_BATCH_FLOWERS:
        raise InvalidFlowers(f"send between 1 and {MAX_BATCH_FLOWERS} flowers, got {count}")


def checked_flowers(rows: np.ndarray) -> np.ndarray:
    """`rows` as float64 [N, 4] when every value is a finite number in its range."""
    if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES):
        raise InvalidFlowers(f"expected shape [N, {len(FEATURE_NAMES)}], got {list(rows.shape)}")
    check_count(rows.shape[0])
    rows = rows.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        bad = ~((rows > 0) & (rows <= UPPER_BOUNDS))  # NaN fails both comparisons
    if bad.any():
        flower, feature = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidFlowers(
            f"flower {flower}: {FEATURE_NAMES[feature]} must be a finite number in "
            f"(0, {UPPER_BOUNDS[feature]:g}] cm, got {float(rows[flower, feature])!r}"
        )
    return rows
