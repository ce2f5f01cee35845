"""What the prediction store raises and hands back, importable without the database layer.

The store itself (records/store.py) is SQLAlchemy Core, whose import costs a large part of a
process's start. The code on every process's import path (the writer, the feedback desk,
service.py) names only these, and opens the store where it is used: in the API workers.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


class StoreUnavailable(Exception):
    """The database cannot be reached or written now (down, full, locked too long)."""


class AlreadyLabelled(Exception):
    """Keys that already have a label (in the store, or twice in one request)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


class NewerSchema(RuntimeError):
    """The store was written by a newer version of the service."""
