"""Merge concurrent prediction calls of one API worker into few runner calls.

Every call to the runner is an HTTP round trip over a Unix socket (serialisation, BentoML's
server middleware, the runner's access path). Under load most of a request's cost would be
that hop, not the model. The coalescer keeps at most `max_in_flight` runner calls open per
API worker; rows of requests that arrive meanwhile wait and travel together in the next call.
With no concurrency a request goes out at once (no timer, no added latency); under load the
batch size adapts to the arrival rate. The runner's own adaptive batching then merges calls
from several API workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

RunnerCall = Callable[[np.ndarray], Awaitable[np.ndarray]]


class RequestCoalescer:
    def __init__(self, call: RunnerCall, max_rows: int, max_in_flight: int = 2) -> None:
        if max_rows < 1 or max_in_flight < 1:
            raise ValueError("max_rows and max_in_flight must be positive")
        self._call = call
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self._waiting: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._in_flight = 0
        # The event loop keeps only weak references to tasks: hold them until they finish.
        self._tasks: set[asyncio.Task[None]] = set()

    async def predict(self, rows: np.ndarray) -> np.ndarray:
        """Result rows for `rows`, computed in a runner call shared with concurrent requests."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            batch = self._take_batch()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_batch(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        """Whole requests, oldest first, up to max_rows rows (a larger request goes alone)."""
        batch = [self._waiting.pop(0)]
        rows = len(batch[0][0])
        while self._waiting and rows + len(self._waiting[0][0]) <= self.max_rows:
            request = self._waiting.pop(0)
            rows += len(request[0])
            batch.append(request)
        return batch

    async def _send(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        try:
            inputs = batch[0][0] if len(batch) == 1 else np.concatenate([r for r, _ in batch])
            outputs = await self._call(inputs)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            self._fail(batch, exc)
        except asyncio.CancelledError:
            # The call itself was cancelled (shutdown): its requests must not wait forever.
            self._fail(batch, RuntimeError("the runner call was cancelled"))
            raise
        else:
            start = 0
            for rows, future in batch:
                if not future.done():  # a cancelled request (client went away) is skipped
                    future.set_result(outputs[start : start + len(rows)])
                start += len(rows)
        finally:
            self._in_flight -= 1
            self._dispatch()

    @staticmethod
    def _fail(batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
