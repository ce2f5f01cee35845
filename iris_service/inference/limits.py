"""The three batch limits, checked against each other before the server starts.

IRIS_MAX_BATCH_FLOWERS (flowers in one POST /predict_batch), IRIS_MAX_BODY_BYTES (request
body) and the runner's max_batch_size (rows in one runner call) are set apart but must fit
together: a body limit too small for the largest batch refuses valid batches with 413, and a
batch larger than the runner's max batch fails inside the runner on every such request.
Either way the service would look healthy and fail requests, so `bentoml serve` stops with
one line instead (a BentoMLException: printed as one line, exit status 1).
"""

from __future__ import annotations

import json

from bentoml.exceptions import BentoMLException

from iris_service.settings import (
    FEATURE_NAMES,
    MAX_BATCH_FLOWERS,
    MAX_BODY_BYTES,
    RUNNER_MAX_BATCH_SIZE,
)

# A realistic measurement as clients write it (two decimals, two digits before the point).
_WRITTEN_MEASUREMENT = 10.25


class InconsistentLimitsError(BentoMLException, ValueError):
    """Limits that contradict each other: one clear line for operators."""


def largest_batch_body_bytes(flowers: int) -> int:
    """Size of a POST /predict_batch body of `flowers` realistic flowers, as json.dumps
    writes it (the spacing most clients send)."""
    flower = {name: _WRITTEN_MEASUREMENT for name in FEATURE_NAMES}
    return len(json.dumps({"flowers": [flower] * flowers}).encode())


def check_batch_limits(
    runner_max_batch_size: int = RUNNER_MAX_BATCH_SIZE,
    max_batch_flowers: int = MAX_BATCH_FLOWERS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Raise InconsistentLimitsError naming the settings to change when the limits clash."""
    if max_batch_flowers > runner_max_batch_size:
        raise InconsistentLimitsError(
            f"IRIS_MAX_BATCH_FLOWERS={max_batch_flowers} is larger than the runner's "
            f"max_batch_size={runner_max_batch_size} (RUNNER_MAX_BATCH_SIZE in "
            f"iris_service/settings.py): lower IRIS_MAX_BATCH_FLOWERS"
        )
    needed = largest_batch_body_bytes(max_batch_flowers)
    if max_body_bytes < needed:
        raise InconsistentLimitsError(
            f"IRIS_MAX_BODY_BYTES={max_body_bytes} is too small for a batch of "
            f"IRIS_MAX_BATCH_FLOWERS={max_batch_flowers} flowers (about {needed} bytes): "
            f"raise IRIS_MAX_BODY_BYTES to at least {needed} or lower IRIS_MAX_BATCH_FLOWERS"
        )
