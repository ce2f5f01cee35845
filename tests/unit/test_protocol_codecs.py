"""The V2 and MLflow scoring codecs: what they accept, what they refuse, what they answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iris_service.names import FEATURE_NAMES
from iris_service.protocols import mlflow_scoring, v2
from iris_service.settings import settings

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]])


def _request(data: object, shape: object = (2, 4), datatype: str = "FP64", **extra: object):
    tensor = {"name": "input-0", "shape": list(shape), "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def _binary(rows: np.ndarray, dtype: str = "<f8", size: int | None = None, **extra: object):
    blob = rows.astype(dtype).tobytes()
    datatype = "FP64" if dtype == "<f8" else "FP32"
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(blob) if size is None else size},
    }
    header = json.dumps({"inputs": [tensor], **extra}).encode()
    return header + blob, str(len(header))


@pytest.mark.parametrize("data", [ROWS.ravel().tolist(), ROWS.tolist()], ids=["flat", "nested"])
def test_json_tensors_flat_or_nested(data: list) -> None:
    parsed = v2.parse_infer_request(_request(data, id="abc"), None)
    np.testing.assert_array_equal(parsed.rows, ROWS)
    assert parsed.id == "abc"
    assert [o.name for o in parsed.outputs] == ["predict", "predict_proba"]
    assert not any(o.binary for o in parsed.outputs)


@pytest.mark.parametrize("dtype", ["<f8", "<f4"])
def test_binary_tensors(dtype: str) -> None:
    body, length = _binary(ROWS, dtype, parameters={"binary_data_output": True})
    parsed = v2.parse_infer_request(body, length)
    np.testing.assert_allclose(parsed.rows, ROWS, rtol=1e-6)
    assert all(o.binary for o in parsed.outputs)


@pytest.mark.parametrize(
    ("body", "length", "fragment"),
    [
        (_request(ROWS.ravel().tolist(), shape=(2, 3)), None, "shape must be [N, 4]"),
        (_request(ROWS.ravel().tolist(), shape=(2,)), None, "shape must be [N, 4]"),
        (_request(ROWS.ravel().tolist(), datatype="INT64"), None, "datatype"),
        (_request(ROWS.ravel().tolist()[:7]), None, "needs 8"),
        (_request([[5.1, 3.5, 1.4], [6.3, 3.3, 6.0, 2.5]]), None, "does not hold 2 rows"),
        (_request(["5.1", 3.5, 1.4, 0.2] * 2), None, "numbers only"),
        (_request([True, 3.5, 1.4, 0.2] * 2), None, "numbers only"),
        (_request([10**400, 3.5, 1.4, 0.2] * 2), None, "too large"),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
            b'"data": [NaN, 1, 1, 1]}]}',
            None,
            "NaN",
        ),
        (_request([-1.0, 3.5, 1.4, 0.2] * 2), None, "sepal_length must be"),
        (_request([1.0], shape=(10**12, 4)), None, f"between 1 and {settings.max_batch_flowers}"),
        (_request([1.0], shape=(0, 4)), None, f"between 1 and {settings.max_batch_flowers}"),
        (_request(ROWS.ravel().tolist(), outputs=[{"name": "x"}]), None, "unknown output"),
        (
            _request(ROWS.ravel().tolist(), outputs=[{"name": "predict"}] * 10_000),
            None,
            "'predict' is requested more than once",
        ),
        (b"[1, 2]", None, "JSON object"),
        (b"{not json", None, "not valid JSON"),
        (_binary(ROWS, size=31)[0], _binary(ROWS)[1], "binary_data_size must be 64"),
        (_binary(ROWS)[0][:-1], _binary(ROWS)[1], "has 63 bytes"),
        (_binary(ROWS)[0], "999999", "Inference-Header-Content-Length is 999999"),
        (_binary(ROWS)[0], "x", "must be an integer"),
        (_binary(np.array([[np.nan, 1, 1, 1]]))[0], _binary(np.array([[0, 1, 1, 1]]))[1], "nan"),
    ],
)
def test_malformed_tensors_are_refused_with_a_reason(
    body: bytes, length: str | None, fragment: str
) -> None:
    with pytest.raises(v2.V2Error) as refused:
        v2.parse_infer_request(body, length)
    assert refused.value.status == 400
    assert fragment in str(refused.value)


def test_answers_json_and_binary_outputs() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]])
    request = v2.parse_infer_request(_request(ROWS.tolist(), id="r"), None)
    body, length = v2.encode_infer_response(request, "iris-classifier", "v1", probabilities)
    answer = json.loads(body)
    assert length is None
    assert answer["model_name"] == "iris-classifier" and answer["model_version"] == "v1"
    assert answer["id"] == "r"
    by_name = {o["name"]: o for o in answer["outputs"]}
    assert by_name["predict"] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [2],
        "data": [0, 2],
    }
    assert by_name["predict_proba"]["data"] == probabilities.ravel().tolist()

    outputs = [{"name": "predict_proba", "parameters": {"binary_data": True}}]
    request = v2.parse_infer_request(_request(ROWS.tolist(), outputs=outputs), None)
    body, length = v2.encode_infer_response(request, "iris-classifier", "v1", probabilities)
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f8").reshape(2, 3), probabilities)


RECORDS = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in ROWS.tolist()]
SHUFFLED = [FEATURE_NAMES[3], FEATURE_NAMES[0], FEATURE_NAMES[1], FEATURE_NAMES[2]]


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": ROWS.tolist()}},
        {
            "dataframe_split": {
                "columns": SHUFFLED,
                "index": [4, 5],
                "data": ROWS[:, [3, 0, 1, 2]].tolist(),
            }
        },
        {"dataframe_records": RECORDS},
        {"dataframe_records": [{**r, "extra": 1} for r in RECORDS]},
        {"instances": RECORDS},
        {"inputs": RECORDS, "params": {}},
        {"inputs": {name: ROWS[:, i].tolist() for i, name in enumerate(FEATURE_NAMES)}},
    ],
)
def test_mlflow_json_formats(payload: dict) -> None:
    rows = mlflow_scoring.parse_scoring_request(json.dumps(payload).encode(), "application/json")
    np.testing.assert_array_equal(rows, ROWS)


def test_mlflow_csv_with_a_header_in_any_column_order() -> None:
    csv = (
        ",".join(SHUFFLED)
        + "\r\n"
        + "\n".join(",".join(str(v) for v in row) for row in ROWS[:, [3, 0, 1, 2]].tolist())
    )
    rows = mlflow_scoring.parse_scoring_request(csv.encode(), "text/csv")
    np.testing.assert_array_equal(rows, ROWS)


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (
            b'{"dataframe_split": {"data": [[5.1, 3.5, 1.4, 0.2]]}}',
            "application/json",
            "named columns",
        ),
        (b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', "application/json", "named columns"),
        (b'{"foo": 1}', "application/json", "exactly one of"),
        (b'{"inputs": [], "instances": []}', "application/json", "exactly one of"),
        (b'{"dataframe_records": []}', "application/json", "no rows"),
        (
            json.dumps({"dataframe_records": [{**RECORDS[0], "petal_width": None}]}).encode(),
            "application/json",
            "JSON number",
        ),
        (
            json.dumps({"dataframe_records": [{**RECORDS[0], "petal_width": "0.2"}]}).encode(),
            "application/json",
            "JSON number",
        ),
        (
            json.dumps(
                {"dataframe_records": [RECORDS[0]] * (settings.max_batch_flowers + 1)}
            ).encode(),
            "application/json",
            "between 1 and",
        ),
        (b'{"dataframe_records": [{"sepal_length": NaN}]}', "application/json", "NaN"),
        (b"5.1,3.5,1.4,0.2\n", "text/csv", "no rows"),
        (
            b"sepal_length,sepal_width,petal_length,petal_width\n5.1,x,1.4,0.2\n",
            "text/csv",
            "not a number",
        ),
        (
            b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,-1\n",
            "text/csv",
            "petal_width must be",
        ),
    ],
)
def test_mlflow_refusals(body: bytes, kind: str, fragment: str) -> None:
    with pytest.raises(mlflow_scoring.ScoringError) as refused:
        mlflow_scoring.parse_scoring_request(body, kind)
    assert refused.value.status == 400
    assert fragment in str(refused.value)


def test_mlflow_content_types() -> None:
    assert mlflow_scoring.media_type("application/json; charset=utf-8") == "application/json"
    assert mlflow_scoring.media_type("text/csv") == "text/csv"
    for refused in (None, "text/plain", "application/json; format=pandas-split"):
        with pytest.raises(mlflow_scoring.ScoringError) as error:
            mlflow_scoring.media_type(refused)
        assert error.value.status == 415


def test_mlflow_predictions_follow_the_pyfunc_predict_function() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]])
    as_proba = json.loads(mlflow_scoring.encode_predictions(probabilities, "predict_proba"))
    assert as_proba == {"predictions": probabilities.tolist()}
    as_ids = json.loads(mlflow_scoring.encode_predictions(probabilities, "predict"))
    assert as_ids == {"predictions": [0, 2]}
