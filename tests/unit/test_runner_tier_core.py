"""The inference core when the runner is another tier (`runner_required`): runner-bound rows
are refused with 503 (RunnerUnavailable) rather than computed in the API pod when the runner
tier fails or is silent; rows below the runner's threshold are answered in place whatever
the runner tier's state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable

from iris_service.inference.core import (
    API_WORKER,
    RUNNER,
    InferenceCore,
    ModelNotServed,
    RunnerUnavailable,
)
from iris_service.inference.model_loading import CompiledModel
from tests.unit.test_inference import (  # noqa: F401 - `models` is a fixture
    CHAMPION,
    RUNNER_FAILURES,
    _follower,
    _rows,
    models,
)


def _core(tmp_path: Path, models: dict[str, CompiledModel], runner, usable=lambda: True):  # noqa: F811
    return InferenceCore(
        _follower(tmp_path, models, challenger=False),
        runner=runner,
        runner_usable=usable,
        runner_rows=5,
        runner_required=True,
    )


@pytest.mark.parametrize("failure", RUNNER_FAILURES, ids=lambda e: type(e).__name__)
async def test_a_failing_runner_tier_refuses_runner_work_with_503(
    tmp_path: Path,
    models: dict[str, CompiledModel],  # noqa: F811
    failure: BaseException,
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        raise failure

    core = _core(tmp_path, models, runner)
    with pytest.raises(RunnerUnavailable) as refused:
        await core.infer(_rows(10))
    # 503 on BentoML's routes and on the protocol routes alike.
    assert isinstance(refused.value, ServiceUnavailable)
    assert isinstance(refused.value, ModelNotServed)
    assert refused.value.error_code == 503
    answer = await core.infer(_rows(2))  # below the threshold: answered here
    assert answer.computed_in == API_WORKER


async def test_a_silent_runner_tier_is_not_asked(
    tmp_path: Path,
    models: dict[str, CompiledModel],  # noqa: F811
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        raise AssertionError("a silent runner tier must not be called")

    with pytest.raises(RunnerUnavailable):
        await _core(tmp_path, models, runner, usable=lambda: False).infer(_rows(10))


async def test_a_runner_tier_that_answers_computes_the_rows(
    tmp_path: Path,
    models: dict[str, CompiledModel],  # noqa: F811
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        return {"tag": CHAMPION, "probabilities": models[CHAMPION].predict_proba(rows)}

    answer = await _core(tmp_path, models, runner).infer(_rows(10))
    assert (answer.computed_in, answer.model.tag) == (RUNNER, CHAMPION)
