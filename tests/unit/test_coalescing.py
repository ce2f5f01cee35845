import asyncio

import numpy as np
import pytest

from iris_service.coalescing import RequestCoalescer


class RecordingRunner:
    """A stand-in model call that doubles its input and records the batch sizes it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.batches.append(len(rows))
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("runner went away")
        return rows * 2


async def test_concurrent_requests_share_runner_calls_and_get_their_own_rows() -> None:
    runner = RecordingRunner()
    coalescer = RequestCoalescer(runner, max_rows=1000, max_in_flight=1)
    requests = [np.full((1, 4), float(i)) for i in range(50)]
    results = await asyncio.gather(*(coalescer.predict(rows) for rows in requests))
    for rows, result in zip(requests, results, strict=True):
        assert np.array_equal(result, rows * 2)
    assert sum(runner.batches) == 50
    assert len(runner.batches) == 2  # the first goes alone, the other 49 wait and go together


async def test_a_lone_request_is_sent_at_once() -> None:
    runner = RecordingRunner()
    coalescer = RequestCoalescer(runner, max_rows=10)
    result = await asyncio.wait_for(coalescer.predict(np.ones((3, 4))), timeout=1)
    assert result.shape == (3, 4) and runner.batches == [3]


async def test_batches_respect_max_rows_and_big_requests_go_alone() -> None:
    runner = RecordingRunner()
    coalescer = RequestCoalescer(runner, max_rows=10, max_in_flight=1)
    sizes = [1, 6, 6, 25, 2]
    results = await asyncio.gather(*(coalescer.predict(np.ones((n, 4))) for n in sizes))
    assert [len(r) for r in results] == sizes
    assert runner.batches == [1, 6, 6, 25, 2]


async def test_a_failure_reaches_every_waiting_request_and_the_next_call_works() -> None:
    runner = RecordingRunner(fail=True)
    coalescer = RequestCoalescer(runner, max_rows=100, max_in_flight=1)
    outcomes = await asyncio.gather(
        *(coalescer.predict(np.ones((1, 4))) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    runner.fail = False
    assert len(await coalescer.predict(np.ones((1, 4)))) == 1


async def test_a_cancelled_request_does_not_disturb_the_others() -> None:
    runner = RecordingRunner()
    coalescer = RequestCoalescer(runner, max_rows=100, max_in_flight=1)
    first = asyncio.create_task(coalescer.predict(np.full((1, 4), 1.0)))
    waiting = [asyncio.create_task(coalescer.predict(np.full((1, 4), 2.0))) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    await first
    results = await asyncio.gather(*waiting[1:])
    assert all(np.array_equal(r, np.full((1, 4), 4.0)) for r in results)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RequestCoalescer(RecordingRunner(), max_rows=0)
