"""The API worker's copy of the runner's champion (iris_service/local_champion.py): it
answers only while it is the model the runner serves, and follows the runner, not a file."""

import asyncio
import logging
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from iris_service.local_champion import LocalChampion
from iris_service.model_loading import LoadedModel, model_answer, model_fingerprint
from iris_service.settings import CLASS_NAMES, FEATURE_NAMES

FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 2.8, 4.3, 1.3], [6.7, 3.0, 5.2, 2.3]])


def _model(tag: str, c: float) -> LoadedModel:
    estimator = LogisticRegression(C=c, max_iter=500).fit(
        np.repeat(FLOWERS, 3, axis=0) + np.tile([[0.0], [0.1], [-0.1]], (3, 4)),
        [0] * 3 + [1] * 3 + [2] * 3,
    )
    return LoadedModel(estimator, tag, CLASS_NAMES, FEATURE_NAMES)


MODELS = {"iris:a": _model("iris:a", 1.0), "iris:b": _model("iris:b", 0.01)}


class Runner:
    """Says which champion it serves (as the runner's serving_models does); can hang or fail."""

    def __init__(self, champion: str) -> None:
        self.champion = champion
        self.asked = 0
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> str:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return self.champion


class Loads:
    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.tags: list[str] = []
        self.refuse = refuse

    def __call__(self, tag: str) -> LoadedModel:
        self.tags.append(tag)
        if tag in self.refuse:
            raise RuntimeError(f"model {tag} is damaged\nsecond line")
        return MODELS[tag]


def _copy(runner: Runner, loads: Loads, period_s: float = 60.0) -> LocalChampion:
    return LocalChampion(loads, runner, period_s=period_s, timeout_s=1.0)


async def test_it_answers_only_once_it_holds_the_runners_champion_and_as_the_runner_would() -> None:
    local = _copy(Runner("iris:a"), loads := Loads())
    assert local.answer(FLOWERS) is None
    await local.sync()
    answer = local.answer(FLOWERS)
    assert answer is not None and loads.tags == ["iris:a"]
    assert np.array_equal(answer, model_answer(MODELS["iris:a"], FLOWERS))
    assert set(answer[:, -1]) == {model_fingerprint("iris:a")}


async def test_a_runner_answer_by_another_model_stops_it_until_it_holds_that_one() -> None:
    runner = Runner("iris:a")
    local = _copy(runner, loads := Loads())
    await local.sync()
    local.observe(model_fingerprint("iris:a"))  # the same model: nothing changes
    assert local.answer(FLOWERS) is not None
    runner.champion = "iris:b"
    local.observe(model_fingerprint("iris:b"))  # promoted: the runner answered with B
    assert local.answer(FLOWERS) is None
    await local.sync()
    assert local.answer(FLOWERS)[0, -1] == model_fingerprint("iris:b")
    runner.champion = "iris:a"  # rolled back: A is still loaded, not loaded again
    local.observe(model_fingerprint("iris:a"))
    assert local.answer(FLOWERS) is None
    await local.sync()
    assert local.answer(FLOWERS)[0, -1] == model_fingerprint("iris:a")
    assert loads.tags == ["iris:a", "iris:b"]


async def test_an_answer_by_another_model_while_the_runner_is_asked_voids_the_reply() -> None:
    """The runner said A, but answered with B before the reply was read: A may be stale."""
    runner = Runner("iris:a")
    local = _copy(runner, Loads())
    await local.sync()
    runner.gate = asyncio.Event()
    pending = asyncio.create_task(local.sync())
    await asyncio.sleep(0.01)
    local.observe(model_fingerprint("iris:b"))
    runner.gate.set()
    await pending
    assert local.answer(FLOWERS) is None


async def test_a_copy_that_cannot_be_loaded_leaves_every_request_to_the_runner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner("iris:b")
    local = _copy(runner, loads := Loads(refuse=frozenset({"iris:b"})))
    with caplog.at_level(logging.INFO, logger="iris_service.local_champion"):
        await local.sync()
        await local.sync()
    assert local.answer(FLOWERS) is None
    assert loads.tags == ["iris:b"]  # refused once, not retried
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "iris:b" in errors[0] and "damaged" in errors[0]
    assert "second line" not in errors[0]


async def test_a_runner_that_does_not_say_keeps_the_copy_and_following_goes_on() -> None:
    runner = Runner("iris:a")
    local = _copy(runner, loads := Loads(), period_s=0.01)
    runner.failure = ConnectionError("runner starting")
    with pytest.raises(ConnectionError):
        await local.sync()
    assert local.answer(FLOWERS) is None  # never told: no copy
    local.start()
    try:
        await asyncio.sleep(0.05)
        assert local.answer(FLOWERS) is None  # the loop survives the failures
        runner.failure = None
        for _ in range(100):
            if local.answer(FLOWERS) is not None:
                break
            await asyncio.sleep(0.01)
        assert local.answer(FLOWERS) is not None
        runner.failure = TimeoutError()  # busy: the copy it had stays
        await asyncio.sleep(0.05)
        assert local.answer(FLOWERS) is not None and loads.tags == ["iris:a"]
    finally:
        local.stop()


async def test_an_answer_by_another_model_makes_it_ask_the_runner_at_once() -> None:
    runner = Runner("iris:a")
    local = _copy(runner, Loads(), period_s=60.0)
    local.start()
    try:
        for _ in range(100):
            if local.answer(FLOWERS) is not None:
                break
            await asyncio.sleep(0.01)
        asked = runner.asked
        runner.champion = "iris:b"
        local.observe(model_fingerprint("iris:b"))
        for _ in range(100):
            answer = local.answer(FLOWERS)
            if answer is not None:
                break
            await asyncio.sleep(0.01)
        assert answer is not None and answer[0, -1] == model_fingerprint("iris:b")
        assert runner.asked == asked + 1  # long before the 60 s period
    finally:
        local.stop()


def test_scipy_is_imported_whole_on_the_loop_before_any_copy_loads_in_a_thread() -> None:
    """BentoML's metadata check reads scipy.sparse.spmatrix; a copy loading in a thread must
    never leave scipy.sparse half-imported under the event loop (a 500 on /v2/models/...).
    Importing the module costs the supervisor nothing: scikit-learn comes with start()."""
    program = """
import asyncio, sys
from iris_service.local_champion import LocalChampion
assert "sklearn" not in sys.modules and "scipy.sparse" not in sys.modules

async def never() -> str:
    await asyncio.sleep(3600)
    return ""

async def main() -> None:
    local = LocalChampion(lambda tag: None, never, period_s=60, timeout_s=1)
    local.start()
    assert hasattr(sys.modules["scipy.sparse"], "spmatrix")
    local.stop()

asyncio.run(main())
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
