"""Files of the batch job: which input files and format, the digest of a set of files, and an
output folder that appears whole or not at all.

The job writes into a hidden sibling of OUTPUT and renames it into place at the very end, so
a failed or interrupted job leaves no partial output where a reader would take it for a result.
Paths are file-system paths the driver and every executor can reach (on this machine, any;
on a cluster, a shared mount).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FORMATS = {".csv": "csv", ".parquet": "parquet"}


class ScoringError(RuntimeError):
    """A job that cannot run, said in one line with what to do about it."""


@dataclass(frozen=True)
class InputFiles:
    path: Path
    format: str  # "csv" or "parquet"
    files: tuple[Path, ...]  # sorted: the order that defines a row's position

    def digest(self) -> str:
        return files_digest(self.files)


def _data_files(folder: Path) -> list[Path]:
    """Data files of a folder (Spark's own _SUCCESS, .crc and hidden files left out)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(("_", ".")) and path.suffix in FORMATS
    )


def find_input(path: Path) -> InputFiles:
    """The CSV or Parquet file, or the folder of them, at `path`."""
    if not path.exists():
        raise ScoringError(f"input {path} does not exist")
    if path.is_file():
        if path.suffix not in FORMATS:
            raise ScoringError(f"input {path}: only .csv and .parquet files are read")
        return InputFiles(path, FORMATS[path.suffix], (path,))
    files = _data_files(path)
    if not files:
        raise ScoringError(f"input folder {path} holds no .csv or .parquet file")
    formats = {FORMATS[file.suffix] for file in files}
    if len(formats) > 1:
        raise ScoringError(f"input folder {path} mixes CSV and Parquet files")
    return InputFiles(path, formats.pop(), tuple(files))


def csv_header(files: tuple[Path, ...]) -> list[str]:
    """The column names of the CSV files (the same in each, else the job refuses them).

    Read here rather than by Spark, which would spend a job on the header alone."""
    headers = set()
    for file in files:
        with file.open(newline="") as handle:
            headers.add(tuple(next(csv.reader(handle), [])))
    if len(headers) != 1:
        raise ScoringError(f"the CSV files have different headers: {sorted(headers)}")
    header = list(headers.pop())
    if not header:
        raise ScoringError(f"{files[0]} is empty: a CSV needs a header line")
    return header


def parquet_rows(folder: Path) -> int:
    """Rows in a written Parquet folder, from the files' footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(file).metadata.num_rows for file in sorted(folder.glob("*.parquet")))


def files_digest(files: tuple[Path, ...] | list[Path]) -> str:
    """SHA-256 over the files' names (relative order) and bytes: the data's fingerprint."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def check_output_free(output: Path) -> None:
    """OUTPUT must not exist yet (an empty folder is accepted): nothing is overwritten."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ScoringError(f"output {output} already exists; choose a new folder or remove it")


@contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A hidden folder beside `output` to write into; renamed to `output` when the block
    ends without error, removed otherwise."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if output.exists():
        output.rmdir()  # check_output_free allowed only an empty folder
    stage.rename(output)
