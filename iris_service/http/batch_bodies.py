"""The fast accept path of /predict_batch bodies: valid flowers straight into one array.

Pydantic validating `schemas.IrisBatch` builds and checks one dict per flower: most of the
CPU of a 1,000-flower request. Here msgspec decodes the body into plain structs (field names
and types only, from FEATURE_NAMES) and the value rules are checked once, vectorised, by
`flower_arrays.checked_flowers` — the rules the protocol routes already use. A body either
passes both, and its rows are exactly what Pydantic would have given, or this path gives up
(returns None) and Pydantic validates it again: Pydantic stays the schema, and it words every
refusal, so clients see one set of errors whichever path ran.

What the fast path accepts is a subset of what Pydantic accepts: msgspec refuses booleans,
strings and unknown or missing fields as Pydantic's strict fields do; values msgspec takes
and Pydantic refuses (-0.0, integers beyond the bounds) fail the range check.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, overload

import msgspec
import numpy as np

from iris_service.inference.flower_arrays import InvalidFlowers, checked_flowers
from iris_service.names import FEATURE_NAMES

_Flower = msgspec.defstruct(
    "_Flower",
    [(name, float) for name in FEATURE_NAMES],
    forbid_unknown_fields=True,
    gc=False,
)
_Batch = msgspec.defstruct("_Batch", [("flowers", list[_Flower])], forbid_unknown_fields=True)
_DECODER = msgspec.json.Decoder(_Batch)
_MEASUREMENTS = attrgetter(*FEATURE_NAMES)


class CheckedFlowers(Sequence[dict[str, float]]):
    """Flowers that passed every rule, held as their float64 array [N, 4].

    A read-only sequence of flower dicts (what `IrisBatch.flowers` holds after Pydantic), so
    code that reads `flowers` needs no second branch; `rows` is the array the core takes.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> dict[str, float]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, float]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, float] | list[dict[str, float]]:
        if isinstance(index, slice):
            return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in self.rows[index].tolist()]
        return dict(zip(FEATURE_NAMES, self.rows[index].tolist(), strict=True))

    def __iter__(self) -> Iterator[dict[str, float]]:
        for row in self.rows.tolist():
            yield dict(zip(FEATURE_NAMES, row, strict=True))


def fast_flowers(body: bytes | bytearray | str) -> CheckedFlowers | None:
    """The flowers of a valid /predict_batch body, or None for Pydantic to judge."""
    try:
        batch: Any = _DECODER.decode(body)
        count = len(batch.flowers)
        if count == 0:
            return None  # no flowers: Pydantic words the refusal
        values = chain.from_iterable(map(_MEASUREMENTS, batch.flowers))
        rows = np.fromiter(values, np.float64, count=count * len(FEATURE_NAMES))
        return CheckedFlowers(checked_flowers(rows.reshape(count, len(FEATURE_NAMES))))
    except (msgspec.DecodeError, InvalidFlowers):
        return None
