"""Request bodies for each server: the same flowers, in each server's own JSON format.

BentoML and the FastAPI baseline take the service's schema (`{"sepal_length": ...}` for
/predict, `{"flowers": [...]}` for /predict_batch); `mlflow models serve` takes a pandas
`dataframe_split` on /invocations for one row and for many.
"""

from __future__ import annotations

import json
from functools import cache

from iris_service.settings import FEATURE_NAMES

# Distinct flowers cycled through by the load generator (real Iris rows).
SINGLE_ROW_VARIETY = 12


@cache
def iris_rows() -> tuple[tuple[float, ...], ...]:
    from sklearn.datasets import load_iris

    data = load_iris().data
    return tuple(tuple(round(float(value), 2) for value in row) for row in data)


def rows(count: int, offset: int = 0) -> list[tuple[float, ...]]:
    table = iris_rows()
    return [table[(offset + index * 7) % len(table)] for index in range(count)]


def _flower(row: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, row, strict=True))


def single_bodies(server: str) -> list[str]:
    """Bodies of one flower each, for the server's single-prediction endpoint."""
    return [single_body(server, offset) for offset in range(SINGLE_ROW_VARIETY)]


def single_body(server: str, offset: int) -> str:
    (row,) = rows(1, offset)
    if server == "mlflow":
        return _dataframe_split([row])
    return json.dumps(_flower(row))


def batch_body(server: str, size: int, offset: int = 0) -> str:
    """One body of `size` flowers (for /predict_batch, or /invocations for mlflow)."""
    selected = rows(size, offset)
    if server == "mlflow":
        return _dataframe_split(selected)
    return json.dumps({"flowers": [_flower(row) for row in selected]})


def _dataframe_split(selected: list[tuple[float, ...]]) -> str:
    return json.dumps(
        {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": [list(r) for r in selected]}}
    )
