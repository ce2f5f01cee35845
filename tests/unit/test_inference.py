"""The inference core with real compiled models (scikit-learn -> skl2onnx -> ONNX Runtime).

Two different logistic regressions play champion and challenger, so every answer can be
checked against the exact probabilities of the model it names. The runner is a small async
function that answers as the runner does, or raises what a failing runner call raises.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from http import HTTPStatus
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.client_reqrep import ConnectionKey
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from prometheus_client import REGISTRY

from iris_service.inference.core import (
    API_WORKER,
    RUNNER,
    InferenceCore,
    ModelNotServed,
    runner_min_rows,
)
from iris_service.inference.model_aliases import ServingAliases, write_aliases
from iris_service.inference.model_follower import ModelFollower
from iris_service.inference.model_loading import CompiledModel, ModelUnavailableError
from iris_service.names import CLASS_NAMES, FEATURE_NAMES

NAME = "iris-classifier"
CHAMPION, CHALLENGER = f"{NAME}:champ", f"{NAME}:chall"
KEY = ConnectionKey("localhost", 80, False, True, None, None, None)
# What the runner call raises when the runner dies, hangs or restarts mid-request.
RUNNER_FAILURES = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
    aiohttp.ClientOSError(32, "Can not write request body"),
    aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    aiohttp.ClientResponseError(None, (), status=400, message="Expected HTTP/"),  # type: ignore[arg-type]
    ConnectionResetError(104, "Connection reset by peer"),
    ServiceUnavailable("process is overloaded"),
    BentoMLException("Internal Server Error", error_code=HTTPStatus.INTERNAL_SERVER_ERROR),
    BentoMLException("gateway timeout", error_code=HTTPStatus.GATEWAY_TIMEOUT),
    pickle.UnpicklingError("pickle data was truncated"),
    TimeoutError(),
    aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    RuntimeError("the runner call was cancelled"),
]


def _compiled(tag: str, c: float) -> CompiledModel:
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(C=c, max_iter=1000).fit(data.data, data.target)
    onx = to_onnx(model, data.data[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    session = onnxruntime.InferenceSession(
        onx.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    metadata = {"class_names": list(CLASS_NAMES), "feature_names": list(FEATURE_NAMES)}
    return CompiledModel(
        tag,
        CLASS_NAMES,
        metadata,
        session=session,
        input_name=session.get_inputs()[0].name,
        seconds_per_row=1e-6,
    )


@pytest.fixture(scope="module")
def models() -> dict[str, CompiledModel]:
    return {CHAMPION: _compiled(CHAMPION, 1.0), CHALLENGER: _compiled(CHALLENGER, 0.01)}


def _follower(home: Path, models: dict[str, CompiledModel], challenger: bool) -> ModelFollower:
    write_aliases(NAME, ServingAliases(CHAMPION, CHALLENGER if challenger else None), home)

    def load(tag: str) -> CompiledModel:
        if tag not in models:
            raise ModelUnavailableError(f"model {tag} is not in the store")
        return models[tag]

    return ModelFollower(NAME, CHAMPION, load, with_challenger=challenger, home=home)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    low, high = np.array([4.3, 2.0, 1.0, 0.1]), np.array([7.9, 4.4, 6.9, 2.5])
    return np.random.default_rng(seed).uniform(low, high, size=(n, 4))


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_champion_answers_in_the_worker_with_its_exact_probabilities(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=False))
    rows = _rows(5)
    answer = await core.infer(rows)
    assert (answer.model.tag, answer.role, answer.computed_in) == (CHAMPION, "champion", API_WORKER)
    np.testing.assert_array_equal(answer.probabilities, models[CHAMPION].predict_proba(rows))
    assert answer.probabilities.shape == (5, 3)


async def test_a_canary_share_is_answered_by_the_challenger_each_with_its_own_answer(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(
        _follower(tmp_path, models, challenger=True), mode="canary", canary_share=0.3, seed=7
    )
    roles = []
    for i in range(400):
        rows = _rows(1, seed=i)
        answer = await core.infer(rows)
        roles.append(answer.role)
        expected = models[answer.model.tag].predict_proba(rows)
        np.testing.assert_array_equal(answer.probabilities, expected)
        assert answer.model.tag == (CHALLENGER if answer.role == "challenger" else CHAMPION)
    # Seeded: the same draw every run; 400 draws at 0.3 give 120 expected.
    assert 80 <= roles.count("challenger") <= 160


async def test_shadow_predictions_are_batched_off_the_answer_and_counted(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=True), mode="shadow")
    before = _count("iris_shadow_predictions_total", agreement="agree") + _count(
        "iris_shadow_predictions_total", agreement="disagree"
    )
    for i in range(10):
        answer = await core.infer(_rows(3, seed=i))
        assert answer.model.tag == CHAMPION
    assert core.shadow._waiting == 30  # waiting, not yet predicted: off the answers' path
    for _ in range(500):  # the flush runs delay_s after the first row: wait for it, bounded
        if core.shadow._waiting == 0:
            break
        await asyncio.sleep(core.shadow.delay_s)
    after = _count("iris_shadow_predictions_total", agreement="agree") + _count(
        "iris_shadow_predictions_total", agreement="disagree"
    )
    assert after - before == 30
    assert core.shadow._waiting == 0


async def test_shadow_rows_beyond_the_bound_are_dropped_and_counted(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(
        _follower(tmp_path, models, challenger=True), mode="shadow", shadow_max_rows=8
    )
    before = _count("iris_shadow_skipped_total", reason="saturated")
    for i in range(5):
        await core.infer(_rows(3, seed=i))
    assert core.shadow._waiting == 6  # two requests fit in 8 rows; three were dropped
    assert _count("iris_shadow_skipped_total", reason="saturated") - before == 9
    await asyncio.sleep(core.shadow.delay_s * 4)


async def test_large_requests_go_to_the_runner_and_are_named_by_its_answer(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    calls: list[tuple[str, int]] = []

    async def runner(role: str, rows: np.ndarray) -> dict:
        calls.append((role, len(rows)))
        # The runner may serve another version for a moment (it follows the aliases itself).
        model = models[CHALLENGER]
        return {"tag": model.tag, "probabilities": model.predict_proba(rows)}

    core = InferenceCore(
        _follower(tmp_path, models, challenger=False),
        runner=runner,
        runner_rows=100,
        stored=models.__getitem__,
    )
    small, large = _rows(99), _rows(100)
    assert (await core.infer(small)).computed_in == API_WORKER
    answer = await core.infer(large)
    assert calls == [("champion", 100)]
    assert (answer.computed_in, answer.model.tag) == (RUNNER, CHALLENGER)
    np.testing.assert_array_equal(answer.probabilities, models[CHALLENGER].predict_proba(large))


@pytest.mark.parametrize("failure", RUNNER_FAILURES, ids=lambda e: type(e).__name__)
async def test_a_failing_runner_costs_no_answer(
    tmp_path: Path, models: dict[str, CompiledModel], failure: BaseException
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        raise failure

    core = InferenceCore(
        _follower(tmp_path, models, challenger=False), runner=runner, runner_rows=2
    )
    rows = _rows(10)
    answer = await core.infer(rows)
    assert (answer.computed_in, answer.model.tag) == (API_WORKER, CHAMPION)
    np.testing.assert_array_equal(answer.probabilities, models[CHAMPION].predict_proba(rows))


async def test_a_silent_runner_is_not_asked(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        raise AssertionError("a runner the heartbeat finds silent must not be called")

    core = InferenceCore(
        _follower(tmp_path, models, challenger=False),
        runner=runner,
        runner_usable=lambda: False,
        runner_rows=2,
    )
    assert (await core.infer(_rows(10))).computed_in == API_WORKER


async def test_a_runner_without_the_challenger_leaves_it_to_the_worker(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    async def runner(role: str, rows: np.ndarray) -> dict:
        return {"tag": None, "probabilities": None}

    core = InferenceCore(
        _follower(tmp_path, models, challenger=True),
        mode="canary",
        canary_share=1.0,
        runner=runner,
        runner_rows=2,
    )
    rows = _rows(4)
    answer = await core.infer(rows)
    assert (answer.model.tag, answer.computed_in) == (CHALLENGER, API_WORKER)
    np.testing.assert_array_equal(answer.probabilities, models[CHALLENGER].predict_proba(rows))


async def test_a_named_version_answers_when_served_and_is_refused_when_not(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    core = InferenceCore(_follower(tmp_path, models, challenger=True), mode="shadow")
    rows = _rows(2)
    answer = await core.infer(rows, version="chall")
    assert answer.model.tag == CHALLENGER
    np.testing.assert_array_equal(answer.probabilities, models[CHALLENGER].predict_proba(rows))
    with pytest.raises(ModelNotServed, match="version other is stored but not served now"):
        await core.infer(rows, version="other")
    await asyncio.sleep(core.shadow.delay_s * 4)


async def test_a_promotion_is_followed_by_the_next_answer(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    follower = _follower(tmp_path, models, challenger=False)
    core = InferenceCore(follower)
    assert (await core.infer(_rows(1))).model.tag == CHAMPION
    write_aliases(NAME, ServingAliases(CHALLENGER, None), tmp_path)
    assert follower.poll()
    rows = _rows(3)
    answer = await core.infer(rows)
    assert answer.model.tag == CHALLENGER
    np.testing.assert_array_equal(answer.probabilities, models[CHALLENGER].predict_proba(rows))
    assert core.status()["champion"] == CHALLENGER


def test_the_runner_takes_the_rows_whose_cost_exceeds_the_hop(
    models: dict[str, CompiledModel],
) -> None:
    cheap = models[CHAMPION]  # 1 µs per row
    assert runner_min_rows(cheap, hop_seconds=0.002, largest=1000) == 2000
    assert runner_min_rows(cheap, hop_seconds=0.0001, largest=1000) == 100
    free = CompiledModel("x:y", CLASS_NAMES, {}, seconds_per_row=0.0)
    assert runner_min_rows(free, hop_seconds=0.002, largest=1000) == 1001


async def test_drift_counts_every_answered_flower_of_the_answering_model(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    statistics = {
        name: {
            "bin_cut_points": [2.0, 4.0, 6.0],
            "bin_shares": [0.25, 0.25, 0.25, 0.25],
        }
        for name in FEATURE_NAMES
    }
    for model in models.values():
        model.metadata["feature_statistics"] = statistics
    try:
        core = InferenceCore(_follower(tmp_path, models, challenger=False))
        for i in range(10):
            await core.infer(_rows(1, seed=i))
        await core.infer(_rows(100, seed=99))
        assert core.drift.flowers_in_window == 110  # nothing waiting is left out
    finally:
        for model in models.values():
            model.metadata.pop("feature_statistics")


def test_a_version_is_found_without_listing_the_store(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    """A version in a path costs no listing of the store (every version's metadata read): one
    served is answered from memory, another stored one is read once by its tag, and an unknown
    or impossible one is None (a 404) after at most one lookup."""
    from iris_service.inference.model_loading import ModelVersion

    old = ModelVersion(f"{NAME}:old1", CLASS_NAMES, {})
    reads: list[str] = []

    def stored(tag: str) -> ModelVersion:
        reads.append(tag)
        if tag == old.tag:
            return old
        if tag == f"{NAME}:latest":
            return old  # BentoML resolves "latest" to a real version
        raise KeyError(tag)

    core = InferenceCore(_follower(tmp_path, models, challenger=True), stored=stored)
    core.versions = None  # type: ignore[assignment,method-assign]  # never called
    assert core.version("champ") is models[CHAMPION]
    assert core.version("chall") is models[CHALLENGER]
    assert reads == []
    assert core.version("old1") is old and core.version("old1") is old
    assert reads == [old.tag]
    assert core.version("0123abcd") is None
    assert core.version("latest") is None
    for impossible in ("OLD1", "-x", "a" * 64, "../x", ""):
        assert core.version(impossible) is None
    assert reads == [old.tag, f"{NAME}:0123abcd"]


def test_the_list_of_stored_versions_is_read_again_only_when_the_store_changed(
    tmp_path: Path, models: dict[str, CompiledModel]
) -> None:
    """`/v2/models/<name>` lists every stored version; reading each one's metadata per request
    would let any client load a worker, so the listing is kept while the model's folder in the
    store is unchanged, and read again when a version is added (the folder changes)."""
    from iris_service.inference.model_loading import ModelVersion

    store = tmp_path / "store"
    (store / NAME / "v1").mkdir(parents=True)
    listings: list[list[str]] = []

    def listed(name: str) -> dict[str, ModelVersion]:
        names = sorted(p.name for p in (store / name).iterdir())
        listings.append(names)
        return {v: ModelVersion(f"{name}:{v}", CLASS_NAMES, {}) for v in names}

    def settle(seconds_ago: float) -> None:  # as if the folder last changed then
        past = time.time() - seconds_ago
        os.utime(store / NAME, (past, past))

    core = InferenceCore(
        _follower(tmp_path, models, challenger=False), listed=listed, store_folder=str(store)
    )
    assert sorted(core.versions()) == ["v1"]
    assert sorted(core.versions()) == ["v1"]
    assert len(listings) == 2  # a folder changed just now is listed again: its time is coarse
    settle(60)
    assert sorted(core.versions()) == ["v1"] and sorted(core.versions()) == ["v1"]
    assert len(listings) == 3
    (store / NAME / "v2").mkdir()
    settle(30)
    assert sorted(core.versions()) == ["v1", "v2"] and sorted(core.versions()) == ["v1", "v2"]
    assert listings[3:] == [["v1", "v2"]]
