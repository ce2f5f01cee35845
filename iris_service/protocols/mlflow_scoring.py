"""MLflow's scoring protocol (what `mlflow models serve` answers on /invocations), parsed
without pandas: the served code installs no pandas (requirements-serve.txt).

Accepted as `mlflow models serve` accepts them for this model (a signature of four named
double columns): JSON with exactly one of `dataframe_split` ({"columns", "data"[, "index"]}),
`dataframe_records` (a list of {column: value}), `instances` or `inputs` (records, or
{column: values}), optionally with `params`; or CSV with a header row (text/csv). Columns are
matched by name (their order is free, extra columns are ignored); rows without column names
are refused, as MLflow refuses them. Values must be numbers that pass the service's rules
(flower_arrays), which is stricter than MLflow: strings, booleans, nulls and out-of-range
measurements are refused with 400 instead of being converted or failing in the model.

Bodies are UTF-8 (a `charset` other than UTF-8 is 415; bytes that are not UTF-8, a byte
order mark, UTF-16 or Latin-1 text are 400), JSON no deeper than the parser's recursion
limit, CSV fields of at most MAX_CSV_FIELD_CHARS characters: anything else is a ScoringError
in MLflow's error shape, never a 500, and never a line of the prediction log.

The answer is {"predictions": ...} with what the model's pyfunc `predict` returns, as MLflow
writes it: class probabilities per row when the model was logged with
`pyfunc_predict_fn="predict_proba"` (this project's training does), class ids otherwise.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from iris_service.errors import BadRequest
from iris_service.inference.flower_arrays import InvalidFlowers, check_count, checked_flowers
from iris_service.names import FEATURE_NAMES
from iris_service.protocols.json_bodies import UnreadableJson, strict_json, utf8_text

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
_NUMBERS = (int, float)
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii")
# A CSV value is a measurement or a column name: far shorter than this.
MAX_CSV_FIELD_CHARS = 256


class ScoringError(BadRequest, ValueError):
    """A request MLflow's protocol refuses; `status` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)


def media_type(content_type: str | None) -> str:
    """JSON or CSV, from a Content-Type header (charset allowed); anything else is 415."""
    kind, _, parameters = (content_type or "").partition(";")
    kind = kind.strip().lower()
    if kind not in (JSON_TYPE, CSV_TYPE):
        raise ScoringError(
            f"send {JSON_TYPE} or {CSV_TYPE}; got {kind or 'no content type'!r}", 415
        )
    for parameter in filter(None, (p.strip() for p in parameters.split(";"))):
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset":
            raise ScoringError(f"unrecognized content type parameter {parameter[:80]!r}", 415)
        if value.strip().strip('"').lower() not in UTF8_CHARSETS:
            raise ScoringError(f"send UTF-8 text; got charset {value.strip()[:40]!r}", 415)
    return kind


def parse_scoring_request(body: bytes, kind: str) -> np.ndarray:
    """The flowers of one /invocations body, as a checked float64 array [N, 4]."""
    columns = _csv_columns(body) if kind == CSV_TYPE else _json_columns(body)
    try:
        return checked_flowers(np.column_stack([columns[name] for name in FEATURE_NAMES]))
    except InvalidFlowers as exc:
        raise ScoringError(str(exc)) from None


def _utf8(body: bytes, what: str) -> str:
    try:
        return utf8_text(body)
    except UnreadableJson as exc:
        raise ScoringError(f"the {what} body {exc}") from None


def _json_columns(body: bytes) -> dict[str, np.ndarray]:
    try:
        request = strict_json(body)
    except UnreadableJson as exc:
        raise ScoringError(f"the body {exc}") from None
    present = [key for key in INPUT_KEYS if isinstance(request, dict) and key in request]
    if len(present) != 1 or set(request) - {present[0], "params"}:
        raise ScoringError(
            "the body must be a JSON object with exactly one of "
            f"{', '.join(INPUT_KEYS)} (and optionally params)"
        )
    payload = request[present[0]]
    if present[0] == "dataframe_split":
        return _split_columns(payload)
    if present[0] == "dataframe_records" or isinstance(payload, list):
        return _record_columns(payload)
    if isinstance(payload, dict):
        return _mapping_columns(payload)
    raise ScoringError(f"'{present[0]}' must be a list of records or an object of columns")


def _split_columns(split: Any) -> dict[str, np.ndarray]:
    if (
        not isinstance(split, dict)
        or "data" not in split
        or set(split) - {"columns", "data", "index"}
    ):
        raise ScoringError("dataframe_split needs 'data' and optionally 'columns' and 'index'")
    columns, data = split.get("columns"), split["data"]
    if not isinstance(columns, list):
        raise ScoringError(f"the model needs the named columns {', '.join(FEATURE_NAMES)}")
    if not isinstance(data, list):
        raise ScoringError("dataframe_split's 'data' must be a list of rows")
    if not data:
        _no_rows()
    _count(len(data))
    if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
        raise ScoringError(f"every row of 'data' must have {len(columns)} values")
    positions = _positions(columns)
    return {name: _numbers([row[positions[name]] for row in data]) for name in FEATURE_NAMES}


def _record_columns(records: Any) -> dict[str, np.ndarray]:
    if not isinstance(records, list) or not records:
        _no_rows()
    _count(len(records))
    if not all(isinstance(record, dict) for record in records):
        raise ScoringError(f"the model needs the named columns {', '.join(FEATURE_NAMES)}")
    missing = [name for name in FEATURE_NAMES if any(name not in r for r in records)]
    if missing:
        raise ScoringError(f"the model is missing inputs {missing}")
    return {name: _numbers([record[name] for record in records]) for name in FEATURE_NAMES}


def _mapping_columns(mapping: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [name for name in FEATURE_NAMES if name not in mapping]
    if missing:
        raise ScoringError(f"the model is missing inputs {missing}")
    values = {name: mapping[name] for name in FEATURE_NAMES}
    lengths = {len(v) if isinstance(v, list) else 1 for v in values.values()}
    if len(lengths) != 1:
        raise ScoringError("every column must have the same number of values")
    _count(lengths.pop())
    return {
        name: _numbers(value if isinstance(value, list) else [value])
        for name, value in values.items()
    }


def _csv_columns(body: bytes) -> dict[str, np.ndarray]:
    text = _utf8(body, "CSV")
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:  # a field over csv's own limit, a NUL byte, a stray quote
        raise ScoringError(f"the body is not valid CSV: {str(exc)[:120]}") from None
    if any(len(field) > MAX_CSV_FIELD_CHARS for row in rows for field in row):
        raise ScoringError(f"a CSV value is longer than {MAX_CSV_FIELD_CHARS} characters")
    if len(rows) < 2:
        _no_rows()
    header, data = rows[0], rows[1:]
    _count(len(data))
    if not all(len(row) == len(header) for row in data):
        raise ScoringError(f"every CSV row must have {len(header)} values, as the header")
    positions = _positions([name.strip() for name in header])
    columns = {}
    for name in FEATURE_NAMES:
        try:
            columns[name] = np.array([float(row[positions[name]]) for row in data])
        except ValueError:
            raise ScoringError(f"column {name} holds a value that is not a number") from None
    return columns


def _positions(columns: Sequence[Any]) -> dict[str, int]:
    positions = {name: index for index, name in enumerate(columns) if isinstance(name, str)}
    missing = [name for name in FEATURE_NAMES if name not in positions]
    if missing:
        raise ScoringError(f"the model is missing inputs {missing}")
    return positions


def _numbers(values: list[Any]) -> np.ndarray:
    if not all(type(value) in _NUMBERS for value in values):
        raise ScoringError("every measurement must be a JSON number")
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        raise ScoringError("a measurement is too large for a floating-point value") from None


def _count(rows: int) -> None:
    try:
        check_count(rows)
    except InvalidFlowers as exc:
        raise ScoringError(str(exc)) from None


def _no_rows() -> None:
    raise ScoringError("the request holds no rows")


def pyfunc_flavour(mlmodel_path: Path) -> tuple[str, str]:
    """(the pyfunc's predict function, the MLflow version that wrote the model), read from
    the model's MLmodel file (kept by bentoml.mlflow.import_model under mlflow_model/).

    The file is read as untrusted input: unreadable, not UTF-8, not YAML, or not the mappings
    MLflow writes, it gives ("predict", "unknown") instead of an exception (a 500)."""
    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return "predict", "unknown"
    mlmodel = mlmodel if isinstance(mlmodel, dict) else {}
    flavors = mlmodel.get("flavors") if isinstance(mlmodel.get("flavors"), dict) else {}
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    predict_fn = pyfunc.get("predict_fn") if isinstance(pyfunc, dict) else None
    version = mlmodel.get("mlflow_version")
    return (
        predict_fn if predict_fn in ("predict", "predict_proba") else "predict",
        version if isinstance(version, str) and len(version) <= 40 else "unknown",
    )


def encode_predictions(probabilities: np.ndarray, predict_fn: str) -> bytes:
    """{"predictions": ...} as the model's pyfunc predict returns it (see the module doc)."""
    if predict_fn == "predict_proba":
        predictions: Any = probabilities.tolist()
    else:
        predictions = np.argmax(probabilities, axis=1).tolist()
    return json.dumps({"predictions": predictions}).encode()
