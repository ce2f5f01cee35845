"""Request bodies for each protocol: the same flowers, in each server's own JSON format.

- "service": BentoML's /predict and the FastAPI baseline take the service's schema
  (`{"sepal_length": ...}` for /predict, `{"flowers": [...]}` for /predict_batch);
- "dataframe_split": `mlflow models serve` takes a pandas `dataframe_split` on /invocations;
- "v2": the Open Inference Protocol's JSON tensor (`{"inputs": [{"name", "shape": [N, 4],
  "datatype": "FP64", "data": [...]}]}`), byte for byte the same for MLServer and our V2 route;
- "v2-binary" (batches only): the same tensor with the binary tensor data extension, as
  Triton's client sends it: a JSON header declaring `binary_data_size`, then N * 4 little-endian
  float64, `Inference-Header-Content-Length` giving the header's length, and both outputs
  asked as binary (`binary_data_output`).

A batch request is a `Body` (bytes and headers) in one of BATCH_FORMATS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import numpy as np

from iris_service.names import FEATURE_NAMES

from .mlserver import INPUT_NAME

# Distinct flowers cycled through by the load generator (real Iris rows).
SINGLE_ROW_VARIETY = 12
# Batch request formats: the service's JSON (/predict_batch), V2 JSON and binary tensors,
# MLflow's dataframe_split (/invocations).
BATCH_FORMATS = ("service", "v2", "v2-binary", "dataframe_split")
JSON_HEADERS = (("Content-Type", "application/json"),)
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Body:
    """One request body as sent, with its own headers (Content-Type included)."""

    content: bytes
    headers: tuple[tuple[str, str], ...] = JSON_HEADERS


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


def single_bodies(protocol: str) -> list[str]:
    """Bodies of one flower each, for the server's single-prediction endpoint."""
    return [single_body(protocol, offset) for offset in range(SINGLE_ROW_VARIETY)]


def single_body(protocol: str, offset: int) -> str:
    (row,) = rows(1, offset)
    if protocol == "service":
        return json.dumps(_flower(row))
    return batch_body(protocol, 1, offset)


def batch_body(protocol: str, size: int, offset: int = 0) -> str:
    """One body of `size` flowers (for /predict_batch, /invocations or the V2 route)."""
    selected = rows(size, offset)
    if protocol == "dataframe_split":
        return _dataframe_split(selected)
    if protocol == "v2":
        return v2_tensor(selected)
    if protocol == "service":
        return json.dumps({"flowers": [_flower(row) for row in selected]})
    raise ValueError(f"unknown protocol {protocol!r}")


def v2_tensor(selected: list[tuple[float, ...]]) -> str:
    tensor = {
        "name": INPUT_NAME,
        "shape": [len(selected), len(FEATURE_NAMES)],
        "datatype": "FP64",
        "data": [value for row in selected for value in row],
    }
    return json.dumps({"inputs": [tensor]})


def _dataframe_split(selected: list[tuple[float, ...]]) -> str:
    return json.dumps(
        {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": [list(r) for r in selected]}}
    )


def batch_request(format_name: str, size: int, offset: int = 0) -> Body:
    """One batch request of `size` flowers in `format_name` (one of BATCH_FORMATS)."""
    if format_name == "v2-binary":
        return v2_binary(rows(size, offset))
    if format_name not in BATCH_FORMATS:
        raise ValueError(f"unknown batch format {format_name!r}")
    return Body(batch_body(format_name, size, offset).encode())


def v2_binary(selected: list[tuple[float, ...]]) -> Body:
    """V2 binary tensor extension: JSON header, then the flowers as little-endian float64."""
    data = np.asarray(selected, dtype="<f8").tobytes()
    tensor = {
        "name": INPUT_NAME,
        "shape": [len(selected), len(FEATURE_NAMES)],
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(data)},
    }
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    headers = (("Content-Type", "application/octet-stream"), (HEADER_LENGTH, str(len(header))))
    return Body(header + data, headers)
