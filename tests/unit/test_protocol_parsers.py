"""Property tests of the V2 and MLflow scoring parsers (seeded: `derandomize=True`, so every
run checks the same cases). Valid requests, in every shape the protocols allow, decode to
exactly the flowers sent; anything else, arbitrary bytes, other text encodings, deep
nesting, oversized CSV fields included, raises the codec's own error (V2Error,
ScoringError), which the routes answer with a 4xx in the protocol's shape: never another
exception, which would be a 500."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_service.names import FEATURE_NAMES, UPPER_BOUNDS_CM
from iris_service.protocols import mlflow_scoring, v2

SEEDED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
JSON_TYPE, CSV_TYPE = mlflow_scoring.JSON_TYPE, mlflow_scoring.CSV_TYPE
# Text encodings a client may use by mistake; only UTF-8 is JSON's (RFC 8259).
OTHER_ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig")


def _measurement(name: str) -> st.SearchStrategy[float]:
    return st.floats(min_value=0.01, max_value=UPPER_BOUNDS_CM[name], allow_nan=False)


flowers = st.lists(
    st.tuples(*(_measurement(name) for name in FEATURE_NAMES)), min_size=1, max_size=12
).map(lambda rows: np.array(rows, dtype=np.float64))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# --- Open Inference Protocol V2 --------------------------------------------------------------


def _v2_body(rows: np.ndarray, nested: bool, datatype: str, outputs: list[str] | None) -> bytes:
    data = rows.tolist() if nested else rows.ravel().tolist()
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": datatype, "data": data}
    request: dict = {"inputs": [tensor]}
    if outputs is not None:
        request["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(request).encode()


@SEEDED
@given(
    rows=flowers,
    nested=st.booleans(),
    datatype=st.sampled_from(["FP32", "FP64"]),
    outputs=st.none()
    | st.lists(st.sampled_from(v2.OUTPUT_NAMES), min_size=1, max_size=2, unique=True),
)
def test_valid_v2_requests_decode_to_the_flowers_sent(rows, nested, datatype, outputs) -> None:
    parsed = v2.parse_infer_request(_v2_body(rows, nested, datatype, outputs), None)
    expected = rows.astype(np.float32).astype(np.float64) if datatype == "FP32" else rows
    np.testing.assert_array_equal(parsed.rows, expected)
    assert [o.name for o in parsed.outputs] == (outputs or list(v2.OUTPUT_NAMES))


@SEEDED
@given(rows=flowers, datatype=st.sampled_from(["FP32", "FP64"]))
def test_valid_v2_binary_requests_decode_to_the_flowers_sent(rows, datatype) -> None:
    dtype = v2.INPUT_DATATYPES[datatype]
    blob = rows.astype(dtype).tobytes()
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    parsed = v2.parse_infer_request(header + blob, str(len(header)))
    np.testing.assert_array_equal(parsed.rows, rows.astype(dtype).astype(np.float64))


def _v2_outcome(body: bytes, header_length: str | None = None) -> v2.InferRequest | None:
    """The parse, or None when refused with V2Error (a 4xx); any other exception fails."""
    try:
        return v2.parse_infer_request(body, header_length)
    except v2.V2Error as refused:
        assert 400 <= refused.status < 500 and str(refused)
        return None


@SEEDED
@given(body=st.binary(max_size=300), header_length=st.none() | st.text(max_size=6))
def test_arbitrary_bytes_are_a_v2_error(body: bytes, header_length: str | None) -> None:
    _v2_outcome(body, header_length)


@SEEDED
@given(document=json_values)
def test_arbitrary_json_is_a_v2_error(document) -> None:
    _v2_outcome(json.dumps(document).encode())


@SEEDED
@given(
    rows=flowers,
    value=json_values,
    where=st.sampled_from(["inputs", "shape", "datatype", "data", "outputs", "id", "parameters"]),
)
def test_a_valid_v2_request_with_one_field_replaced_parses_or_is_a_v2_error(
    rows, value, where
) -> None:
    request = json.loads(_v2_body(rows, False, "FP64", None))
    if where in ("inputs", "outputs", "id", "parameters"):
        request[where] = value
    else:
        request["inputs"][0][where] = value
    parsed = _v2_outcome(json.dumps(request).encode())
    if parsed is not None:  # a field replaced with an equivalent value
        np.testing.assert_array_equal(parsed.rows, rows)


@SEEDED
@given(rows=flowers, encoding=st.sampled_from(OTHER_ENCODINGS))
def test_v2_bodies_in_other_encodings_are_refused(rows, encoding) -> None:
    body = _v2_body(rows, False, "FP64", None).decode().encode(encoding)
    assert _v2_outcome(body) is None


@pytest.mark.parametrize("depth", [999, 1_000, 5_000, 100_000])
def test_deeply_nested_v2_json_is_refused(depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"inputs":' + "[" * depth):
        assert _v2_outcome(body.encode()) is None


def test_a_latin1_v2_body_is_refused() -> None:
    body = json.dumps({"id": "café", "inputs": []}, ensure_ascii=False).encode("latin-1")
    with pytest.raises(v2.V2Error, match="not UTF-8"):
        v2.parse_infer_request(body, None)


# --- MLflow scoring (/invocations) -----------------------------------------------------------


def _columns(rows: np.ndarray) -> dict[str, list[float]]:
    return {name: rows[:, i].tolist() for i, name in enumerate(FEATURE_NAMES)}


def _mlflow_json(rows: np.ndarray, form: str, order: list[str]) -> bytes:
    columns = _columns(rows)
    records = [{name: columns[name][n] for name in order} for n in range(len(rows))]
    if form == "dataframe_split":
        payload: object = {"columns": order, "data": [[r[name] for name in order] for r in records]}
    elif form == "inputs_columns":
        form, payload = "inputs", {name: columns[name] for name in order}
    else:
        payload = records
    return json.dumps({form: payload}).encode()


def _mlflow_csv(rows: np.ndarray, order: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(order)
    for row in rows:
        values = dict(zip(FEATURE_NAMES, row.tolist(), strict=True))
        writer.writerow([repr(values[name]) for name in order])
    return out.getvalue().encode()


column_orders = st.permutations(list(FEATURE_NAMES))


@SEEDED
@given(
    rows=flowers,
    form=st.sampled_from(
        ["dataframe_split", "dataframe_records", "instances", "inputs", "inputs_columns"]
    ),
    order=column_orders,
)
def test_valid_mlflow_json_decodes_to_the_flowers_sent(rows, form, order) -> None:
    parsed = mlflow_scoring.parse_scoring_request(_mlflow_json(rows, form, order), JSON_TYPE)
    np.testing.assert_array_equal(parsed, rows)


@SEEDED
@given(rows=flowers, order=column_orders)
def test_valid_mlflow_csv_decodes_to_the_flowers_sent(rows, order) -> None:
    parsed = mlflow_scoring.parse_scoring_request(_mlflow_csv(rows, order), CSV_TYPE)
    np.testing.assert_array_equal(parsed, rows)


def _scoring_outcome(body: bytes, kind: str) -> np.ndarray | None:
    try:
        return mlflow_scoring.parse_scoring_request(body, kind)
    except mlflow_scoring.ScoringError as refused:
        assert 400 <= refused.status < 500 and str(refused)
        return None


@SEEDED
@given(body=st.binary(max_size=300), kind=st.sampled_from([JSON_TYPE, CSV_TYPE]))
def test_arbitrary_bytes_are_a_scoring_error(body: bytes, kind: str) -> None:
    _scoring_outcome(body, kind)


@SEEDED
@given(document=json_values)
def test_arbitrary_json_is_a_scoring_error(document) -> None:
    _scoring_outcome(json.dumps(document).encode(), JSON_TYPE)


@SEEDED
@given(text=st.text(alphabet=st.sampled_from(list('ab1.,"\n\r\x00 ;é')), max_size=200))
def test_arbitrary_csv_text_is_a_scoring_error(text: str) -> None:
    header = ",".join(FEATURE_NAMES) + "\n"
    _scoring_outcome((header + text).encode(), CSV_TYPE)


@SEEDED
@given(
    rows=flowers,
    form=st.sampled_from(["dataframe_split", "dataframe_records", "csv"]),
    encoding=st.sampled_from(OTHER_ENCODINGS),
)
def test_mlflow_bodies_in_other_encodings_are_refused(rows, form, encoding) -> None:
    order = list(FEATURE_NAMES)
    if form == "csv":
        body, kind = _mlflow_csv(rows, order), CSV_TYPE
    else:
        body, kind = _mlflow_json(rows, form, order), JSON_TYPE
    assert _scoring_outcome(body.decode().encode(encoding), kind) is None


@pytest.mark.parametrize("depth", [999, 1_000, 5_000, 100_000])
def test_deeply_nested_mlflow_json_is_refused(depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"instances":' + "[" * depth):
        assert _scoring_outcome(body.encode(), JSON_TYPE) is None


@pytest.mark.parametrize("size", [mlflow_scoring.MAX_CSV_FIELD_CHARS + 1, 131_073, 250_000])
def test_oversized_csv_fields_are_refused(size: int) -> None:
    header = ",".join(FEATURE_NAMES)
    for field in ("1" * size, '"' + "x" * size + '"'):
        body = f"{header}\n{field},3.5,1.4,0.2\n".encode()
        assert _scoring_outcome(body, CSV_TYPE) is None
    long_name = f"{'a' * size},{header}\n1,5.1,3.5,1.4,0.2\n".encode()
    assert _scoring_outcome(long_name, CSV_TYPE) is None


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/csv; charset=utf-8", None),
        ("application/json; charset=UTF-8", None),
        ('text/csv; charset="us-ascii"', None),
        ("text/csv; charset=latin-1", 415),
        ("application/json; charset=utf-16", 415),
    ],
)
def test_only_utf8_charsets_are_accepted(content_type: str, status: int | None) -> None:
    if status is None:
        assert mlflow_scoring.media_type(content_type) in (JSON_TYPE, CSV_TYPE)
        return
    with pytest.raises(mlflow_scoring.ScoringError) as refused:
        mlflow_scoring.media_type(content_type)
    assert refused.value.status == status


@pytest.mark.parametrize(
    "content",
    [
        b"- a list\n- not a mapping\n",
        b"flavors: [1, 2]\n",
        b"flavors:\n  python_function: 7\n",
        b"flavors: {python_function: {predict_fn: [x]}}\nmlflow_version: [3]\n",
        "mlflow_version: é".encode("latin-1"),
        b"[" * 20_000,
        b"key: [unclosed\n",
        b"",
    ],
)
def test_a_damaged_mlmodel_file_gives_the_defaults(tmp_path, content: bytes) -> None:
    """The MLmodel file /invocations and /version read is untrusted input too."""
    path = tmp_path / "MLmodel"
    path.write_bytes(content)
    assert mlflow_scoring.pyfunc_flavour(path) == ("predict", "unknown")
    good = b"flavors:\n  python_function: {predict_fn: predict_proba}\nmlflow_version: 3.17.2\n"
    path.write_bytes(good)
    assert mlflow_scoring.pyfunc_flavour(path) == ("predict_proba", "3.17.2")
