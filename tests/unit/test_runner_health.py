"""RunnerHeartbeat: what readiness and liveness make of answered, refused and silent pings."""

from __future__ import annotations

import asyncio

import pytest

from iris_service.inference.runner_health import PingOutcome, RunnerHeartbeat, runner_ping


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def answers_ready() -> bool:
    return True


async def answers_not_ready() -> bool:
    return False


async def refuses() -> bool:
    raise ConnectionRefusedError("runner socket refused")


async def hangs() -> bool:
    await asyncio.Event().wait()
    return True


def heartbeat(ping, clock: Clock | None = None) -> RunnerHeartbeat:
    return RunnerHeartbeat(ping, period_s=0.01, timeout_s=0.05, grace_s=5.0, clock=clock or Clock())


def test_not_ready_before_the_first_answer_but_alive() -> None:
    beat = heartbeat(answers_ready)
    assert not beat.ready() and beat.alive() and not beat.silent()


async def test_an_answer_makes_it_ready() -> None:
    beat = heartbeat(answers_ready)
    assert await beat.beat() is PingOutcome.ANSWERED_READY
    assert beat.ready() and beat.alive()


@pytest.mark.parametrize("ping", [answers_not_ready, refuses])
async def test_not_ready_or_refused_is_unready_but_never_dead(ping) -> None:
    clock = Clock()
    beat = heartbeat(ping, clock)
    assert await beat.beat() is PingOutcome.ANSWERED_NOT_READY
    clock.now += 3600  # however long it lasts: the runner answers, a restart would not help
    await beat.beat()
    assert not beat.ready() and beat.alive() and not beat.silent()


async def test_silence_is_unready_at_once_and_dead_after_the_grace() -> None:
    clock = Clock()
    beat = heartbeat(answers_ready, clock)
    await beat.beat()
    beat.ping = hangs
    assert await beat.beat() is PingOutcome.SILENT  # bounded by the ping's own timeout
    assert not beat.ready() and beat.silent() and beat.alive()
    clock.now += 4.9
    assert beat.alive()
    clock.now += 0.2
    assert not beat.alive()
    beat.ping = answers_ready
    await beat.beat()
    assert beat.ready() and beat.alive()


async def test_a_ping_outstanding_past_its_timeout_counts_as_silence() -> None:
    clock = Clock()
    beat = heartbeat(answers_ready, clock)
    await beat.beat()
    beat.pinging_since = clock.now  # a ping in flight (the event loop has not timed it out yet)
    assert beat.ready()
    clock.now += 0.06
    assert not beat.ready() and beat.silent()
    clock.now += 5.0
    assert not beat.alive()


async def test_run_pings_periodically_until_stopped() -> None:
    calls = 0

    async def counting() -> bool:
        nonlocal calls
        calls += 1
        return True

    beat = RunnerHeartbeat(counting, period_s=0.01, timeout_s=0.05, grace_s=1.0)
    beat.start()
    await asyncio.sleep(0.2)
    beat.stop()
    seen = calls
    await asyncio.sleep(0.05)
    assert 3 <= seen == calls
    assert beat.ready()


async def test_runner_ping_uses_the_proxys_readiness_or_the_local_instance() -> None:
    class Proxy:
        async def is_ready(self, timeout: float | None) -> bool:
            return timeout is None  # bounded by the heartbeat, not by the proxy

    class LocalRunner:
        def __is_ready__(self) -> bool:
            return True

    assert await runner_ping(Proxy())() is True
    assert await runner_ping(LocalRunner())() is True


def test_rejects_a_grace_shorter_than_the_ping_timeout() -> None:
    with pytest.raises(ValueError):
        RunnerHeartbeat(answers_ready, period_s=1, timeout_s=5, grace_s=2)


async def _pings_after_stop() -> int:
    """Start a heartbeat whose ping answers at once, stop it, and count the pings after."""
    calls, stopped = 0, False

    async def counting() -> bool:
        nonlocal calls
        calls += 1
        if stopped:  # a loop that outlived stop() waits here, where a cancel does land
            await asyncio.Event().wait()
        return True

    beat = RunnerHeartbeat(counting, period_s=0.0001, timeout_s=0.05, grace_s=1.0)
    beat.start()
    await asyncio.sleep(0.005)
    beat.stop()
    stopped, seen = True, calls
    await asyncio.sleep(0.005)
    assert seen > 0
    return calls - seen


async def test_stop_ends_the_pinging_even_when_the_ping_answers_at_once() -> None:
    """A cancellation that arrives as a ping completes still ends the loop (Python 3.11's
    wait_for dropped it in most of these trials: the heartbeat pinged on after stop() and the
    worker's shutdown waited for it forever)."""
    assert [await _pings_after_stop() for _ in range(100)] == [0] * 100
