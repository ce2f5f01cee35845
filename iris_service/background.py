"""One background task per object, started inside a worker's event loop and cancelled on
shutdown: the runner heartbeat and the feedback follower loop this way."""

from __future__ import annotations

import asyncio


class BackgroundLoop:
    """`start()` runs `self.run()` as a task of the running loop (once); `stop()` cancels it."""

    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start in the background (call from inside the worker's event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
