"""`make export-records`: a snapshot of the prediction store for other tools.

    python -m tools.export_records --out reports/records [--format parquet|jsonl]
                                   [--store URL]

Writes `predictions.<ext>` and `labels.<ext>` (every row, oldest first, read in batches so
that memory stays flat) from the store the service uses (IRIS_RECORD_STORE_URL, else the
SQLite file under BENTOML_HOME), and prints the row counts. JSON columns (inputs, outputs,
features) stay JSON text in Parquet, and JSON values in JSON lines.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from iris_service.records.store import RecordStore, describe
from iris_service.settings import settings

BATCH = 5_000
JSON_COLUMNS = ("inputs", "outputs", "features")


def _batches(rows: Iterable[dict]) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_jsonl(rows: Iterable[dict], path: Path) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_parquet(rows: Iterable[dict], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    count, writer = 0, None
    try:
        for batch in _batches(rows):
            for row in batch:
                for name in JSON_COLUMNS:
                    if name in row and row[name] is not None:
                        row[name] = json.dumps(row[name], ensure_ascii=False)
            table = pa.Table.from_pylist(batch)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
            count += len(batch)
    finally:
        if writer is not None:
            writer.close()
    return count


def export(store: RecordStore, out_dir: Path, fmt: str) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    write = _write_parquet if fmt == "parquet" else _write_jsonl
    return {
        name: write(rows, out_dir / f"{name}.{fmt}")
        for name, rows in (
            ("predictions", store.iter_predictions(BATCH)),
            ("labels", store.iter_labels(BATCH)),
        )
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.export_records")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--store", default=settings.record_store_url, help="the store's URL")
    args = parser.parse_args(argv)
    if args.store is None:
        parser.error("records are off (IRIS_RECORD_STORE_URL=off): nothing to export")
    store = RecordStore(args.store)
    try:
        store.migrate()
        counts = export(store, args.out, args.format)
    finally:
        store.close()
    for name, count in counts.items():
        print(f"{count} {name} from {describe(args.store)} -> {args.out / f'{name}.{args.format}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
