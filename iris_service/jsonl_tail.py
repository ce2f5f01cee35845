"""Read what was appended to JSON-lines files since the last look, rotation included.

Several processes append whole lines to our logs (prediction log, feedback log) with
O_APPEND; a reader in another process wants only the lines it has not seen. A file is known
by its inode, so a rotation (a rename: `predictions.jsonl` becomes `predictions.jsonl.1`)
keeps the reader's place in it; and by its first bytes, because a file system reuses the
inode of a deleted file (the oldest rotated one) for a new file at once. A line is read only
once it is complete (ends with a newline): a writer's half-written last line is left for the
next look.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

CHUNK_BYTES = 1 << 20
HEAD_BYTES = 64  # our records begin with a time and a random id: a file's signature


class JsonLinesTail:
    """Positions reached in each file (by inode); `read` yields only new complete lines."""

    def __init__(self) -> None:
        self._positions: dict[int, tuple[int, bytes]] = {}  # inode -> (position, head)

    def read(self, files: Sequence[Path]) -> Iterator[tuple[int, int, bytes]]:
        """(inode, offset, line without its newline) of every new complete line of `files`
        (given newest first, as PredictionLog.files() lists them), oldest file first."""
        seen: set[int] = set()
        for path in reversed(files):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                status = os.fstat(fd)
                seen.add(status.st_ino)
                yield from self._new_lines(fd, status.st_ino, status.st_size)
            finally:
                os.close(fd)
        for inode in set(self._positions) - seen:  # rotated away for good
            del self._positions[inode]

    def _new_lines(self, fd: int, inode: int, size: int) -> Iterator[tuple[int, int, bytes]]:
        head = os.pread(fd, HEAD_BYTES, 0)
        position, known_head = self._positions.get(inode, (0, b""))
        if position > size or head[: len(known_head)] != known_head:
            position = 0  # another file with a reused inode, or cut back: from the start
        pending = b""
        while position + len(pending) < size:
            chunk = os.pread(
                fd, min(CHUNK_BYTES, size - position - len(pending)), position + len(pending)
            )
            if not chunk:
                break
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) != -1:
                yield inode, position + start, pending[start:end]
                start = end + 1
            position += start
            pending = pending[start:]
            self._positions[inode] = (position, head)
        self._positions[inode] = (position, head)
