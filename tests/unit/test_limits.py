"""Batch limits that contradict each other stop the service with one clear line."""

from __future__ import annotations

import json

import pytest
from bentoml.exceptions import BentoMLException

from iris_service.settings import (
    RUNNER_MAX_BATCH_SIZE,
    Settings,
    largest_batch_body_bytes,
    load_settings,
)
from tests.support import VIRGINICA


def test_the_shipped_defaults_fit_together() -> None:
    fields = Settings.model_fields
    load_settings(
        max_batch_flowers=fields["max_batch_flowers"].default,
        max_body_bytes=fields["max_body_bytes"].default,
    )


def test_a_batch_larger_than_the_runner_takes_is_refused() -> None:
    assert RUNNER_MAX_BATCH_SIZE == 1000
    with pytest.raises(
        BentoMLException, match=r"IRIS_MAX_BATCH_FLOWERS=1001 .* max_batch_size=1000"
    ):
        load_settings(max_batch_flowers=1001, max_body_bytes=10**7)


def test_a_body_limit_too_small_for_the_largest_batch_is_refused() -> None:
    needed = largest_batch_body_bytes(500)
    load_settings(max_batch_flowers=500, max_body_bytes=needed)
    with pytest.raises(BentoMLException, match=rf"IRIS_MAX_BODY_BYTES={needed - 1} .* {needed}"):
        load_settings(max_batch_flowers=500, max_body_bytes=needed - 1)


def test_the_estimate_covers_a_real_batch_body() -> None:
    """A batch of real flowers written by json.dumps is no larger than the estimate."""
    real = len(json.dumps({"flowers": [VIRGINICA] * 200}).encode())
    assert real <= largest_batch_body_bytes(200) < 2 * real
