"""make export-records: every prediction and label of the store, as Parquet or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iris_service.records.store import RecordStore, sqlite_url
from tests.unit.test_record_store import label, prediction
from tools import export_records

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    opened = RecordStore(sqlite_url(tmp_path / "records.db"))
    opened.migrate()
    opened.add_predictions([prediction(n) for n in range(12_000)])  # more than one batch
    opened.add_labels([label(f"k{n}") for n in range(7)])
    yield opened
    opened.close()


def test_parquet_holds_every_row_with_json_columns_as_text(
    store: RecordStore, tmp_path: Path
) -> None:
    counts = export_records.export(store, tmp_path / "out", "parquet")
    assert counts == {"predictions": 12_000, "labels": 7}
    predictions = pq.read_table(tmp_path / "out" / "predictions.parquet").to_pylist()
    assert len(predictions) == 12_000
    assert predictions[-1]["server_request_id"] == f"{11_999:032x}"
    assert json.loads(predictions[0]["outputs"])["class_name"] == "setosa"
    labels = pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist()
    assert [row["key"] for row in labels] == [f"k{n}" for n in range(7)]


def test_json_lines_keep_json_values(store: RecordStore, tmp_path: Path) -> None:
    export_records.export(store, tmp_path / "out", "jsonl")
    lines = (tmp_path / "out" / "labels.jsonl").read_text().splitlines()
    assert [json.loads(line)["features"] for line in lines] == [{"sepal_length": 5.1}] * 7
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 12_000
