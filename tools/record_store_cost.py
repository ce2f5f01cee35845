"""What a prediction record costs the service: CPU per row written by the record writer.

    python -m tools.record_store_cost [--rows 50000] [--store URL ...]

For each store (default: a scratch SQLite file), submits `--rows` records shaped like a
one-flower /predict answer through the real RecordWriter, in chunks the writer takes in
batches as it does under load, and prints the writer thread's CPU time per row (the cost
the API worker's process pays beside its answers) and the rows per second. The database
server's own CPU (PostgreSQL) is not in the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from iris_service.records.store import RecordStore, describe, sqlite_url
from iris_service.records.writer import RecordWriter

INPUTS = json.dumps(
    {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5}
).encode()
OUTPUTS = json.dumps(
    {
        "class_id": 1,
        "class_name": "versicolor",
        "probabilities": {"setosa": 0.01, "versicolor": 0.9, "virginica": 0.09},
        "model_tag": "iris-classifier:abcdefghijklmnop",
    }
).encode()


def _row(number: int) -> dict:
    return {
        "server_request_id": f"{number:032x}",
        "client_request_id": None,
        "api_key_id": None,
        "ts": time.time(),
        "endpoint": "/predict",
        "protocol": "service",
        "model_tag": "iris-classifier:abcdefghijklmnop",
        "latency_ms": 0.8,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def measure(url: str, rows: int, chunk: int = 100) -> dict[str, float]:
    """CPU seconds of the writer thread per row, and rows/s, for `rows` records."""
    store = RecordStore(url, max_predictions=rows + 1)  # retention deletes none of them
    store.migrate()
    writer = RecordWriter(store)
    writer.submit(_row(10**12))  # starts the thread
    writer.flush()
    thread_id = writer._thread.native_id if writer._thread else threading.get_native_id()
    clock = f"/proc/self/task/{thread_id}/stat"

    def thread_cpu_s() -> float:
        fields = Path(clock).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cpu_before, started = thread_cpu_s(), time.perf_counter()
    for first in range(0, rows, chunk):
        for number in range(first, min(first + chunk, rows)):
            writer.submit(_row(number))
        if first % (chunk * 50) == 0:
            writer.flush(timeout=60)
    writer.flush(timeout=60)
    elapsed, cpu = time.perf_counter() - started, thread_cpu_s() - cpu_before
    writer.close()
    store.close()
    return {"cpu_us_per_row": cpu / rows * 1e6, "rows_per_s": rows / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.record_store_cost")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--store", action="append", help="store URL (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        for url in args.store or [sqlite_url(Path(scratch) / "records.db")]:
            result = measure(url, args.rows)
            print(
                f"{describe(url)}: {result['cpu_us_per_row']:.1f} µs of writer CPU per record, "
                f"{result['rows_per_s']:,.0f} records/s ({args.rows:,} records)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
